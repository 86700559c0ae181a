"""``alertbench play``'s schedule, its per-cycle ids and its loop, without a server.

The schedule of a cycle and the id offsets are pure functions; the loop runs over the in-process
memory:// transport (the reference transport, real, not a mock), so what is checked is what the
publisher is handed: shutter-close times fixed by the cadence, per-CCD order, distinct ids per
cycle, and a stop that ends the loop between two alerts. The same loop over real Kafka is in
tests/integration/test_play_lag.py.
"""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest
from alertbench.harness.lag import LagSample, PartitionLag, trend, verdict
from alertbench.harness.play import (
    MAX_LONG,
    Burst,
    CycleReport,
    IdPatcher,
    cycle_id_offset,
    cycle_schedule,
    encode_long,
    encode_visit,
    id_stride,
    intended_offset_ns,
    play,
    send_seconds,
    shutter_close_ns,
    split_evenly,
)
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Start, get_transport

from alertbench.errors import ConfigError

# --------------------------------------------------------------------------- the schedule


def test_a_visit_is_split_evenly_over_the_ccds_larger_groups_first() -> None:
    assert split_evenly(10, 4) == (3, 3, 2, 2)
    assert split_evenly(3, 5) == (1, 1, 1, 0, 0)
    counts = split_evenly(10_000, 189)
    assert sum(counts) == 10_000 and max(counts) - min(counts) <= 1
    with pytest.raises(ConfigError):
        split_evenly(10, 0)


def test_a_cycle_is_one_burst_per_ccd_with_alerts_back_to_back() -> None:
    bursts = cycle_schedule([2, 0, 3, 1])
    assert bursts == (Burst(0, 0, 2, 0.0), Burst(2, 2, 3, 0.0), Burst(3, 5, 1, 0.0))
    # Back to back: each burst starts where the one before ended, in CCD order.
    assert all(a.first + a.count == b.first for a, b in itertools.pairwise(bursts))
    assert sum(b.count for b in bursts) == 6


def test_a_rate_limit_spaces_the_bursts_by_their_first_alert() -> None:
    bursts = cycle_schedule([4, 4, 2], rate_limit=2.0)
    assert [b.offset_s for b in bursts] == [0.0, 2.0, 4.0]
    assert intended_offset_ns(5, 2.0) == 2_500_000_000
    assert intended_offset_ns(5, None) == 0
    assert send_seconds(10, 2.0) == 4.5 and send_seconds(10, None) == 0.0
    with pytest.raises(ConfigError):
        cycle_schedule([1], rate_limit=0.0)
    with pytest.raises(ConfigError):
        cycle_schedule([1, -1])


def test_shutter_close_is_fixed_by_the_cadence() -> None:
    assert [shutter_close_ns(k, 39.0) for k in range(3)] == [0, 39 * 10**9, 78 * 10**9]
    assert shutter_close_ns(1000, 37.0) == 37_000 * 10**9  # no drift over a night


# --------------------------------------------------------------------------- ids per cycle


def test_the_id_stride_is_a_power_of_ten_above_the_span() -> None:
    assert id_stride([1000, 1999]) == 10_000
    assert id_stride([5]) == 10
    ids = [10**15 + 999, 10**15 + 200_999]
    stride = id_stride(ids)
    assert stride == 1_000_000
    # Every cycle's ids lie in a range of their own, above the one before.
    for k in range(4):
        this, after = (cycle_id_offset(c, stride, max(ids)) for c in (k, k + 1))
        assert max(ids) + this < min(ids) + after


def test_cycle_offsets_wrap_before_an_id_leaves_a_long() -> None:
    near = MAX_LONG - 25
    assert cycle_id_offset(2, 10, near) == 20
    assert cycle_id_offset(3, 10, near) == 0  # 30 would overflow: wrap round
    assert all(near + cycle_id_offset(k, 10, near) <= MAX_LONG for k in range(100))


def test_zigzag_longs_round_trip_through_the_patcher() -> None:
    assert encode_long(0) == b"\x00" and encode_long(-1) == b"\x01" and encode_long(1) == b"\x02"
    assert encode_long(64) == b"\x80\x01"


@pytest.mark.parametrize("version", available_versions())
def test_every_shipped_schema_has_its_ids_in_a_patchable_prefix(version: str) -> None:
    patcher = IdPatcher(load_schema(version))
    assert patcher.id_fields[-1] == "diaSource.diaSourceId"
    assert patcher.id_fields[0] in ("alertId", "diaSourceId")


@pytest.mark.parametrize("version", [None, "7.4"])
def test_a_cycle_changes_the_ids_and_nothing_else(version: str | None) -> None:
    simulator = AlertSimulator(
        SimulationConfig(
            seed=5, alerts_per_visit_mean=4, alerts_per_visit_sigma=0.0, schema_version=version
        )
    )
    codec = AvroSerializer(version)
    visit = encode_visit(simulator.visit(0).alerts(), codec, ccds=2)
    top = "diaSourceId" if "diaSourceId" in patcher_fields(version) else "alertId"
    seen: set[int] = set()
    for alert in visit.alerts:
        original = codec.loads(alert.original)
        assert alert.payload(0) is alert.original
        for cycle in range(3):
            offset = visit.id_offset(cycle)
            got = codec.loads(alert.payload(offset))
            assert got[top] == original[top] + offset == alert.alert_id + offset
            assert got["diaSource"]["diaSourceId"] == original["diaSource"]["diaSourceId"] + offset
            got[top] = original[top]
            got["diaSource"]["diaSourceId"] = original["diaSource"]["diaSourceId"]
            assert got == original
            seen.add(alert.alert_id + offset)
    assert len(seen) == 3 * len(visit.alerts)


