"""The harness itself: latency from recorded timestamps, ranking rules, reports from JSON."""

from __future__ import annotations

import json
import time

import pytest
from alertbench.harness import matrix
from alertbench.harness.engine import RunSpec, Schedule, run
from alertbench.harness.environment import environment
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.base import SERIALIZERS


class SlowAvro(AvroSerializer):
    """Avro whose decode takes 20 ms more: a consumer that cannot keep up."""

    def loads(self, data: bytes) -> dict:
        time.sleep(0.02)
        return super().loads(data)


def test_latency_is_measured_from_the_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    # A consumer that takes 20 ms per alert: the harness must see it in the latency.
    monkeypatch.setitem(SERIALIZERS, "slow-avro", f"{__name__}:SlowAvro")

    def burst(serializer: str) -> dict:
        spec = RunSpec("tcp", serializer, Schedule.burst(30), subscriber_role="thread",
                       pool_size=10)  # fmt: skip
        return run(spec).row()

    fast, slow = burst("avro"), burst("slow-avro")
    assert fast["alerts_received"] == slow["alerts_received"] == 30
    assert fast["latency_us"]["p50"] < 20_000
    assert slow["latency_us"]["p50"] >= 20_000  # the injected delay is there
    # queued behind 29 slow decodes: the last alert waited ~0.6 s from its intended send time
    assert slow["latency_us"]["max"] >= 30 * 20_000 * 0.9


def _row(transport: str, serializer: str, rate: float, lost: int = 0) -> dict:
    return {
        "transport": transport,
        "serializer": serializer,
        "alerts_per_second": rate,
        "headroom": rate / (10_000 / 39),
        "lost": lost,
        "decode_errors": 0,
        "visit_seconds_at_lsst_size": 10_000 / rate,
        "bytes_per_alert": 130_000.0,
        "cores_per_stream_at_lsst_rate": 0.5,
        "mbit_per_stream_at_lsst_rate": 266.0,
        "megabytes_per_second": rate * 0.13,
        "alerts_sent": 1000,
        "alerts_received": 1000 - lost,
        "latency_us": {"p50": 1000.0, "p90": 2000.0, "p99": 3000.0, "p99.9": 4000.0, "max": 5000.0},
        "latency_cdf_us": [[1, 200.0], [50, 1000.0], [99, 3000.0], [100, 5000.0]],
        "capabilities": {
            "replay": transport == "kafka",
            "durable": False,
            "fanout": True,
            "backpressure": True,
            "acknowledgement": "none",
        },
    }


def test_ranking_puts_requirements_first_then_headroom() -> None:
    rows = [
        _row("tcp", "avro", 900.0, lost=3),  # fastest but loses alerts
        _row("kafka", "avro", 400.0),
        _row("grpc", "avro", 600.0),
        _row("kafka", "voevent", 100.0),  # a visit would take 100 s
    ]
    ranked = matrix.rank(rows)
    assert [(r["transport"], r["serializer"]) for r in ranked] == [
        ("grpc", "avro"),
        ("kafka", "avro"),
        ("tcp", "avro"),
        ("kafka", "voevent"),
    ]
    assert ranked[2]["fails_because"] == ["lost 3 alerts"]
    assert "100 s (> 60 s)" in ranked[3]["fails_because"][0]
    words = " ".join(matrix.explain(ranked))
    assert "grpc x avro, 600 alerts/s" in words and "replay what it missed: kafka" in words


def test_a_results_json_regenerates_the_same_report(tmp_path) -> None:
    rows = [_row("kafka", "avro", 400.0), _row("tcp", "voevent", 50.0)]
    first = matrix.write_results(rows, environment(), tmp_path, 1000).read_bytes()
    again = matrix.write_report(tmp_path).read_bytes()
    assert first == again
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["kind"] == "matrix" and data["schema_version"] == 1
    assert data["environment"]["cpus"] and data["git_commit"]
    for png in ("throughput-latency.png", "latency-cdf.png", "sizes.png"):
        assert (tmp_path / png).stat().st_size > 10_000
        assert f"]({png})" in first.decode()


def test_the_published_voevent3_evidence_is_generated_from_the_published_json() -> None:
    from pathlib import Path

    from alertbench.harness.report import evidence

    results = Path(__file__).resolve().parents[2] / "results"
    assert evidence.render(results) == (results / "voevent3-evidence.md").read_text()


def test_with_a_max_rate_search_the_ranking_uses_the_sustainable_rate(tmp_path) -> None:
    from alertbench.harness.matrix import LSST_RATE, run_matrix, write_results

    rows = run_matrix(["tcp"], ["avro"], 200, pool_size=20, max_rate_seconds=1.0)
    (row,) = rows
    steps = row["max_rate_steps"]
    assert any(s["sustainable"] for s in steps)
    assert row["max_sustainable_rate"] == max(s["rate"] for s in steps if s["sustainable"])
    assert row["headroom"] == row["max_sustainable_rate"] / LSST_RATE
    assert row["burst_headroom"] == row["alerts_per_second"] / LSST_RATE
    report = write_results(rows, environment(), tmp_path, 200).read_text()
    assert "max sustainable/s" in report and "maximum sustainable rate" in report
    assert f"sustains {row['max_sustainable_rate']:,.0f} alerts/s" in report


READ_BY_THE_REPORT = {
    "transport", "serializer", "alerts_per_second", "headroom", "megabytes_per_second",
    "bytes_per_alert", "latency_us", "latency_cdf_us", "lost", "decode_errors",
    "cores_per_stream_at_lsst_rate", "mbit_per_stream_at_lsst_rate", "visit_seconds_at_lsst_size",
    "capabilities", "subscriber_peak_rss_mb",
}  # fmt: skip


@pytest.mark.parametrize("processes", [True, False], ids=["process", "thread"])
def test_each_combination_is_an_engine_burst_on_the_transport_s_own_stream(
    processes: bool, tmp_path
) -> None:
    rows = matrix.run_matrix(
        ["tcp", "zmq-pushpull", "vtp"], ["avro"], 100, pool_size=10,
        subscriber_processes=processes,
    )  # fmt: skip
    # VTP carries VOEvent only: its capabilities, not a list in the matrix, leave it out
    assert [(r["transport"], r["serializer"]) for r in rows] == [
        ("tcp", "avro"),
        ("zmq-pushpull", "avro"),
    ]
    for row in rows:
        assert set(row) >= READ_BY_THE_REPORT
        assert row["alerts_received"] == 100 and row["lost"] == 0 and row["decode_errors"] == 0
        assert row["payload"] == "codec" and row["schedule"]["kind"] == "burst"
        assert row["subscriber_role"] == ("process" if processes else "thread")
        assert (row["subscriber_peak_rss_mb"] or 0) > (50 if processes else -1)
        assert row["headroom"] == row["alerts_per_second"] / matrix.LSST_RATE
        assert 0 < row["latency_us"]["p50"] <= row["latency_us"]["p99"] <= row["latency_us"]["max"]
    report = matrix.write_results(rows, environment(), tmp_path, 100).read_text()
    assert "| tcp | avro |" in report and "| zmq-pushpull | avro |" in report
    assert ("in a process of its own" in report) == processes


def test_the_matrix_offers_every_registered_transport_that_crosses_processes() -> None:
    from alertbench.transports.base import kinds

    offered = matrix.transport_kinds()
    assert offered == kinds(interprocess=True)
    assert {"tcp", "zmq-pubsub", "zmq-pushpull", "grpc", "kafka", "vtp"} <= set(offered)
    assert "memory" not in offered  # its subscribers cannot live in another process
