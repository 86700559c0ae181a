"""Replay one visit into a Kafka topic at LSST's cadence, like Rubin's alert-stream-simulator.

Broker teams test against Rubin's simulator (DMTN-149: ``create-stream`` once, then
``play-stream`` repeats the same visit every cadence). This is the same idea on this project's
parts: the visit is loaded once (simulated, or read from an alert file) and encoded once as Rubin
publishes it (Avro behind the Confluent header), and every cycle replays it through the
transport's publisher, so the intended-time headers are the ones every other run writes.

The shape of a cycle is a pure function (:func:`cycle_schedule`): cycle ``k`` starts at shutter
close ``t0 = start + k * cadence`` and is sent as one burst per CCD, back to back, as Rubin's
per-detector workers would; with a rate limit each alert is also held until ``t0 + index / rate``.
A cycle that overruns does not move the next shutter close (a late cycle is reported late, never
re-timed: that would hide the very delay a broker team wants to see).

Why the ids change per cycle: a broker de-duplicates by alert id (``diaSourceId``; ``alertId`` in
schemas before 8.0), so an identical replay would be dropped as one long redelivery after the
first cycle. Cycle ``k`` adds ``k * stride`` to the alert's own ids, where ``stride`` is the
smallest power of ten above the visit's id span, so the cycles' id ranges never overlap and a
person can still read the original id in the new one. Re-encoding the visit every cycle would cost
seconds per cycle; the ids are the first longs of the record (the alert's id, then the first field
of ``diaSource``), so :class:`IdPatcher` splices new varints in front of the untouched remainder
of the pre-encoded bytes (a copy, no encoding). Everything else stays identical: same objects,
same history, same cutouts, as a replay should be. The Kafka headers say which cycle a record
belongs to: ``t-shutter-ns`` is that cycle's shutter close, and ``sequence`` is
``cycle * alerts_per_visit + index``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alertbench.refimpl.alert.schema import AlertSchema, schema_for_id
from alertbench.refimpl.codecs.base import Alert, Serializer
from alertbench.refimpl.codecs.wire import HEADER, schema_id_of
from alertbench.transports.base import Envelope, Publisher

from alertbench.errors import AlertbenchError, ConfigError, TransportError

DEFAULT_CADENCE_S = 39.0
"""LSST's visit cadence: a 30 s exposure, readout and slew (DMTN-149 uses 37 s)."""
DEFAULT_CCDS = 189
"""LSSTCam's science CCDs, each one processed (and its alerts emitted) by its own worker."""
LOCAL_STATE_FILE = "kafka-cluster.json"
"""The state file ``alertbench kafka start`` writes in the cache folder."""
MAX_LONG = 2**63 - 1
TOP_ID_FIELDS = ("alertId", "diaSourceId")
"""The alert's own id fields at the top of the record (``alertId`` before schema 8.0)."""
WAIT_STEP_S = 0.5
"""Longest single wait, so a stop request is seen within this."""


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Burst:
    """The alerts of one CCD in a cycle: ``count`` alerts from index ``first`` of the visit."""

    ccd: int
    first: int
    count: int
    offset_s: float
    """When the burst is meant to start, seconds after shutter close (0 without a rate limit:
    every CCD's alerts are due at once and go out back to back)."""


def split_evenly(n_alerts: int, ccds: int) -> tuple[int, ...]:
    """``n_alerts`` over ``ccds`` groups, as even as can be, the larger groups first (for a file,
    whose alerts do not say how Rubin's workers would have grouped them)."""
    if ccds < 1:
        raise ConfigError(f"a visit needs at least one CCD, not {ccds}")
    base, extra = divmod(n_alerts, ccds)
    return tuple(base + (1 if i < extra else 0) for i in range(ccds))