def patcher_fields(version: str | None) -> tuple[str, ...]:
    return tuple(f["name"] for f in load_schema(version).definition["fields"])


# --------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def small_visit():
    simulator = AlertSimulator(
        SimulationConfig(seed=9, alerts_per_visit_mean=12, alerts_per_visit_sigma=0.0, ccds=4)
    )
    visit = simulator.visit(0)
    return encode_visit(visit.alerts(), AvroSerializer(), ccd_counts=visit.ccd_counts)


def test_the_loop_repeats_the_visit_at_the_cadence(small_visit) -> None:
    transport = get_transport(f"memory://play-{uuid.uuid4().hex[:8]}")
    subscriber = transport.open_subscriber(Start.earliest())
    publisher = transport.open_publisher()
    reports: list[CycleReport] = []
    summary = play(small_visit, publisher, cadence_s=0.3, cycles=3, on_cycle=reports.append)
    n = len(small_visit.alerts)
    assert summary.cycles == 3 and summary.sent == summary.acknowledged == 3 * n
    assert [r.cycle for r in reports] == [0, 1, 2]
    assert all(r.sent == r.acknowledged == n and r.within_cadence for r in reports)
    got = []
    for _ in range(3 * n):
        received = subscriber.poll(5.0)
        assert received is not None
        got.append(received.envelope)
    assert subscriber.poll(0.0) is None
    shutters = sorted({e.t_shutter_ns for e in got})
    assert [b - a for a, b in itertools.pairwise(shutters)] == [300_000_000] * 2
    assert all(e.t_intended_ns == e.t_shutter_ns and e.t_sent_ns >= e.t_shutter_ns for e in got)
    assert [e.sequence for e in got] == list(range(3 * n))
    assert len({e.alert_id for e in got}) == 3 * n  # every cycle is new to a de-duplicator
    first_cycle = [e.alert_id for e in got[:n]]
    assert first_cycle == [a.alert_id for a in small_visit.alerts]
    assert [e.alert_id - small_visit.stride for e in got[n : 2 * n]] == first_cycle
    assert "within the 0.3 s cadence" in reports[0].line(n, 0.3)
    subscriber.close()


def test_a_rate_limit_holds_each_alert_until_it_is_due(small_visit) -> None:
    transport = get_transport(f"memory://play-{uuid.uuid4().hex[:8]}")
    subscriber = transport.open_subscriber(Start.earliest())
    n = len(small_visit.alerts)
    play(small_visit, transport.open_publisher(), cadence_s=5.0, cycles=1, rate_limit=100.0)
    got = [subscriber.poll(5.0) for _ in range(n)]
    envelopes = [r.envelope for r in got if r is not None]
    assert len(envelopes) == n
    t0 = envelopes[0].t_shutter_ns
    assert [e.t_intended_ns - t0 for e in envelopes] == [i * 10_000_000 for i in range(n)]
    assert all(e.t_sent_ns >= e.t_intended_ns for e in envelopes)
    subscriber.close()


def test_a_stop_ends_the_loop_between_two_alerts(small_visit) -> None:
    transport = get_transport(f"memory://play-{uuid.uuid4().hex[:8]}")
    subscriber = transport.open_subscriber(Start.earliest())
    stop = threading.Event()
    reports: list[CycleReport] = []

    def on_cycle(report: CycleReport) -> None:
        reports.append(report)
        stop.set()

    summary = play(
        small_visit, transport.open_publisher(), cadence_s=0.2, stop=stop, on_cycle=on_cycle
    )
    assert summary.cycles == 1 and summary.interrupted and summary.all_acknowledged
    assert len(reports) == 1 and not reports[0].interrupted
    subscriber.close()


def test_a_bad_cadence_is_refused(small_visit) -> None:
    transport = get_transport(f"memory://play-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError):
        play(small_visit, transport.open_publisher(), cadence_s=0.0, cycles=1)


# --------------------------------------------------------------------------- the lag verdict


def _sample(t: float, *partitions: tuple[int | None, int]) -> LagSample:
    return LagSample(t, tuple(PartitionLag(i, c, 0, end) for i, (c, end) in enumerate(partitions)))


def test_lag_counts_a_partition_never_committed_from_its_start() -> None:
    sample = _sample(0.0, (None, 40), (10, 30))
    assert [p.lag for p in sample.partitions] == [40, 20] and sample.lag == 60


def test_the_verdict_follows_the_lag_trend() -> None:
    assert verdict([_sample(0.0, (5, 5))]).text == "keeping up"
    assert verdict([_sample(0.0, (0, 5))]).keeping_up is None
    growing = [_sample(0.0, (0, 10)), _sample(1.0, (5, 30)), _sample(2.0, (10, 50))]
    judged = verdict(growing)
    assert judged.keeping_up is False and judged.growth == pytest.approx(15.0)
    assert judged.text == "falling behind (lag growing by 15.0 alerts/s)"
    assert trend(growing) == (15, 15)
    shrinking = [_sample(0.0, (0, 50)), _sample(2.0, (30, 60))]
    assert verdict(shrinking).keeping_up is True and "shrinking by 10.0" in verdict(shrinking).text
    stalled = [_sample(0.0, (None, 50)), _sample(2.0, (None, 50))]
    assert verdict(stalled).keeping_up is False
    assert "nothing read" in verdict(stalled).text
    # A known play rate above what the group reads is falling behind even in a pause.
    paused = [_sample(0.0, (0, 50)), _sample(2.0, (20, 50))]
    assert verdict(paused).keeping_up is True
    assert verdict(paused, play_rate=30.0).text.startswith("falling behind (lag growing by 20.0")
