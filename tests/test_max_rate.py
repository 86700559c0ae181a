"""The maximum-sustainable-rate search."""

from __future__ import annotations

from harness.kafka_cluster import free_port
from harness.max_rate import find_max_rate


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
    assert [s["rate"] for s in steps[:2]] == [20.0, 40.0]  # doubling while sustained
    sustained = [s["rate"] for s in steps if s["sustainable"]]
    assert result["max_sustainable_rate"] == max(sustained)
    for step in steps:
        if step["sustainable"]:
            assert step["received"] == step["sent"] and step["late_fraction"] <= 0.01
    assert result["headroom_over_lsst"] == result["max_sustainable_rate"] / (10_000 / 39)
