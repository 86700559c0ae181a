"""Is a consumer group keeping up with a topic? Per-partition lag, its trend and a verdict.

The question a broker team asks of a replayed stream (``alertbench play``): does my consumer read
a visit before the next one arrives? Kafka answers it without touching the consumer: the group's
committed offsets against the partitions' end offsets. This reads both with a plain
confluent-kafka Consumer that never subscribes (so it never joins the group, never triggers a
rebalance and never commits), and keeps the samples so the trend is the group's, not a guess.

Lag is ``end - committed``; a partition the group has never committed counts from the oldest
retained offset, because a group that reads nothing is the one furthest behind.

The verdict (:func:`verdict`, a pure function of the samples) compares the last ``window``
samples: a group is *keeping up* when its lag is 0, or when it reads at least as fast as alerts
arrive (``--play-rate``, or the end offsets' own growth); *falling behind* when its lag grows, or
when it has lag and read nothing over the window (a stopped consumer does not keep up because the
stream paused).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alertbench.transports.kafka import KafkaTransport

from alertbench.errors import AlertbenchError, TransportError

TREND_SAMPLES = 5
"""Samples the trend and the verdict look back over (the current one included)."""
METADATA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None
    """The group's committed offset (the next record it will read), None if it has none."""
    low: int
    end: int

    @property
    def position(self) -> int:
        """Where the group stands: its committed offset, else the oldest retained record."""
        return self.committed if self.committed is not None else self.low

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)


@dataclass(frozen=True)
class LagSample:
    """One reading of every partition, at ``t`` seconds (monotonic)."""

    t: float
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def end(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def position(self) -> int:
        return sum(p.position for p in self.partitions)


@dataclass(frozen=True)
class Verdict:
    keeping_up: bool | None
    """None: one sample with lag, no trend to judge from yet."""
    text: str
    growth: float | None = None
    """Lag growth, alerts/s over the window (negative: shrinking)."""
    arrival_rate: float | None = None
    read_rate: float | None = None


def trend(samples: Sequence[LagSample], window: int = TREND_SAMPLES) -> tuple[int, ...]:
    """How the total lag changed from one interval to the next over the last ``window``."""
    recent = list(samples[-window:])
    return tuple(b.lag - a.lag for a, b in itertools.pairwise(recent))


def verdict(
    samples: Sequence[LagSample], play_rate: float | None = None, window: int = TREND_SAMPLES
) -> Verdict:
    """Keeping up or falling behind, from the last ``window`` samples.

    ``play_rate``: the alerts/s the stream is known to carry (a steady producer); without it the
    rate is read from the end offsets' growth over the window.
    """
    if not samples:
        raise AlertbenchError("no lag sample to judge")
    last = samples[-1]
    if last.lag == 0:
        return Verdict(True, "keeping up")
    recent = list(samples[-window:])
    first = recent[0]
    span = last.t - first.t
    if len(recent) < 2 or span <= 0:
        return Verdict(None, "no trend yet (one sample)")
    read_rate = (last.position - first.position) / span
    arrival = play_rate if play_rate is not None else (last.end - first.end) / span
    growth = arrival - read_rate
    rates = {"growth": growth, "arrival_rate": arrival, "read_rate": read_rate}
    if growth > 0:
        return Verdict(False, f"falling behind (lag growing by {growth:,.1f} alerts/s)", **rates)
    if read_rate <= 0:
        return Verdict(
            False,
            f"falling behind (lag {last.lag:,}, nothing read in the last {span:.1f} s)",
            **rates,
        )
    if growth < 0:
        return Verdict(True, f"keeping up (lag shrinking by {-growth:,.1f} alerts/s)", **rates)
    return Verdict(True, f"keeping up (lag steady at {last.lag:,})", **rates)


class LagReader:
    """Reads a group's committed offsets and a topic's watermarks, without joining the group."""

    def __init__(self, transport: KafkaTransport, group: str) -> None:
        from confluent_kafka import Consumer

        self.transport = transport
        self.topic = transport.topic
        self.group = group
        conf: dict[str, Any] = transport.client_config()
        conf.update(transport.config)
        conf.update({"group.id": group, "enable.auto.commit": False})
        self._consumer = Consumer(conf)
        self._partitions = self._find_partitions()

    def _find_partitions(self) -> list[int]:
        from confluent_kafka import KafkaError, KafkaException

        try:
            metadata = self._consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            self.transport.raise_access_error()
            raise TransportError(
                f"no Kafka broker at {self.transport.bootstrap_servers} answers: "
                f"{exc.args[0].str()}"
            ) from None
        self.transport.raise_access_error()
        topic = metadata.topics.get(self.topic)
        error = topic.error if topic is not None else None
        if topic is None or (
            error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise AlertbenchError(
                f"topic {self.topic!r} does not exist on {self.transport.bootstrap_servers}"
            )
        if error is not None:
            raise TransportError(f"cannot read topic {self.topic!r}: {error.str()}")
        return sorted(topic.partitions)

    def sample(self, t: float) -> LagSample:
        from confluent_kafka import KafkaException, TopicPartition

        wanted = [TopicPartition(self.topic, p) for p in self._partitions]
        try:
            committed = {
                c.partition: c.offset
                for c in self._consumer.committed(wanted, timeout=METADATA_TIMEOUT_S)
            }
            marks = {
                p: self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=METADATA_TIMEOUT_S, cached=False
                )
                for p in self._partitions
            }
        except KafkaException as exc:
            self.transport.raise_access_error()
            raise TransportError(
                f"cannot read the offsets of group {self.group!r}: {exc.args[0].str()}"
            ) from None
        return LagSample(
            t,
            tuple(
                PartitionLag(
                    partition=p,
                    committed=committed[p] if committed.get(p, -1) >= 0 else None,
                    low=int(marks[p][0]),
                    end=int(marks[p][1]),
                )
                for p in self._partitions
            ),
        )

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._consumer.close()


def sample_record(
    sample: LagSample, samples: Sequence[LagSample], judged: Verdict, t0: float
) -> dict[str, Any]:
    """One interval as a JSON-able record (``lag --json``)."""
    return {
        "t": round(sample.t - t0, 3),
        "partitions": [
            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
            for p in sample.partitions
        ],
        "lag": sample.lag,
        "end": sample.end,
        "trend": list(trend(samples)),
        "keeping_up": judged.keeping_up,
        "verdict": judged.text,
        "growth": judged.growth,
        "arrival_rate": judged.arrival_rate,
        "read_rate": judged.read_rate,
    }
