"""The maximum-sustainable-rate search."""

from __future__ import annotations

from alertbench.harness.max_rate import find_max_rate
from alertbench.transports.servers.kafka_cluster import free_port


def test_search_doubles_then_bisects_and_reports_the_last_sustained_rate() -> None:
    result = find_max_rate(
        lambda: f"tcp://127.0.0.1:{free_port()}",
        "avro",
        start=20.0,
        seconds=1.0,
        max_steps=4,
        pool_size=10,
    )
    steps = result["steps"]
    assert steps[0]["rate"] == 20.0
    failed = False
    for i in range(1, len(steps)):
        failed = failed or not steps[i - 1]["sustainable"]
        if not failed:
            assert steps[i]["rate"] == 2 * steps[i - 1]["rate"]  # doubling while rates held
        else:
            assert steps[i]["rate"] < max(s["rate"] for s in steps[:i])  # bisecting below
    sustained = [s["rate"] for s in steps if s["sustainable"]]
    assert result["max_sustainable_rate"] == (max(sustained) if sustained else 0.0)
    for step in steps:
        if step["sustainable"]:
            assert step["received"] == step["sent"] and step["late_fraction"] <= 0.01
    assert result["headroom_over_lsst"] == result["max_sustainable_rate"] / (10_000 / 39)


def test_a_kind_gets_a_fresh_local_stream_per_step_and_each_step_is_an_engine_run() -> None:
    result = find_max_rate(
        "zmq-pushpull", "protobuf", start=40.0, seconds=1.0, max_steps=2, pool_size=10,
        subscriber_role="thread",
    )  # fmt: skip
    assert result["subscriber_role"] == "thread" and not result["subscriber_process"]
    assert [s["rate"] for s in result["steps"]] == [40.0, 80.0]  # 40 and 80/s hold easily
    for step in result["steps"]:
        assert step["sustainable"] and step["sent"] == step["received"] == step["rate"]
        assert step["lost"] == step["decode_errors"] == step["duplicates"] == 0
        assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    assert result["max_sustainable_rate"] == 80.0
