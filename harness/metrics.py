"""What a number means: one definition of late, lost, duplicate, decode error and latency.

Every benchmark in the harness (the matrix, max-rate, a workload run, kafka-visit, the VTP bench)
measures through :mod:`alertbench.harness.engine`, which counts with the definitions here, so a
figure means the same thing wherever it is published.

- **Latency**: from the alert's *intended* send time to the moment the subscriber had it decoded
  (received, when payloads are pre-encoded and not decoded), both read from ``time.time_ns()``:
  one clock, shared by every process on the machine. Recording the intended time, not the
  actual one, keeps a publisher that falls behind visible (coordinated omission).
- **Late**: an alert handed to the transport more than :data:`LATE_NS` after its intended time.
- **Lost**: an alert a subscriber should have had and never got, in any form; an alert that
  arrived but would not decode is a decode error, not a loss.
- **Duplicate**: the same alert id delivered again to the same subscriber (or, when several
  subscribers share one stream, to more than one of them); it is counted, never measured twice.
- **Decode error**: a payload the serializer refused (or crashed on). It is counted with the
  first few reasons kept, and never stops a subscriber.
- **Unexpected**: a message whose alert id the run never sent (another publisher, a corrupted
  header); counted, not measured.

Latencies live in an HdrHistogram whose range (1 µs .. 1 h) covers any run the harness makes; a
value outside it is clamped to the edge *and counted*, so a slow tail can never vanish silently.
The histogram travels as HdrHistogram's own encoding, so runs can be merged and re-plotted later.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LATE_NS = 50_000_000
"""An alert is *late* when handed to the transport more than 50 ms after its intended send time.

Why 50 ms: sleeping to a deadline on a loaded two-core machine overshoots by ~0.1-5 ms, and an
alert's own encoding takes ~1-15 ms; a threshold below that would call a publisher that keeps up
"late". 50 ms is well above both and three orders of magnitude below Rubin's 60 s budget, so a
publisher that really falls behind (its delay growing with every alert) crosses it within a
fraction of a second. A rate is sustainable only while at most 1% of alerts are late
(:data:`MAX_LATE_FRACTION`)."""

MAX_LATE_FRACTION = 0.01
"""The share of late alerts a sustainable rate may have (OpenMessaging Benchmark's habit)."""

LSST_RATE = 10_000 / 39.0
"""LSST's average alert rate: 10,000 alerts per ~39 s visit (DMTN-102)."""

VISIT_BUDGET_S = 60.0
"""Rubin's budget: every alert of a visit out within 60 s of shutter close."""

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
"""The latency histogram's range, in microseconds: 1 µs to 1 h, covering any run made here."""
SIGNIFICANT_DIGITS = 3

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
CDF_PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9, 99.99, 100)
"""Where the latency CDF is sampled for plots (value at each percentile, microseconds)."""

MAX_EXAMPLES = 5
"""How many decode-error reasons a subscriber keeps (the count is always complete)."""


def is_late(intended_ns: int, handed_ns: int) -> bool:
    """True when an alert handed to the transport at ``handed_ns`` was late (see LATE_NS)."""
    return handed_ns - intended_ns > LATE_NS


