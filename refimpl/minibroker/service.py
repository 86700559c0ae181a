"""The mini-broker: every user's filters over the full stream, a capped stream out per user.

Alerts arrive in visit order, CCD by CCD, from an input the caller hands over (Kafka through
``alertbench.harness.minibroker_io``; the ports are in :mod:`alertbench.refimpl.minibroker.ports`).
They are decoded and gathered into batches that never span two visits; each batch becomes numpy
columns once, every registered filter runs over those columns at once, and each user's matches
(in stream order) go to their outputs until the user's per-visit allowance is spent. What is over
the allowance is counted as truncated, not queued, so a busy user costs the stream nothing extra.
Filters are re-read from the store when its revision changes, so registering a filter takes
effect at the next batch without a restart.

Bad input loses nothing else: a message that does not decode is counted (with where it came
from) and skipped, and a filter is checked at registration, so evaluation cannot fail on it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.minibroker.filters import CompiledFilter, compile_filter
from alertbench.refimpl.minibroker.filters.columns import VisitColumns
from alertbench.refimpl.minibroker.ports import AlertInput, UserOutput
from alertbench.refimpl.minibroker.projection import ProjectedDecoder
from alertbench.refimpl.minibroker.store import MiniBrokerStore, User

from alertbench.errors import AlertbenchError, DecodeError

log = logging.getLogger(__name__)

BATCH_MAX = 20_000
"""Alerts evaluated together at most (a peak visit is split into batches of this size)."""
VISITS_REMEMBERED = 16
"""Per-visit counts are kept for this many recent visits (late alerts of a visit still count)."""


@dataclass
class UserFilters:
    user: User
    filters: list[tuple[str, CompiledFilter]]


@dataclass
class BatchStats:
    alerts: int
    evaluate_seconds: float
    delivered: Counter[str] = field(default_factory=Counter)
    truncated: Counter[str] = field(default_factory=Counter)


@dataclass
class MiniBrokerStats:
    alerts: int = 0
    batches: int = 0
    undecodable: list[str] = field(default_factory=list)
    matched: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    truncated: Counter[str] = field(default_factory=Counter)
    output_errors: Counter[str] = field(default_factory=Counter)
    """``output:user`` -> alerts an output failed to deliver (logged; the stream goes on)."""
    evaluate_seconds: float = 0.0
    decode_seconds: float = 0.0
    deliver_seconds: float = 0.0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "batches": self.batches,
            "undecodable": len(self.undecodable),
            "matched": dict(self.matched),
            "delivered": dict(self.delivered),
            "truncated": dict(self.truncated),
            "output_errors": dict(self.output_errors),
            "evaluate_seconds": round(self.evaluate_seconds, 6),
            "decode_seconds": round(self.decode_seconds, 6),
            "deliver_seconds": round(self.deliver_seconds, 6),
            "wall_seconds": round(self.wall_seconds, 6),
            "alerts_per_second": round(self.alerts / self.wall_seconds, 1)
            if self.wall_seconds
            else None,
        }


def visit_of(alert: dict[str, Any]) -> int:
    return int((alert.get("diaSource") or {}).get("visit", -1))


class MiniBroker:
    def __init__(
        self,
        store: MiniBrokerStore,
        outputs: Sequence[UserOutput],
        serializer: AvroSerializer | None = None,
        project: bool = True,
    ) -> None:
        """``project``: decode alerts with a reader schema holding only the fields the filters
        read (see :mod:`alertbench.refimpl.minibroker.projection`), in full only those delivered."""
        self.store = store
        self.outputs = list(outputs)
        self.serializer = serializer or AvroSerializer()
        self.project = project
        self._projector: ProjectedDecoder | None = None
        self.stats = MiniBrokerStats()
        self._revision = -1
        self._users: list[UserFilters] = []
        self._sent: OrderedDict[int, Counter[str]] = OrderedDict()

    # -- filters ---------------------------------------------------------------------------

    def reload(self, force: bool = False) -> list[UserFilters]:
        revision = self.store.revision()
        if force or revision != self._revision:
            by_user: dict[str, UserFilters] = {}
            for user, stored in self.store.all_filters():
                entry = by_user.setdefault(user.name, UserFilters(user, []))
                entry.filters.append(
                    (stored.name, compile_filter(stored.expression, self.store.catalog))
                )
            self._users = list(by_user.values())
            self._revision = revision
            if self.project:
                paths = {
                    info.path
                    for entry in self._users
                    for _, compiled in entry.filters
                    for info in compiled.filter.fields
                }
                self._projector = ProjectedDecoder(self.store.catalog.schema, paths)
            log.info(
                "mini-broker: %d filters of %d users",
                sum(len(u.filters) for u in self._users),
                len(self._users),
            )
        return self._users

    # -- one batch ---------------------------------------------------------------------------

    def _sent_in(self, visit: int) -> Counter[str]:
        counts = self._sent.get(visit)
        if counts is None:
            counts = self._sent[visit] = Counter()
            while len(self._sent) > VISITS_REMEMBERED:
                self._sent.popitem(last=False)
        return counts

    def decode(self, payload: bytes) -> tuple[dict[str, Any], ProjectedDecoder | None]:
        """The alert (projected when possible) and the decoder that projected it, if any."""
        projector = self._projector
        if projector is not None:
            try:
                projected = projector.decode(payload)
            except DecodeError:
                raise
            except Exception as exc:
                raise DecodeError(f"not a valid alert: {exc}", codec="avro", raw=payload) from None
            if projected is not None:
                return projected, projector
        return self.serializer.loads(payload), None

    def process(
        self,
        alerts: Sequence[dict[str, Any]],
        payloads: Sequence[bytes],
        projected_by: ProjectedDecoder | None = None,
    ) -> BatchStats:
        """Apply every filter to one batch of alerts of a single visit; deliver capped matches.

        ``projected_by`` is the decoder that projected ``alerts`` (None: they are complete); if
        the filters changed since, the batch is decoded again for the new set of fields.
        """
        users = self.reload()
        if projected_by is not None and projected_by is not self._projector:
            alerts = [self.decode(p)[0] for p in payloads]
            projected_by = self._projector
        complete: dict[int, dict[str, Any]] = {}

        def full(i: int) -> dict[str, Any]:
            if projected_by is None:
                return alerts[i]
            if i not in complete:
                complete[i] = self.serializer.loads(payloads[i])
            return complete[i]

        started = time.perf_counter()
        columns = VisitColumns(alerts)
        masks: list[tuple[UserFilters, np.ndarray, list[np.ndarray]]] = []
        for entry in users:
            per_filter = [compiled.select(columns) for _, compiled in entry.filters]
            masks.append((entry, np.logical_or.reduce(per_filter), per_filter))
        stats = BatchStats(len(alerts), time.perf_counter() - started)
        if not alerts:
            return stats
        sent = self._sent_in(visit_of(alerts[0]))
        delivering = time.perf_counter()
        for entry, mask, per_filter in masks:
            name = entry.user.name
            matches = np.flatnonzero(mask)
            self.stats.matched[name] += len(matches)
            allowance = max(0, entry.user.alerts_per_visit - sent[name])
            chosen, over = matches[:allowance], len(matches) - min(len(matches), allowance)
            for i in chosen:
                names = [
                    fname for (fname, _), m in zip(entry.filters, per_filter, strict=True) if m[i]
                ]
                try:
                    alert = full(i)
                except AlertbenchError as exc:
                    self.stats.output_errors[f"decode:{name}"] += 1
                    log.warning("mini-broker could not decode alert %d in full: %s", i, exc)
                    continue
                for output in self.outputs:
                    try:
                        output.deliver(name, alert, payloads[i], names)
                    except AlertbenchError as exc:
                        # One output failing one alert (e.g. too large as VOEvent) must not stop
                        # the others, the other users or the stream: counted and logged.
                        self.stats.output_errors[f"{output.name}:{name}"] += 1
                        log.warning(
                            "mini-broker: %s could not deliver alert %s to %s: %s",
                            output.name, alert.get("diaSourceId"), name, exc,
                        )  # fmt: skip
            sent[name] += len(chosen)
            stats.delivered[name] += len(chosen)
            if over:
                stats.truncated[name] += over
        self.stats.deliver_seconds += time.perf_counter() - delivering
        self.stats.batches += 1
        self.stats.alerts += len(alerts)
        self.stats.evaluate_seconds += stats.evaluate_seconds
        self.stats.delivered.update(stats.delivered)
        self.stats.truncated.update(stats.truncated)
        return stats

    # -- the stream --------------------------------------------------------------------------

    def run(
        self,
        source: AlertInput,
        *,
        max_alerts: int | None = None,
        duration: float | None = None,
        idle_stop: float | None = None,
        batch_idle: float = 0.25,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> MiniBrokerStats:
        """Consume ``source`` until ``max_alerts`` were read, ``duration`` seconds passed, or
        nothing arrived for ``idle_stop`` seconds (whichever comes first; at least one is needed
        unless the caller stops the source itself)."""
        started = time.perf_counter()
        deadline = started + duration if duration else None
        alerts: list[dict[str, Any]] = []
        payloads: list[bytes] = []
        last_arrival = time.monotonic()
        read = 0
        self.reload()
        decoded_by: list[ProjectedDecoder | None] = [None]

        def flush() -> None:
            if alerts:
                result = self.process(alerts, payloads, decoded_by[0])
                if on_batch:
                    on_batch(result)
                alerts.clear()
                payloads.clear()

        while True:
            if max_alerts is not None and read >= max_alerts:
                break
            if deadline is not None and time.perf_counter() > deadline:
                break
            received = source.poll(batch_idle)
            now = time.monotonic()
            if received is None:
                flush()  # a pause in the stream ends the batch: deliver without waiting
                if idle_stop is not None and now - last_arrival > idle_stop:
                    break
                continue
            last_arrival = now
            read += 1
            payload = received.payload
            t0 = time.perf_counter()
            try:
                alert, projector = self.decode(payload)
            except DecodeError as exc:
                self.stats.undecodable.append(f"{received.origin or '?'}: {exc}")
                log.warning(
                    "mini-broker skipped an undecodable message at %s: %s", received.origin, exc
                )
                continue
            finally:
                self.stats.decode_seconds += time.perf_counter() - t0
            if alerts and (
                visit_of(alert) != visit_of(alerts[0])
                or len(alerts) >= BATCH_MAX
                or projector is not decoded_by[0]
            ):
                flush()
            if not alerts:
                decoded_by[0] = projector
            alerts.append(alert)
            payloads.append(payload)
        flush()
        for output in self.outputs:
            output.flush()
        self.stats.wall_seconds += time.perf_counter() - started
        return self.stats
