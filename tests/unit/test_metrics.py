"""One definition of late, lost, duplicate, decode error and latency (harness/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
from alertbench.harness import metrics
from alertbench.harness.metrics import (
    HIGHEST_US,
    LATE_NS,
    LatencyHistogram,
    Tally,
    is_late,
    merge_histograms,
    tally_delivery,
)


def test_late_is_one_threshold_past_the_intended_time() -> None:
    assert LATE_NS == 50_000_000
    intended = 1_000_000_000
    assert not is_late(intended, intended)
    assert not is_late(intended, intended + LATE_NS)  # exactly at the threshold: on time
    assert is_late(intended, intended + LATE_NS + 1)
    assert not is_late(intended, intended - 5_000_000)  # early is never late


def test_values_beyond_the_range_are_counted_not_dropped() -> None:
    h = LatencyHistogram()
    h.record_us(1_000)
    h.record_us(2 * HIGHEST_US)  # a two-hour tail: clamped to 1 h and counted
    h.record_us(-5)  # a clock fault: recorded as 0 and counted
    h.record_many_us([10_000, 3 * HIGHEST_US, 3 * HIGHEST_US])
    assert h.count == 6
    assert h.above_range == 3 and h.below_range == 1 and h.out_of_range == 4
    assert h.summary()["max"] == 3 * HIGHEST_US  # the true maximum, not the clamp
    assert h.percentile(100) >= HIGHEST_US * 0.999  # the tail is in the percentiles
    assert h.fraction_within(60_000_000) == pytest.approx(3 / 6)


def test_the_range_covers_an_hour_at_microsecond_resolution() -> None:
    h = LatencyHistogram()
    for value in (1, 999, 59_000_000, HIGHEST_US):
        h.record_us(value)
    assert h.out_of_range == 0 and h.count == 4
    assert h.percentile(25) == 1
    assert abs(h.percentile(100) - HIGHEST_US) / HIGHEST_US < 1e-3


def test_encoded_histograms_merge_into_the_histogram_of_both_runs() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.integers(100, 50_000, 2000), rng.integers(40_000, 900_000, 3000)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    a.record_many_us(first)
    b.record_many_us(second)
    b.record_us(5 * HIGHEST_US)
    both.record_many_us(np.concatenate([first, second]))
    both.record_us(5 * HIGHEST_US)
    # through JSON-ready dicts, as results.json keeps them
    merged = merge_histograms([a.to_dict(), b.to_dict()])
    assert merged.count == both.count == 5001
    assert merged.above_range == 1 and merged.max_us == 5 * HIGHEST_US
    assert merged.summary() == both.summary()
    assert merged.cdf() == both.cdf()
    again = LatencyHistogram.from_dict(merged.to_dict())
    assert again.summary() == merged.summary() and again.out_of_range == 1


def test_a_tally_counts_duplicates_decode_errors_and_foreign_ids() -> None:
    t = Tally(5)
    assert t.arrived(0, 100) and t.arrived(1, 110)
    assert not t.arrived(1, 120)  # again: a duplicate, its first time kept
    assert not t.arrived(7, 130) and not t.arrived(-1, 130)  # never sent: unexpected
    assert t.undecodable(2, "bad bytes")  # arrived, but would not decode
    assert not t.undecodable(2, "bad again")
    assert not t.arrived(2, 140)  # a good copy later: not new, but now measured
    assert (t.duplicates, t.decode_errors, t.unexpected, t.unique) == (1, 2, 2, 3)
    assert list(t.received_ns) == [100, 110, 140, 0, 0]
    assert t.examples == ["bad bytes", "bad again"]
    for i in range(20):
        t.undecodable(4, f"reason {i}")
    assert len(t.examples) == metrics.MAX_EXAMPLES and t.decode_errors == 22


def test_delivery_to_full_stream_subscribers() -> None:
    intended = np.array([0, 1_000_000, 2_000_000, 3_000_000], dtype=np.int64)
    a = np.array([5_000, 1_010_000, 2_020_000, 3_030_000], dtype=np.int64)
    b = np.array([6_000, 0, -1, 3_100_000], dtype=np.int64)  # one lost, one undecodable
    d = tally_delivery([a, b], intended, fanout=True, decode_errors=1)
    assert d.received_per_subscriber == [4, 2]
    assert d.lost_per_subscriber == [0, 1] and d.lost == 1
    assert d.received == 2  # every full stream has at least this many
    assert d.decode_errors == 1
    assert d.latency.count == 6  # every receipt of every subscriber
    assert d.latency.summary()["max"] == 100
    assert d.last_received_ns == 3_100_000


def test_delivery_to_subscribers_sharing_one_stream() -> None:
    intended = np.zeros(4, dtype=np.int64)
    a = np.array([1_000, 0, 3_000, 0], dtype=np.int64)
    b = np.array([2_000, 2_000, 0, 0], dtype=np.int64)  # alert 0 reached both: a duplicate
    d = tally_delivery([a, b], intended, fanout=False)
    assert d.received == 3 and d.lost == 1 and d.duplicates == 1
    assert d.latency.count == 3  # each alert once, at its first receipt
    assert d.latency.summary()["max"] == 3