def cycle_schedule(ccd_counts: Sequence[int], rate_limit: float | None = None) -> tuple[Burst, ...]:
    """The bursts of one cycle, in sending order: one per CCD that has alerts.

    ``rate_limit`` (alerts/s) spaces the alerts ``1 / rate`` apart from shutter close, so a
    burst's offset is its first alert's index over the rate; without it every offset is 0.
    """
    if rate_limit is not None and not rate_limit > 0:
        raise ConfigError(f"the rate limit must be above 0 alerts/s, not {rate_limit}")
    bursts = []
    first = 0
    for ccd, count in enumerate(ccd_counts):
        if count < 0:
            raise ConfigError(f"CCD {ccd} has a negative alert count ({count})")
        if count:
            offset = first / rate_limit if rate_limit else 0.0
            bursts.append(Burst(ccd, first, count, offset))
        first += count
    return tuple(bursts)


def shutter_close_ns(cycle: int, cadence_s: float) -> int:
    """Shutter close of cycle ``cycle``, nanoseconds after the first one: fixed by the cadence,
    whatever the cycles before took."""
    return round(cycle * cadence_s * 1e9)


def intended_offset_ns(index: int, rate_limit: float | None) -> int:
    """When alert ``index`` of a cycle is due, nanoseconds after shutter close."""
    return round(index / rate_limit * 1e9) if rate_limit else 0


def send_seconds(n_alerts: int, rate_limit: float | None) -> float:
    """The least time a cycle can take under the rate limit (0: unlimited)."""
    return (n_alerts - 1) / rate_limit if rate_limit and n_alerts > 1 else 0.0


def id_stride(ids: Iterable[int]) -> int:
    """The smallest power of ten above the span of ``ids``: the step between two cycles' ids."""
    values = list(ids)
    if not values:
        return 1
    span = max(values) - min(values) + 1
    return int(10 ** len(str(span)))


