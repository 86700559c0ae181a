"""The mini-broker: every user's filters over the full stream, a capped stream out per user.

Alerts arrive in visit order, CCD by CCD, from an input the caller hands over (Kafka through
``alertbench.harness.minibroker_io``; the ports are in :mod:`alertbench.refimpl.minibroker.ports`).
They are gathered into batches (a pause in the stream or BATCH_MAX ends one); each batch is
decoded straight into numpy columns by the native Avro engine (no Python object per light-curve
value) and split into runs of one visit; every registered filter runs over a run's columns at
once, and each user's matches (in stream order) go to their outputs until the user's per-visit
allowance is spent. What is over the allowance is counted as truncated, not queued, so a busy
user costs the stream nothing extra. Filters are re-read from the store when its revision
changes, so registering a filter takes effect at the next batch without a restart.

Only the alerts delivered are decoded in full. Bad input loses nothing else: a message that does
not decode is counted (with where it came from) and skipped, and a filter is checked at
registration, so evaluation cannot fail on it.

Delivery is at-least-once end to end when the input can commit (a
:class:`~alertbench.refimpl.minibroker.ports.CommittingInput`, as the Kafka input of
``alertbench minibroker serve`` is): after each batch was delivered, :meth:`MiniBroker.run`
flushes every output and commits the input only if every output reports nothing left (a Kafka
output: every message acknowledged by the cluster; a VTP output: every event queued for the
user's subscribers connected at the time, VTP keeping nothing for anyone absent). So a crash,
whenever it happens, leaves the input's commit at the end of a batch that every output has, and a
restart resumes there: the batch in flight is delivered again (duplicates, never gaps; a user
whose visit straddles the restart may also get up to a second allowance of that visit, the
per-visit counts being kept in memory). If an output cannot confirm a batch (not acknowledged
within ``flush_timeout``, or failed or dropped after ``deliver`` returned), the run stops with
:class:`UndeliveredError` without committing it, rather than committing past it: a restart
redelivers from the last commit. Not retried, and committed past: an alert an output refuses
outright (``deliver`` raises; counted in ``output_errors``), one that does not decode
(``undecodable``), and what is over a user's allowance (``truncated``). An input without
``commit`` (a list in a test) is read once, at most once.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.columns import AlertColumns, decode_columns
from alertbench.refimpl.minibroker.filters import (
    CompiledFilter,
    FilterError,
    columns_read,
    compile_filter,
)
from alertbench.refimpl.minibroker.filters.columns import VisitColumns
from alertbench.refimpl.minibroker.ports import AlertInput, CommittingInput, UserOutput
from alertbench.refimpl.minibroker.store import MiniBrokerStore, User

from alertbench.errors import AlertbenchError, DecodeError

log = logging.getLogger(__name__)

BATCH_MAX = 20_000
"""Alerts evaluated together at most (a peak visit is split into batches of this size)."""
VISITS_REMEMBERED = 16
"""Per-visit counts are kept for this many recent visits (late alerts of a visit still count)."""
FLUSH_TIMEOUT = 30.0
"""Seconds the outputs have, after a batch, to confirm it before the run stops uncommitted."""


class UndeliveredError(AlertbenchError):
    """The outputs did not confirm a batch in time: the input was not committed past it, and the
    run stopped (a restart resumes from the last commit and delivers the batch again)."""

    def __init__(self, message: str, unconfirmed: dict[str, int]) -> None:
        super().__init__(message)
        self.unconfirmed = unconfirmed
        """output name -> alerts it reported as not (yet) reached."""


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
    disabled_filters: dict[str, str] = field(default_factory=dict)
    """``user/filter`` -> why the service could not compile it (it is skipped, never fatal)."""
    commits: int = 0
    """Batches the input was committed after (every output had confirmed them)."""
    evaluate_seconds: float = 0.0
    decode_seconds: float = 0.0
    deliver_seconds: float = 0.0
    commit_seconds: float = 0.0
    """Waiting for the outputs to confirm each batch, and committing the input."""
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
            "disabled_filters": dict(self.disabled_filters),
            "commits": self.commits,
            "evaluate_seconds": round(self.evaluate_seconds, 6),
            "decode_seconds": round(self.decode_seconds, 6),
            "deliver_seconds": round(self.deliver_seconds, 6),
            "commit_seconds": round(self.commit_seconds, 6),
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
    ) -> None:
        self.store = store
        self.outputs = list(outputs)
        self.serializer = serializer or AvroSerializer()
        self.stats = MiniBrokerStats()
        self._revision = -1
        self._users: list[UserFilters] = []
        self._columns: frozenset[str] = frozenset()
        """The decoded columns the loaded filters read, and diaSource.visit (set by reload)."""
        self._sent: OrderedDict[int, Counter[str]] = OrderedDict()

    # -- filters ---------------------------------------------------------------------------

    def reload(self, force: bool = False) -> list[UserFilters]:
        revision = self.store.revision()
        if force or revision != self._revision:
            by_user: dict[str, UserFilters] = {}
            disabled: dict[str, str] = {}
            for user, stored in self.store.all_filters():
                try:
                    compiled = compile_filter(stored.expression, self.store.catalog)
                except FilterError as exc:
                    # One user's filter (say, registered against another schema version) must
                    # not stop the service for every user: skipped, reported, kept in the store.
                    disabled[f"{user.name}/{stored.name}"] = str(exc).splitlines()[0]
                    continue
                entry = by_user.setdefault(user.name, UserFilters(user, []))
                entry.filters.append((stored.name, compiled))
            for key in disabled.keys() - self.stats.disabled_filters.keys():
                log.warning("mini-broker: filter %s disabled: %s", key, disabled[key])
            self.stats.disabled_filters = disabled
            self._users = list(by_user.values())
            filters = (compiled for entry in self._users for _, compiled in entry.filters)
            self._columns = columns_read(filters) | {"diaSource.visit"}
            self._revision = revision
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

    def process(
        self, payloads: Sequence[bytes], origins: Sequence[str] | None = None
    ) -> list[BatchStats]:
        """Decode a batch of messages into columns and apply every filter, visit by visit.

        Only the columns the loaded filters read are decoded (every message is still validated
        in full); a filter registered meanwhile finds its columns decoded when it asks for them.
        A message that does not decode is counted in ``stats.undecodable`` with its origin
        and left out; the others are served.
        """
        self.reload()  # decode only the columns of the filters this batch will meet
        t0 = time.perf_counter()
        try:
            decoded = decode_columns(
                payloads, self.store.catalog.schema.version, fields=self._columns
            )
        except DecodeError as exc:
            self.stats.decode_seconds += time.perf_counter() - t0
            for i in range(len(payloads)):
                self._undecodable(origins[i] if origins else "?", exc)
            return []
        self.stats.decode_seconds += time.perf_counter() - t0
        for index, reason in decoded.rejected:
            self._undecodable(origins[index] if origins else "?", reason)
        results = []
        for start, stop, visit in _visit_runs(decoded):
            columns = VisitColumns.from_decoded(decoded, start, stop)
            kept = [payloads[i] for i in decoded.indices[start:stop]]
            results.append(self._evaluate(columns, kept, visit, lambda i, k=kept: self._full(k[i])))
        return results

    def process_alerts(
        self, alerts: Sequence[dict[str, Any]], payloads: Sequence[bytes]
    ) -> BatchStats:
        """The reference path: one visit's alerts already decoded to dicts."""
        if not alerts:
            return BatchStats(0, 0.0)
        return self._evaluate(
            VisitColumns(alerts), list(payloads), visit_of(alerts[0]), lambda i: alerts[i]
        )

    def _full(self, payload: bytes) -> dict[str, Any]:
        return self.serializer.loads(payload)

    def _undecodable(self, origin: str, reason: Any) -> None:
        self.stats.undecodable.append(f"{origin}: {reason}")
        log.warning("mini-broker skipped an undecodable message at %s: %s", origin, reason)

    def _evaluate(
        self,
        columns: VisitColumns,
        payloads: Sequence[bytes],
        visit: int,
        full: Callable[[int], dict[str, Any]],
    ) -> BatchStats:
        """Every user's filters over one visit's columns; deliver the capped matches."""
        users = self.reload()
        started = time.perf_counter()
        masks: list[tuple[UserFilters, np.ndarray, list[np.ndarray]]] = []
        for entry in users:
            per_filter = [compiled.select(columns) for _, compiled in entry.filters]
            masks.append((entry, np.logical_or.reduce(per_filter), per_filter))
        stats = BatchStats(len(columns), time.perf_counter() - started)
        if not len(columns):
            return stats
        sent = self._sent_in(visit)
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
                    alert = full(int(i))
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
        self.stats.alerts += len(columns)
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
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> MiniBrokerStats:
        """Consume ``source`` until ``max_alerts`` were read, ``duration`` seconds passed, or
        nothing arrived for ``idle_stop`` seconds (whichever comes first; at least one is needed
        unless the caller stops the source itself).

        If ``source`` can commit (:class:`CommittingInput`), it is committed after each batch
        once every output confirmed the batch (see :meth:`checkpoint`), never before; an output
        that has not within ``flush_timeout`` seconds stops the run with
        :class:`UndeliveredError`, uncommitted."""
        started = time.perf_counter()
        deadline = started + duration if duration else None
        committing = source if isinstance(source, CommittingInput) else None
        payloads: list[bytes] = []
        origins: list[str] = []
        last_arrival = time.monotonic()
        read = 0
        self.reload()

        def flush() -> None:
            # Everything poll() returned since the last commit is in ``payloads`` (a batch ends
            # only between two polls), so committing after it commits exactly this batch.
            if payloads:
                for result in self.process(payloads, origins):
                    if on_batch:
                        on_batch(result)
                payloads.clear()
                origins.clear()
                if committing is not None:
                    self.checkpoint(committing, flush_timeout)

        try:
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
                payloads.append(received.payload)
                origins.append(received.origin or "?")
                if len(payloads) >= BATCH_MAX:
                    flush()
            flush()
            for output in self.outputs:
                output.flush()
        finally:
            self.stats.wall_seconds += time.perf_counter() - started
        return self.stats

    def checkpoint(self, source: CommittingInput, timeout: float = FLUSH_TIMEOUT) -> None:
        """Commit ``source`` if every output confirms what it was given (``flush`` returns 0
        within ``timeout`` seconds, shared by the outputs); else raise
        :class:`UndeliveredError` and commit nothing, so the input is never committed past an
        alert an output may not have. Called by :meth:`run` after each batch."""
        started = time.perf_counter()
        until = time.monotonic() + timeout
        unconfirmed: dict[str, int] = {}
        try:
            for output in self.outputs:
                left = output.flush(max(0.0, until - time.monotonic()))
                if left:
                    unconfirmed[output.name] = left
            if unconfirmed:
                shown = ", ".join(f"{n} of {name}" for name, n in unconfirmed.items())
                log.error("mini-broker: outputs did not confirm the batch: %s", shown)
                raise UndeliveredError(
                    f"the outputs did not confirm a batch ({shown} alerts not acknowledged "
                    f"within {timeout:g} s, failed or dropped); the input was not committed "
                    "past it, so a restart delivers it again",
                    unconfirmed,
                )
            source.commit()
            self.stats.commits += 1
        finally:
            self.stats.commit_seconds += time.perf_counter() - started


def _visit_runs(decoded: AlertColumns) -> list[tuple[int, int, int]]:
    """(start, stop, visit) of each run of consecutive rows from one visit."""
    if not len(decoded):
        return []
    column = decoded["diaSource.visit"]
    visits = np.asarray(column.data)  # type: ignore[union-attr]
    cuts = np.flatnonzero(visits[1:] != visits[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(visits)]
    return [(a, b, int(visits[a])) for a, b in itertools.pairwise(bounds)]
