"""The suites built on the engine: kafka-visit and the VTP cost bench (without Comet here; the
Comet interop is tests/integration/test_vtp_interop.py)."""

from __future__ import annotations

import pytest
from alertbench.harness import vtp_bench
from alertbench.harness.kafka_visit import kafka_visits
from alertbench.transports.framing import ENVELOPE_HEADER, LENGTH


@pytest.mark.kafka
def test_kafka_visit_is_one_engine_burst_per_codec(kafka_cluster) -> None:
    results = list(
        kafka_visits(
            ["none", "zstd"], n_alerts=200, pool_size=10,
            bootstrap_servers=kafka_cluster.bootstrap_servers,
        )
    )  # fmt: skip
    assert [r.options["compression"] for r in results] == ["none", "zstd"]
    for result in results:
        assert result.alerts_received == result.alerts_sent == 200 and result.lost == 0
        assert result.payload == "pre-encoded" and result.serializer == "avro"
        assert result.subscriber_role == "process"
        assert result.alerts_per_second > 0 and result.latency_us["p50"] > 0
    assert results[0].payload_bytes == results[1].payload_bytes  # the same alerts both times


def test_the_vtp_bench_sends_the_same_packets_through_every_transport() -> None:
    rows = vtp_bench.run(40, comet_venv=None, with_kafka=False)
    assert [r["name"] for r in rows] == ["tcp (baseline)", "vtp: alertbench broker"]
    tcp, vtp = rows
    assert tcp["payload_bytes"] == vtp["payload_bytes"] == sum(map(len, vtp_bench.packets(40)))
    for row in rows:
        assert row["alerts_received"] == 40 and row["lost"] == 0 and row["unexpected"] == 0
        assert row["serializer"] == "voevent" and row["payload"] == "pre-encoded"
    header = LENGTH.size + ENVELOPE_HEADER.size + len("application/x-voevent+xml")
    assert tcp["wire_bytes_per_alert"] == tcp["bytes_per_alert"] + header
    # VTP: two hops (author to broker, broker to subscriber), each event with its ack
    assert vtp["wire_bytes_per_alert"] > 2 * vtp["bytes_per_alert"]