class LatencyHistogram:
    """End-to-end latencies in microseconds: an HdrHistogram that counts what it cannot hold.

    A value above :data:`HIGHEST_US` is recorded as ``HIGHEST_US`` and counted in
    ``above_range`` (so percentiles and the fraction within 60 s stay honest: such an alert is
    late, and counted); a negative value (an intended time in the future: a clock fault) is
    recorded as 0 and counted in ``below_range``. ``max_us`` is the true maximum seen.
    """

    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self.above_range = 0
        self.below_range = 0
        self.max_us = 0

    def record_us(self, value: int) -> None:
        value = int(value)
        if value > HIGHEST_US:
            self.above_range += 1
            self.max_us = max(self.max_us, value)
            value = HIGHEST_US
        elif value < 0:
            self.below_range += 1
            value = 0
        else:
            self.max_us = max(self.max_us, value)
        if not self._h.record_value(value):  # cannot happen inside the range; never silent
            raise AssertionError(f"HdrHistogram refused {value} µs inside its declared range")

    def record_many_us(self, values: Any) -> None:
        """Record an array of latencies (µs), counting equal values at once."""
        array = np.asarray(values, dtype=np.int64)
        if not array.size:
            return
        unique, counts = np.unique(array, return_counts=True)
        for value, count in zip(unique.tolist(), counts.tolist(), strict=True):
            if value > HIGHEST_US:
                self.above_range += count
                self.max_us = max(self.max_us, value)
                value = HIGHEST_US
            elif value < 0:
                self.below_range += count
                value = 0
            else:
                self.max_us = max(self.max_us, value)
            if not self._h.record_value(value, count):
                raise AssertionError(f"HdrHistogram refused {value} µs inside its range")

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    @property
    def out_of_range(self) -> int:
        return self.above_range + self.below_range

    def percentile(self, p: float) -> float:
        """The latency at percentile ``p``: the upper edge of its bucket (within 0.1%)."""
        return float(self._h.get_value_at_percentile(p)) if self.count else 0.0

    def _reported(self, p: float) -> float:
        """A percentile as reported: never above the true maximum, which a bucket's upper edge
        can pass by up to the histogram's resolution (a p99 over the max reads as a bug)."""
        return min(self.percentile(p), float(max(self.max_us, 0)))

    def summary(self) -> dict[str, float]:
        """p50, p90, p99, p99.9 and the true max, in microseconds (the results' ``latency_us``)."""
        out = {f"p{p:g}": self._reported(p) for p in PERCENTILES}
        out["max"] = float(self.max_us)
        return out

    def cdf(self) -> list[list[float]]:
        """``[[percentile, latency_us], ...]``: enough to draw the CDF."""
        if not self.count:
            return []
        return [[p, self._reported(p)] for p in CDF_PERCENTILES]

    def fraction_within(self, limit_us: int) -> float:
        """The share of alerts whose latency was at most ``limit_us``.

        Counted per histogram bucket: a bucket that straddles the limit counts as over it, so
        the figure errs on the strict side by at most the histogram's resolution (0.1%)."""
        total = self.count
        if not total:
            return 0.0
        within = sum(
            item.count_added_in_this_iter_step
            for item in self._h.get_recorded_iterator()
            if item.value_iterated_to <= limit_us
        )
        return within / total

    def merge(self, other: LatencyHistogram) -> None:
        """Add another run's latencies (e.g. repeats of one combination)."""
        self._h.add(other._h)
        self.above_range += other.above_range
        self.below_range += other.below_range
        self.max_us = max(self.max_us, other.max_us)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: HdrHistogram's own encoding (base64) plus what it cannot hold."""
        return {
            "encoded": self._h.encode().decode("ascii"),
            "unit": "us",
            "lowest": LOWEST_US,
            "highest": HIGHEST_US,
            "significant_digits": SIGNIFICANT_DIGITS,
            "above_range": self.above_range,
            "below_range": self.below_range,
            "max_us": self.max_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        """Back from :meth:`to_dict` (a results.json), ready to merge or re-plot."""
        out = cls()
        out._h.decode_and_add(data["encoded"].encode("ascii"))
        out.above_range = int(data.get("above_range", 0))
        out.below_range = int(data.get("below_range", 0))
        out.max_us = int(data.get("max_us", out._h.get_max_value()))
        return out


def merge_histograms(encoded: list[dict[str, Any]]) -> LatencyHistogram:
    """One histogram from several runs' ``latency_histogram`` entries."""
    out = LatencyHistogram()
    for data in encoded:
        out.merge(LatencyHistogram.from_dict(data))
    return out


class Tally:
    """One subscriber's view of a run: when each alert arrived, and what went wrong.

    ``received_ns[i]`` is the time alert ``i`` arrived decoded (0: never; -1: it arrived but
    would not decode). Ids are the publisher's sequence (0 .. sent-1), so the array is the
    de-duplication set as well, at 8 bytes an alert.
    """

    def __init__(self, n: int) -> None:
        self.received_ns = np.zeros(n, dtype=np.int64)
        self.unique = 0
        self.duplicates = 0
        self.decode_errors = 0
        self.unexpected = 0
        self.examples: list[str] = []

    def arrived(self, alert_id: int, t_ns: int) -> bool:
        """Note an alert that decoded; True if it is new (neither a duplicate nor foreign)."""
        if not 0 <= alert_id < len(self.received_ns):
            self.unexpected += 1
            return False
        seen = self.received_ns[alert_id]
        if seen > 0:
            self.duplicates += 1
            return False
        self.received_ns[alert_id] = t_ns
        if seen == 0:
            self.unique += 1
            return True
        return False  # a good copy of an alert that once failed to decode: already counted

    def undecodable(self, alert_id: int, reason: str) -> bool:
        """Note a payload that would not decode; True if its id was not seen before."""
        self.decode_errors += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(reason)
        if 0 <= alert_id < len(self.received_ns) and self.received_ns[alert_id] == 0:
            self.received_ns[alert_id] = -1
            self.unique += 1
            return True
        return False


@dataclass
class Delivery:
    """What a run's subscribers got, by the definitions above."""

    received_per_subscriber: list[int]
    undecodable_per_subscriber: list[int]
    lost_per_subscriber: list[int]
    received: int
    """Fan-out: the fewest alerts any subscriber got (every full stream has them); shared: the
    distinct alerts the subscribers got together."""
    lost: int
    """Fan-out: the most alerts any one subscriber missed; shared: alerts no subscriber got."""
    duplicates: int
    decode_errors: int
    unexpected: int
    last_received_ns: int
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


def tally_delivery(
    arrays: list[np.ndarray],
    intended_ns: np.ndarray,
    *,
    fanout: bool,
    duplicates: int = 0,
    decode_errors: int = 0,
    unexpected: int = 0,
) -> Delivery:
    """Count and measure a run from each subscriber's ``Tally.received_ns``.

    ``intended_ns`` is the publisher's record of when each alert was meant to be sent; latency
    is every receipt minus it (fan-out: every subscriber's receipts; shared: each alert once,
    as whichever subscriber got it). Alerts received by more than one subscriber sharing one
    stream are duplicates too.
    """
    n = len(intended_ns)
    histogram = LatencyHistogram()
    received = [int((a > 0).sum()) for a in arrays]
    undecodable = [int((a < 0).sum()) for a in arrays]
    last = max((int(a.max()) for a in arrays if a.size), default=0)
    if fanout:
        lost_each = [n - r - u for r, u in zip(received, undecodable, strict=True)]
        for a in arrays:
            got = a > 0
            histogram.record_many_us((a[got] - intended_ns[got]) // 1000)
        delivered = min(received, default=0)
        lost = max(lost_each, default=n)
    else:
        stacked = np.stack(arrays) if arrays else np.zeros((0, n), dtype=np.int64)
        good = stacked > 0
        copies = good.sum(axis=0)
        duplicates += int((copies[copies > 1] - 1).sum())
        any_good = copies > 0
        only_bad = ~any_good & (stacked < 0).any(axis=0)
        first = np.where(good, stacked, np.iinfo(np.int64).max).min(axis=0)
        histogram.record_many_us((first[any_good] - intended_ns[any_good]) // 1000)
        delivered = int(any_good.sum())
        lost = n - delivered - int(only_bad.sum())
        lost_each = [lost] * len(arrays)
    return Delivery(
        received_per_subscriber=received,
        undecodable_per_subscriber=undecodable,
        lost_per_subscriber=lost_each,
        received=delivered,
        lost=lost,
        duplicates=duplicates,
        decode_errors=decode_errors,
        unexpected=unexpected,
        last_received_ns=last,
        latency=histogram,
    )


# -- CPU and memory per process ---------------------------------------------------------------


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_peak_rss_mb() -> float:
    """Peak resident memory of this process since it started, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_cpu_seconds() -> float:
    """CPU seconds of the calling thread alone (a subscriber run as a thread)."""
    return time.thread_time()


def pid_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (e.g. a Kafka JVM), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of another process, MB (VmHWM), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_cpu_seconds(pids: list[int]) -> float:
    """Total CPU seconds of several other processes (the ones that are still there)."""
    return sum(s for s in (pid_cpu_seconds(p) for p in pids) if s is not None)
