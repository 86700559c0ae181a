"""The xml-compression benchmark end to end on real Kafka, tiny: its results' shape, not timings."""

from __future__ import annotations

import json

import pytest
from alertbench.harness.report.render import write_report
from alertbench.harness.report.results import RESULTS_FILE, infer_kind, write_results
from alertbench.harness.xml_compression import CODECS, KAFKA_COMPRESSIONS, run_xml_compression

pytestmark = pytest.mark.kafka

ALERTS = 5


def test_the_benchmark_measures_every_configuration_through_kafka(kafka_cluster, tmp_path):
    payload = run_xml_compression(
        ALERTS, repeats=1, levels=(3,), cluster=kafka_cluster, announce=lambda _: None
    )
    labels = [label for label, _, _ in CODECS]

    messages = payload["per_message"]
    assert [(r["codec"], r["per_message"]) for r in messages] == [
        (label, variant) for label in labels for variant in ("none", "zstd-3")
    ]
    for r in messages:
        assert r["bytes_per_alert"] > 0
        assert len(r["encode_us"]["values"]) == len(r["decode_us"]["values"]) == 1
        if r["per_message"] == "zstd-3":
            assert r["bytes_vs_raw"] < 1.0, r["codec"]
    xml = next(r for r in messages if r["codec"] == "voevent (embed)" and r["level"] == 3)
    assert xml["content_type"] == "application/x-voevent+xml+zstd"

    rows = payload["kafka"]
    expected = [
        (label, variant, compression)
        for label in labels
        for variant, compression in [*(("none", c) for c in KAFKA_COMPRESSIONS), ("zstd-3", "none")]
    ]
    assert [(r["codec"], r["per_message"], r["compression_type"]) for r in rows] == expected
    for r in rows:
        where = (r["codec"], r["per_message"], r["compression_type"])
        assert r["received_min"] == ALERTS and r["unacknowledged_max"] == 0, where
        for key in ("stored", "producer_wire", "consumer_wire"):
            # measured: a record holds its payload, or (compressed) a good part of it
            assert r[f"{key}_bytes_per_alert"]["median"] > 0.02 * r["payload_bytes_per_alert"], (
                where,
                key,
            )
        assert r["producer_cpu_us_per_alert"]["median"] > 0
        assert r["broker_produce_cpu_us_per_alert"] is not None
        assert r["sender_cpu_us_per_alert"] is not None
        assert r["receiver_cpu_us_per_alert"] is not None
    by = {(r["codec"], r["per_message"], r["compression_type"]): r for r in rows}
    embed = {c: by[("voevent (embed)", "none", c)]["stored_bytes_per_alert"]["median"] for c in
             KAFKA_COMPRESSIONS}  # fmt: skip
    assert embed["zstd"] < embed["none"] and embed["lz4"] < embed["none"]
    assert by[("avro", "none", "zstd")]["bytes_vs_avro_same_compression"] == pytest.approx(1.0)
    assert by[("avro", "none", "none")]["bytes_vs_avro_uncompressed"] == pytest.approx(1.0)
    assert by[("avro", "zstd-3", "none")]["bytes_vs_avro_same_compression"] is None
    assert payload["environment"]["versions"]["zstandard"]

    path = write_results(tmp_path, "xml-compression", payload)
    doc = json.loads(path.read_text())
    assert infer_kind({k: v for k, v in doc.items() if k != "kind"}) == "xml-compression"
    report = write_report(tmp_path).read_text()
    assert "## Through Kafka" in report and "voevent (compact)" in report
    assert (tmp_path / "xml-compression.png").stat().st_size > 0
    assert (tmp_path / RESULTS_FILE).is_file()
