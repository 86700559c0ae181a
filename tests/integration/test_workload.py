"""Workload files and the paced runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from alertbench.harness.workload import WORKLOADS_DIR, Workload, run_workload
from alertbench.transports.servers.kafka_cluster import free_port

from alertbench.errors import AlertbenchError


@pytest.mark.parametrize("path", sorted(WORKLOADS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_workload_loads(path: Path) -> None:
    workload = Workload.load(path)
    assert workload.name == path.stem
    assert workload.visits >= 1 and workload.subscribers >= 1


def test_the_design_night_is_lsst_sized() -> None:
    night = Workload.load("lsst-design-night")
    assert night.visits * night.alerts_per_visit == pytest.approx(9.2e6)
    assert night.cadence_s == 39.0 and night.ccds == 189 and night.subscribers >= 5
    assert Workload.load("peak-visit").alerts_per_visit == 40_000


def test_schedule_follows_cadence_bursts_and_compression() -> None:
    w = Workload(
        name="t",
        visits=3,
        alerts_per_visit=500,
        cadence_s=39.0,
        burst_window_s=3.0,
        time_compression=4.0,
    )
    schedule = w.schedule()
    assert len(schedule) == 1500
    offsets = [o for _, o in schedule]
    assert offsets == sorted(offsets)
    for v in range(3):
        mine = [o for visit, o in schedule if visit == v]
        start = v * 39.0 / 4.0
        assert start <= min(mine) and max(mine) <= start + 3.0 / 4.0  # bursts inside the window


def test_unknown_fields_and_names_are_refused(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvisits: 1\nalerts_per_visit: 10\nrate: 5\n")
    with pytest.raises(AlertbenchError, match=r"unknown workload fields \['rate'\]"):
        Workload.load(bad)
    with pytest.raises(AlertbenchError, match="no workload 'nope'"):
        Workload.load("nope")


def test_a_paced_run_delivers_every_alert_to_every_subscriber() -> None:
    w = Workload(
        name="tiny",
        visits=2,
        alerts_per_visit=60,
        cadence_s=2.0,
        burst_window_s=0.5,
        subscribers=3,
        alert_pool=10,
    )
    row = run_workload(w, f"tcp://127.0.0.1:{free_port()}", "avro")
    assert row["roles"] == "processes"
    subscribers = row["processes"]["subscribers"]
    assert len(subscribers) == 3 and all(p["cpu_seconds"] > 0 for p in subscribers)
    assert all(p["peak_rss_mb"] > 50 for p in [*subscribers, row["processes"]["publisher"]])
    assert row["alerts_sent"] == 120
    assert row["alerts_received_per_subscriber"] == [120, 120, 120]
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["decode_errors"] == 0
    assert row["within_60s_fraction"] == 1.0
    assert 0 < row["latency_us"]["p50"] <= row["latency_us"]["max"]


def test_a_shared_stream_is_split_between_subscriber_processes() -> None:
    w = Workload(
        name="tiny-pushpull", visits=1, alerts_per_visit=80, cadence_s=2.0,
        burst_window_s=0.5, subscribers=2, alert_pool=10,
    )  # fmt: skip
    url = f"zmq+tcp://127.0.0.1:{free_port()}?pattern=pushpull"
    row = run_workload(w, url, "avro", idle_timeout=5.0)
    assert sum(row["alerts_received_per_subscriber"]) == 80
    assert row["lost"] == 0 and row["duplicates"] == 0


def test_the_alert_size_mix_drops_cutouts_from_the_chosen_share() -> None:
    w = Workload(name="mix", visits=1, alerts_per_visit=10, alert_pool=40, cutout_fraction=0.25)
    pool = w.pool()
    with_cutouts = [a for a in pool if a["cutoutScience"] is not None]
    assert 0 < len(with_cutouts) < 20  # ~25% of 40
    assert all(a["cutoutDifference"] is None for a in pool if a["cutoutScience"] is None)
    assert Workload(name="all", visits=1, alerts_per_visit=10, alert_pool=5).pool()[0][
        "cutoutTemplate"
    ]


def test_a_workload_over_a_kind_with_subscriber_threads() -> None:
    w = Workload(name="tiny-threads", visits=1, alerts_per_visit=50, cadence_s=1.0,
                 burst_window_s=0.3, subscribers=2, alert_pool=10)  # fmt: skip
    row = run_workload(w, "zmq-pubsub", "protobuf", roles="threads")
    assert row["roles"] == "threads" and row["subscriber_role"] == "thread"
    assert row["transport_url"].startswith("zmq+tcp://127.0.0.1:")  # its own local stream
    assert row["alerts_received_per_subscriber"] == [50, 50] and row["lost"] == 0
    assert row["workload"]["name"] == "tiny-threads" and row["schedule"]["kind"] == "paced"
    with pytest.raises(AlertbenchError, match="roles"):
        run_workload(w, "zmq-pubsub", "protobuf", roles="fibers")