def cycle_id_offset(cycle: int, stride: int, max_id: int) -> int:
    """What cycle ``cycle`` adds to every id. The offsets wrap round before an id would leave
    Avro's signed 64-bit long (after billions of cycles for Rubin-sized ids)."""
    distinct = max(1, (MAX_LONG - max_id) // stride + 1)
    return (cycle % distinct) * stride


# --------------------------------------------------------------------------- the ids in the bytes


def _read_long(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of an Avro long (zig-zag varint) at ``pos``."""
    shift = 0
    raw = 0
    while True:
        if pos >= len(buf):
            raise AlertbenchError("encoded alert ends inside a varint")
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise AlertbenchError("encoded alert has a varint longer than 10 bytes")


def encode_long(value: int) -> bytes:
    """An Avro long (zig-zag varint)."""
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


_FIXED_SIZE = {"null": 0, "boolean": 1, "float": 4, "double": 8}


def _skippable(node: Any) -> bool:
    """Whether :func:`_skip` can step over a value of this schema node (the kinds that come
    before the ids in every Rubin schema: primitives, unions and enums)."""
    if isinstance(node, list):
        return all(_skippable(branch) for branch in node)
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "enum":
            return True
        return kind != "record" and _skippable(kind)
    return node in _FIXED_SIZE or node in ("int", "long", "string", "bytes")


def _skip(node: Any, buf: memoryview, pos: int) -> int:
    """The position right after a value of ``node`` at ``pos`` (``_skippable`` nodes only)."""
    if isinstance(node, list):
        branch, pos = _read_long(buf, pos)
        if not 0 <= branch < len(node):
            raise AlertbenchError(f"encoded alert has union branch {branch} of {len(node)}")
        return _skip(node[branch], buf, pos)
    if isinstance(node, dict):
        if node.get("type") == "enum":
            return _read_long(buf, pos)[1]
        return _skip(node["type"], buf, pos)
    if node in _FIXED_SIZE:
        return pos + _FIXED_SIZE[node]
    value, pos = _read_long(buf, pos)
    return pos + value if node in ("string", "bytes") else pos


@dataclass(frozen=True)
class EncodedAlert:
    """A pre-encoded alert cut at its ids: ``chunks[i]`` comes before ``ids[i]``, ``tail``
    after the last, so another cycle's bytes are a join, not an encoding."""

    original: bytes
    chunks: tuple[bytes, ...]
    ids: tuple[int, ...]
    tail: memoryview

    @property
    def alert_id(self) -> int:
        return self.ids[0]

    def payload(self, id_offset: int = 0) -> bytes:
        """The alert with ``id_offset`` added to each of its ids."""
        if not id_offset:
            return self.original
        parts: list[bytes | memoryview] = []
        for chunk, value in zip(self.chunks, self.ids, strict=True):
            parts += [chunk, encode_long(value + id_offset)]
        parts.append(self.tail)
        return b"".join(parts)


class IdPatcher:
    """Finds the alert's own ids in Confluent-framed Rubin Avro bytes, for one schema.

    The walk is planned once from the schema: step over the top-level fields up to the alert's
    id (and ``alertId``/``diaSourceId`` if both), then into ``diaSource`` up to its
    ``diaSourceId``. A schema whose prefix holds anything but primitives, unions and enums is
    refused when the patcher is made, not half-way through a night.
    """

    def __init__(self, schema: AlertSchema) -> None:
        self.schema = schema
        steps: list[tuple[str, Any]] = []
        for field in schema.definition["fields"]:
            node = field["type"]
            if field["name"] in TOP_ID_FIELDS and node == "long":
                steps.append(("id", field["name"]))
            elif field["name"] == "diaSource" and isinstance(node, dict):
                for inner in node.get("fields", []):
                    if inner["name"] == "diaSourceId" and inner["type"] == "long":
                        steps.append(("id", "diaSource.diaSourceId"))
                        break
                    steps.append(("skip", inner["type"]))
                break
            else:
                steps.append(("skip", node))
        while steps and steps[-1][0] == "skip":
            steps.pop()
        if not any(kind == "id" for kind, _ in steps):
            raise ConfigError(f"alert schema {schema.version} has no alert id to vary per cycle")
        if not all(_skippable(node) for kind, node in steps if kind == "skip"):
            raise ConfigError(
                f"alert schema {schema.version}: a field before the alert's id is not a "
                "primitive, union or enum; the ids cannot be varied per cycle"
            )
        self.steps = tuple(steps)
        self.id_fields = tuple(name for kind, name in steps if kind == "id")

    def split(self, payload: bytes) -> EncodedAlert:
        view = memoryview(payload)
        pos, last = HEADER.size, 0
        chunks: list[bytes] = []
        ids: list[int] = []
        for kind, node in self.steps:
            if kind == "id":
                value, end = _read_long(view, pos)
                chunks.append(bytes(view[last:pos]))
                ids.append(value)
                pos = last = end
            else:
                pos = _skip(node, view, pos)
        if pos > len(view):
            raise AlertbenchError("encoded alert is shorter than its leading fields")
        return EncodedAlert(payload, tuple(chunks), tuple(ids), view[last:])


# --------------------------------------------------------------------------- the visit


@dataclass(frozen=True)
class PlayVisit:
    """One visit ready to replay: its alerts encoded once, in CCD order, and their grouping."""

    alerts: tuple[EncodedAlert, ...]
    ccd_counts: tuple[int, ...]
    content_type: str
    stride: int
    max_id: int

    def __post_init__(self) -> None:
        if not self.alerts:
            raise ConfigError("the visit has no alerts to play")
        if sum(self.ccd_counts) != len(self.alerts):
            raise ConfigError(
                f"the CCD counts add up to {sum(self.ccd_counts)}, the visit has "
                f"{len(self.alerts)} alerts"
            )

    def id_offset(self, cycle: int) -> int:
        return cycle_id_offset(cycle, self.stride, self.max_id)


def encode_visit(
    alerts: Iterable[Alert],
    codec: Serializer,
    *,
    ccd_counts: Sequence[int] | None = None,
    ccds: int = DEFAULT_CCDS,
    on_alert: Callable[[], None] | None = None,
) -> PlayVisit:
    """Encode ``alerts`` once with ``codec`` (a Rubin Avro serializer) and cut them at their ids.

    ``ccd_counts``: how many consecutive alerts each CCD has (the simulator's own grouping);
    without it the alerts are split evenly over ``ccds``.
    """
    encoded: list[EncodedAlert] = []
    patchers: dict[int, IdPatcher] = {}
    for alert in alerts:
        payload = codec.dumps(alert)
        schema_id = schema_id_of(payload)
        if schema_id is None:
            raise ConfigError(f"codec {codec.name!r} does not write Confluent-framed Rubin Avro")
        patcher = patchers.get(schema_id)
        if patcher is None:
            patcher = patchers[schema_id] = IdPatcher(schema_for_id(schema_id))
        encoded.append(patcher.split(payload))
        if on_alert is not None:
            on_alert()
    counts = tuple(ccd_counts) if ccd_counts is not None else split_evenly(len(encoded), ccds)
    all_ids = [value for alert in encoded for value in alert.ids]
    return PlayVisit(
        alerts=tuple(encoded),
        ccd_counts=counts,
        content_type=codec.content_type,
        stride=id_stride(all_ids),
        max_id=max(all_ids, default=0),
    )


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did; ``within_cadence``: every alert acknowledged before the next shutter
    close was due."""

    cycle: int
    t_shutter_ns: int
    sent: int
    acknowledged: int
    seconds: float
    late_s: float
    """How late the cycle started after its shutter close (the previous cycle overran)."""
    within_cadence: bool
    interrupted: bool = False

    def line(self, n_alerts: int, cadence_s: float) -> str:
        """The one line the command prints for this cycle."""
        where = " (stopped)" if self.interrupted else ""
        if self.within_cadence:
            verdict = f"within the {cadence_s:g} s cadence"
        else:
            verdict = f"NOT within the {cadence_s:g} s cadence"
        late = f", started {self.late_s:.2f} s late" if self.late_s >= 0.01 else ""
        return (
            f"cycle {self.cycle}{where}: {self.sent}/{n_alerts} alerts sent, "
            f"{self.acknowledged} acknowledged in {self.seconds:.2f} s{late}, {verdict}"
        )


@dataclass(frozen=True)
class PlaySummary:
    cycles: int
    sent: int
    acknowledged: int
    interrupted: bool

    @property
    def all_acknowledged(self) -> bool:
        return self.acknowledged == self.sent


def _acknowledged(publisher: Publisher, sent_total: int, left: int) -> int:
    """Acknowledged so far: the publisher's own count where it keeps one (Kafka's acks=all
    delivery reports), else what its flush says is no longer outstanding."""
    counters = publisher.counters()
    if "acknowledged" in counters:
        return int(counters["acknowledged"])
    return sent_total - left


def _wait_until(deadline_ns: int, stop: threading.Event) -> bool:
    """Sleep until ``deadline_ns`` (monotonic); False if a stop was asked for meanwhile."""
    while True:
        remaining = (deadline_ns - time.monotonic_ns()) / 1e9
        if stop.is_set():
            return False
        if remaining <= 0:
            return True
        stop.wait(min(remaining, WAIT_STEP_S))


def play(
    visit: PlayVisit,
    publisher: Publisher,
    *,
    cadence_s: float = DEFAULT_CADENCE_S,
    cycles: int | None = None,
    rate_limit: float | None = None,
    stop: threading.Event | None = None,
    on_cycle: Callable[[CycleReport], None] | None = None,
    flush_timeout: float | None = None,
) -> PlaySummary:
    """Replay ``visit`` through ``publisher`` every ``cadence_s`` seconds, ``cycles`` times
    (None: until ``stop`` is set). Each cycle is flushed before it is reported, so its line
    counts its own acknowledgements; ``stop`` ends the loop between two alerts, and what was
    sent is flushed before returning."""
    if not cadence_s > 0:
        raise ConfigError(f"the cadence must be above 0 s, not {cadence_s}")
    stop = stop or threading.Event()
    bursts = cycle_schedule(visit.ccd_counts, rate_limit)
    n_alerts = len(visit.alerts)
    timeout = flush_timeout if flush_timeout is not None else max(30.0, cadence_s)
    cadence_ns = round(cadence_s * 1e9)
    epoch0 = time.time_ns()
    mono0 = time.monotonic_ns()
    sent_total = acked_total = 0
    cycle = 0
    interrupted = False
    while cycles is None or cycle < cycles:
        t0 = shutter_close_ns(cycle, cadence_s)
        if not _wait_until(mono0 + t0, stop):
            interrupted = True
            break
        started = time.monotonic_ns()
        offset = visit.id_offset(cycle)
        sent = 0
        for burst in bursts:
            for index in range(burst.first, burst.first + burst.count):
                due = intended_offset_ns(index, rate_limit)
                if (rate_limit and not _wait_until(mono0 + t0 + due, stop)) or stop.is_set():
                    interrupted = True
                    break
                alert = visit.alerts[index]
                publisher.publish(
                    Envelope(
                        payload=alert.payload(offset),
                        content_type=visit.content_type,
                        alert_id=alert.alert_id + offset,
                        t_shutter_ns=epoch0 + t0,
                        t_intended_ns=epoch0 + t0 + due,
                        sequence=cycle * n_alerts + index,
                    )
                )
                sent += 1
            if interrupted:
                break
        left = publisher.flush(timeout)
        sent_total += sent
        acked_now = _acknowledged(publisher, sent_total, left)
        done = time.monotonic_ns()
        report = CycleReport(
            cycle=cycle,
            t_shutter_ns=epoch0 + t0,
            sent=sent,
            acknowledged=acked_now - acked_total,
            seconds=(done - started) / 1e9,
            late_s=max(0.0, (started - mono0 - t0) / 1e9),
            within_cadence=sent == n_alerts and left == 0 and done <= mono0 + t0 + cadence_ns,
            interrupted=interrupted,
        )
        acked_total = acked_now
        if on_cycle is not None:
            on_cycle(report)
        cycle += 1
        if interrupted:
            break
    left = publisher.flush(timeout)
    acked_total = _acknowledged(publisher, sent_total, left)
    return PlaySummary(cycle, sent_total, acked_total, interrupted)


# --------------------------------------------------------------------------- the cluster


def ensure_topic(transport: Any, partitions: int = 1, timeout: float = 10.0) -> bool:
    """Create the transport's topic if it is missing (DMTN-149's ``create-stream``); True if
    it was created. Uses every client setting of the transport (its ``config`` too, so TLS and
    ``-X`` reach the admin client), and turns a cluster that does not answer into one
    TransportError instead of a librdkafka traceback."""
    from alertbench.transports.base import MAX_FRAME
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({**transport.client_config(), **transport.config})
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        transport.raise_access_error()
        raise TransportError(
            f"no Kafka broker at {transport.bootstrap_servers} answers: {exc.args[0].str()}"
        ) from None
    if transport.topic in topics:
        return False
    future = admin.create_topics(
        [
            NewTopic(
                transport.topic,
                num_partitions=partitions,
                replication_factor=-1,  # the cluster's default (3 on a 3-node cluster)
                config={"max.message.bytes": str(MAX_FRAME)},
            )
        ],
        operation_timeout=timeout,
    )[transport.topic]
    try:
        future.result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            transport.raise_access_error()
            raise TransportError(f"cannot create topic {transport.topic!r}: {exc}") from None
        return False
    return True


# --------------------------------------------------------------------------- the local cluster


def local_kafka(state_path: Path | None = None) -> Any:
    """The ClusterState of the Kafka ``alertbench kafka start`` left running; ConfigError,
    naming the command to run, when there is none or it has stopped."""
    from alertbench.transports.servers import kafka_cluster as kc

    from alertbench.resources import cache_dir, pid_alive

    path = state_path or cache_dir() / LOCAL_STATE_FILE
    if not path.exists():
        raise ConfigError(
            "no local Kafka is running (no state file at "
            f"{path}): run 'alertbench kafka start', or give --bootstrap-servers"
        )
    state = kc.ClusterState.load(path)
    if not any(pid_alive(node.pid) for node in state.nodes):
        raise ConfigError(
            f"the local Kafka at {state.bootstrap_servers} has stopped: run "
            "'alertbench kafka start', or give --bootstrap-servers"
        )
    return state
