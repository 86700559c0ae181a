"""The measurement engine: ``run(RunSpec) -> RunResult``, the one publish/subscribe/measure loop.

Every benchmark is a caller of :func:`run`: the matrix (a burst per combination), max-rate (a
constant-rate step per probe), ``alertbench run`` (a workload's schedule), kafka-visit and the VTP
bench (bursts of pre-encoded payloads). A burst and a rate step are schedules like a workload's,
so a figure means the same thing in all of them (the definitions are in :mod:`.metrics`).

One run, in order:

1. the transport is prepared (a Kafka topic with ``partitions``), the publisher opened, then the
   subscribers: each in a process of its own by default (its own interpreter, so decoding does
   not share the publisher's GIL, as a broker's consumer would not), or as threads of this
   process; they read fan-out or shared consumption from the transport's Capabilities;
2. once every subscriber is subscribed (and the publisher can tell they are connected), the
   publisher sends alert ``i`` at its intended time ``t0 + offset[i]`` (a burst: as soon as it
   gets to it), encoding it then (codec in the loop) or cycling payloads encoded before the
   clock started (pre-encoded: the transport measured alone);
3. each subscriber decodes what it gets (in codec mode) and notes, per alert id, when it had it;
   a payload that will not decode is counted, never fatal. It stops when it has every alert (or,
   sharing a stream, when the subscribers together have), or after ``idle_timeout`` s of silence
   once the publisher is done;
4. latency is computed here, from the publisher's own record of every alert's intended time to
   each receipt (one clock: ``time.time_ns()``), whatever the transport carries in its headers
   (VTP carries only the packet).

CPU seconds and peak memory are reported per role: the publisher's process (which also holds
subscriber threads and in-process servers such as gRPC's), each subscriber process, and every
server process named by pid (Kafka's JVMs).

``publishers`` above 1 runs that many publisher processes instead of publishing here, as
Rubin's per-CCD workers publish in parallel: publisher ``k`` of ``N`` sends alerts ``k, k + N,
k + 2N, ...`` (disjoint ids, every alert once, each at its intended time on the one clock from a
start this process gives them all), so the subscribers' accounting is the same as with one.
Each reports its CPU seconds, peak memory, acknowledgements and counters. Only a transport
whose publishers join one stream through its broker takes several (``several_publishers``: Kafka);
a tcp, zmq or VTP publisher binds the stream's port, so a second one has no stream to join.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from alertbench.harness.metrics import (
    LSST_RATE,
    VISIT_BUDGET_S,
    Tally,
    is_late,
    own_cpu_seconds,
    own_peak_rss_mb,
    pid_cpu_seconds,
    pid_peak_rss_mb,
    tally_delivery,
    thread_cpu_seconds,
)
from alertbench.harness.pool import alert_pool, with_alert_id
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer
from alertbench.transports.base import (
    TRANSPORTS,
    Envelope,
    LocalStream,
    Start,
    get_transport,
    kind_table,
    local_stream,
    parse_url,
    transport_class,
)

from alertbench.errors import AlertbenchError, ConfigError, TransportError
from alertbench.registry import resolve

PAYLOAD_MODES = ("codec", "pre-encoded")
SUBSCRIBER_ROLES = ("process", "thread")
LEAD_NS = 100_000_000
"""A paced schedule starts this long after the subscribers are ready, so setting up the first
send is not counted as lateness."""
POLL_S = 0.2
"""How long a subscriber waits in one poll before it looks at its stop conditions again."""
FLUSH_S = 120.0
READY_S = 120.0
CONNECT_S = 15.0
FINISH_GRACE_S = 600.0
"""How long after the publisher is done a subscriber may keep reporting a backlog before it is
told to stop (what it has by then is kept; the rest counts as lost)."""
DEFAULT_PARTITIONS = 3
"""Partitions of a topic a run creates when nobody says how many (a Kafka topic is created
with replication factor 1 unless told otherwise)."""
_BINDS_A_PORT = ("tcp", "zmq+tcp", "vtp")
"""Schemes whose publisher is the stream's server: its subscribers connect to its port."""


# -- what to run ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Schedule:
    """When each alert is meant to be sent: ``offsets_s`` from the start, or a burst (None).

    In a burst every alert is intended for the moment the publisher gets to it (before it is
    encoded), so its latency is the alert's own trip, not the queue in front of the publisher;
    nothing in a burst is late. A paced schedule's alerts are intended for fixed times, and an
    alert sent after its time carries that delay in its latency.
    """

    name: str
    count: int
    offsets_s: np.ndarray | None = None

    @classmethod
    def burst(cls, count: int) -> Schedule:
        return cls(f"burst of {count}", count)

    @classmethod
    def constant_rate(cls, rate: float, seconds: float) -> Schedule:
        """``rate`` alerts/s, evenly spaced, for ``seconds`` (at least one alert)."""
        if rate <= 0 or seconds <= 0:
            raise ConfigError(
                f"a constant rate needs rate > 0 and seconds > 0, not {rate}, {seconds}"
            )
        count = max(1, int(rate * seconds))
        return cls(f"{rate:g}/s for {seconds:g} s", count, np.arange(count) / rate)

    @classmethod
    def from_workload(cls, workload: Any) -> Schedule:
        """A workload file's schedule (visits, cadence, per-CCD bursts, compression)."""
        offsets = np.array([offset for _, offset in workload.schedule()], dtype=np.float64)
        return cls(f"workload {workload.name}", len(offsets), offsets)

    @property
    def paced(self) -> bool:
        return self.offsets_s is not None

    @property
    def duration_s(self) -> float:
        return float(self.offsets_s[-1]) if self.offsets_s is not None and self.count else 0.0

    @property
    def offered_rate(self) -> float:
        """Alerts/s the schedule offers (0 for a burst: as fast as the publisher goes)."""
        return self.count / self.duration_s if self.duration_s > 0 else 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "paced" if self.paced else "burst",
            "count": self.count,
            "duration_s": self.duration_s,
            "offered_alerts_per_second": self.offered_rate,
        }


@dataclass(frozen=True)
class RunSpec:
    """Everything one run depends on; the result records it back.

    ``transport`` is a URL, or a registered kind (``tcp``, ``kafka``, ...: see
    :func:`~alertbench.transports.base.kinds`) for which the transport's local-stream recipe
    starts a stream for this run alone (``stream_options`` go to that recipe).

    ``payload``: ``codec`` encodes each alert as it is sent and decodes it at each subscriber;
    ``pre-encoded`` cycles payloads encoded before the clock and does not decode
    (``unique_payloads`` encodes every alert with its own id beforehand, for transports that
    refuse repeated bytes). ``payloads`` are the caller's own, already encoded with
    ``serializer``: payload ``i`` is sent as alert ``i`` (cycled if there are fewer), so a
    suite can send the very same packets through several transports without encoding them
    again. ``wait_for_subscribers(n)`` is for a server the publisher cannot ask (Comet): it
    returns once ``n`` subscribers are connected.
    """

    transport: str
    serializer: str = "avro"
    schedule: Schedule = field(default_factory=lambda: Schedule.burst(1000))
    payload: str = "codec"
    subscribers: int = 1
    subscriber_role: str = "process"
    idle_timeout: float = 30.0
    pool_size: int = 200
    seed: int = 1
    cutout_fraction: float = 1.0
    unique_payloads: bool = False
    payloads: Sequence[bytes] | None = field(default=None, repr=False)
    serializer_options: Mapping[str, Any] = field(default_factory=dict)
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    stream_options: Mapping[str, Any] = field(default_factory=dict)
    partitions: int = DEFAULT_PARTITIONS
    server_pids: tuple[int, ...] = ()
    wait_for_subscribers: Callable[[int], None] | None = None
    label: str = ""
    publishers: int = 1
    """Publisher processes sharing the schedule (1: this process publishes; see the module
    docstring), for transports that declare ``several_publishers``."""

    def __post_init__(self) -> None:
        if self.payload not in PAYLOAD_MODES:
            raise ConfigError(f"payload must be one of {PAYLOAD_MODES}, not {self.payload!r}")
        if self.subscriber_role not in SUBSCRIBER_ROLES:
            raise ConfigError(
                f"subscriber_role must be one of {SUBSCRIBER_ROLES}, not {self.subscriber_role!r}"
            )
        for name in ("subscribers", "pool_size", "partitions", "publishers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be positive, not {self.idle_timeout}")
        if self.schedule.count < 1:
            raise ConfigError("a run sends at least one alert")
        if self.payloads is not None and (self.payload != "pre-encoded" or not self.payloads):
            raise ConfigError("payloads are pre-encoded (payload='pre-encoded'), at least one")


@dataclass
class RunResult:
    """One run's figures, by :mod:`.metrics`' definitions; ``asdict`` gives a results row.

    Field names are the keys the published results.json files use (alerts_sent, latency_us,
    ...), so old and new rows read alike.
    """

    transport_url: str
    serializer: str
    payload: str
    schedule: dict[str, Any]
    subscriber_role: str
    subscribers: int
    fanout: bool
    capabilities: dict[str, Any]
    options: dict[str, Any]
    alerts_sent: int
    alerts_received: int
    alerts_received_per_subscriber: list[int]
    lost: int
    lost_per_subscriber: list[int]
    duplicates: int
    decode_errors: int
    decode_error_examples: list[str]
    unexpected: int
    transport_errors: int
    sent_behind_schedule: int
    late_fraction: float
    unacknowledged: int
    alerts_published: int
    """Alerts handed to the transport (fewer than ``alerts_sent`` when publishing was
    aborted)."""
    acknowledged: int | None
    """Alerts the transport acknowledged by id (None where it does not say which)."""
    lost_acknowledged: int | None
    """Acknowledged alerts some subscriber never received: for a durable transport, alerts
    lost although the publisher was told they were safe (None: no per-id acknowledgements)."""
    aborted: str
    """Why publishing stopped early (a server lost mid-run), or ""."""
    payload_bytes: int
    bytes_per_alert: float
    publish_seconds: float
    end_to_end_seconds: float
    alerts_per_second: float
    delivered_alerts_per_second: float
    offered_alerts_per_second: float
    megabytes_per_second: float
    latency_us: dict[str, float]
    latency_cdf_us: list[list[float]]
    latency_histogram: dict[str, Any]
    latency_out_of_range: int
    """Latencies outside the histogram's range (over 1 h, or negative: a clock fault), counted
    and clamped to its edge, never dropped (details in ``latency_histogram``)."""
    within_60s_fraction: float
    cpu_seconds: float
    """The publisher's process (with any subscriber threads and in-process servers) plus every
    subscriber process."""
    server_cpu_seconds: float
    """External server processes (``server_pids``: Kafka's JVMs, Comet)."""
    cpu_seconds_per_alert: float
    """All of the above per alert delivered to one subscriber."""
    cores_per_stream_at_lsst_rate: float
    processes: dict[str, Any]
    subscriber_peak_rss_mb: float | None
    """The largest subscriber process's peak memory (None when subscribers are threads)."""
    client_wire_bytes: int
    """Bytes the publisher and subscribers moved on their sockets, where the transport counts
    them (VTP: events, acks and iamalives); 0 where it does not."""
    label: str = ""
    publishers: int = 1
    """Publisher processes (above 1: each is in ``processes["publishers"]``)."""

    def row(self) -> dict[str, Any]:
        return asdict(self)


# -- the stream: a URL as given, or a kind's local stream ----------------------------------


@contextlib.contextmanager
def open_stream(spec: RunSpec, shared: Any = None) -> Iterator[tuple[str, LocalStream | None]]:
    """``(url, stream)``: ``spec.transport`` as it is when it is a URL (stream None), or a fresh
    local stream of that kind from the transport's own recipe (:func:`local_stream`), started
    for this run and stopped after it.

    ``shared`` is what the transport's ``shared_resources()`` gave, when the caller keeps it
    across runs (one Kafka cluster for a whole matrix, a topic per run); without it a kind that
    needs a server starts one of its own. ``spec.stream_options`` go to the recipe (Kafka:
    ``bootstrap_servers`` to use a running cluster); a recipe that takes ``partitions`` gets
    ``spec.partitions``, so its topic is created with them.
    """
    if "://" in spec.transport:
        if spec.stream_options:
            raise ConfigError("stream_options are for a transport kind, not a URL")
        yield spec.transport, None
        return
    recipe = transport_class(spec.transport).local_stream
    options = dict(spec.stream_options)
    accepted = inspect.signature(recipe).parameters
    if "partitions" in accepted:
        options.setdefault("partitions", spec.partitions)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        raise ConfigError(f"the {spec.transport} local stream takes no option {', '.join(unknown)}")
    with local_stream(spec.transport, shared=shared, **options) as stream:
        yield stream.url, stream


def several_publishers_refusal(target: str, publishers: int) -> str | None:
    """Why ``publishers`` publisher processes cannot share the stream of ``target`` (a URL or
    a kind), in one line; None when they can (one always can)."""
    if publishers <= 1:
        return None
    if "://" in target:
        scheme = parse_url(target)[0]
        cls: Any = resolve(TRANSPORTS, scheme, "transport for scheme", AlertbenchError)
    else:
        transport_class(target)  # an unknown kind: a did-you-mean
        cls, scheme = kind_table()[target]
    if getattr(cls, "several_publishers", False):
        return None
    if not cls.capabilities.interprocess:
        why = "lives in one process, so a publisher process of its own cannot reach it"
    elif scheme in _BINDS_A_PORT:
        why = (
            "binds the stream's port (its subscribers connect to it), so a second one has "
            "no stream to join"
        )
    else:
        why = "does not declare that several publishers share one stream"
    return (
        f"producers {publishers}: several publisher processes need a transport whose "
        f"publishers join one stream through its broker (kafka); a {scheme} publisher {why}"
    )


# -- the subscriber: one loop, run as a process or a thread ----------------------------------


@dataclass(frozen=True)
class _Job:
    """What a subscriber needs, picklable: registry targets travel resolved, so a child
    process builds the same transport and serializer classes as this one, registered or not."""

    index: int
    url: str
    transport_target: str
    transport_options: dict[str, Any]
    subscriber_options: dict[str, Any]
    codec: tuple[str, str, dict[str, Any]] | None
    n: int
    shared: bool
    idle_timeout: float
    thread: bool


class _Counter:
    """The shared-stream counter for subscriber threads (a process gets a multiprocessing.Value)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


def _build(target: str, *args: Any, **kwargs: Any) -> Any:
    return resolve({"x": target}, "x", "class", AlertbenchError)(*args, **kwargs)


def _counters(client: Any) -> dict[str, int]:
    """A publisher's or subscriber's ``counters()`` (wire bytes, duplicates, errors...), the
    numbers only, so they travel back from a subscriber process and into results.json."""
    return {k: int(v) for k, v in client.counters().items() if isinstance(v, int | float)}


receipt_clock_ns: Callable[[], int] = time.time_ns
"""The clock a subscriber reads when it has an alert: the publisher's clock (one clock for
every process on the machine). A module attribute so a test can skew it for subscriber
threads and see a clock fault counted (:class:`~.metrics.LatencyHistogram`)."""


def _subscribe(
    job: _Job, ready: Any, ok: Any, stop: Any, published: Any, shared: Any, put: Callable
) -> None:
    """The subscriber role: subscribe, then note every alert until done (see module doc)."""
    cpu = thread_cpu_seconds if job.thread else own_cpu_seconds
    try:
        codec = _build(job.codec[1], **job.codec[2]) if job.codec else None
        transport = _build(job.transport_target, job.url, **job.transport_options)
        subscriber = transport.open_subscriber(Start.latest(), **job.subscriber_options)
    except Exception as exc:  # reported to the parent, which raises it
        put({"index": job.index, "error": f"could not subscribe: {type(exc).__name__}: {exc}"})
        ready.set()
        return
    cpu0 = cpu()
    ok.value = 1
    ready.set()
    tally = Tally(job.n)
    last = time.monotonic()
    published_at: float | None = None
    error = None
    try:
        while not stop.is_set():
            if (shared.value if job.shared else tally.unique) >= job.n:
                break
            item = subscriber.poll(POLL_S)
            now = time.monotonic()
            if item is None:
                if published.is_set():
                    published_at = published_at or now
                    if now - max(last, published_at) > job.idle_timeout:
                        break
                continue
            last = now
            envelope = item.envelope
            if codec is not None:
                try:
                    codec.loads(envelope.payload)
                except Exception as exc:  # counted, never fatal: one bad packet is not a stop
                    reason = f"{item.origin or job.url} alert {envelope.alert_id}: "
                    new = tally.undecodable(
                        envelope.alert_id, reason + f"{type(exc).__name__}: {exc}"
                    )
                    if new and job.shared:
                        with shared.get_lock():
                            shared.value += 1
                    continue
            if tally.arrived(envelope.alert_id, receipt_clock_ns()) and job.shared:
                with shared.get_lock():
                    shared.value += 1
    except Exception as exc:  # a transport failure: the run is invalid, the parent raises it
        error = f"subscriber {job.index} failed: {type(exc).__name__}: {exc}"
    spent = cpu() - cpu0
    counters = _counters(subscriber)
    with contextlib.suppress(Exception):
        subscriber.close()

    put(
        {
            "index": job.index,
            "error": error,
            "received_ns": tally.received_ns,
            "duplicates": tally.duplicates + counters.get("duplicates", 0),
            "decode_errors": tally.decode_errors,
            "examples": tally.examples,
            "unexpected": tally.unexpected,
            "transport_errors": counters.get("errors", 0),
            "counters": counters,
            "cpu_seconds": spent,
            "peak_rss_mb": None if job.thread else own_peak_rss_mb(),
            "pid": os.getpid(),
        }
    )


def _child(
    job: _Job, ready: Any, ok: Any, stop: Any, published: Any, shared: Any, out: Any
) -> None:
    # Every role runs under the allocator policy the native codec sets when it loads (glibc
    # keeps freed heap instead of mapping each ~134 KB payload afresh), whether or not this
    # one decodes: a pre-encoded subscriber without it spent ~50 µs an alert faulting pages
    # in for the payload bytes its transport hands out, half its CPU, which is the
    # allocator's cost and not the transport's.
    from alertbench.refimpl import _native  # noqa: F401

    _subscribe(job, ready, ok, stop, published, shared, out.put)


_SPAWN = multiprocessing.get_context("spawn")


class _Role:
    """One subscriber, as a process (default) or a thread; the same loop either way."""

    def __init__(self, job: _Job, stop: Any, published: Any, shared: Any) -> None:
        self.job = job
        self._stop = stop
        if job.thread:
            self._ready: Any = threading.Event()
            self._ok: Any = _Counter()
            self._out: Any = queue.Queue()
            self._worker: Any = threading.Thread(
                target=_subscribe,
                args=(job, self._ready, self._ok, stop, published, shared, self._out.put),
                name=f"subscriber-{job.index}",
                daemon=True,
            )
        else:
            self._ready = _SPAWN.Event()
            self._ok = _SPAWN.Value("b", 0)
            self._out = _SPAWN.Queue()
            self._worker = _SPAWN.Process(
                target=_child,
                args=(job, self._ready, self._ok, stop, published, shared, self._out),
                name=f"alertbench-subscriber-{job.index}",
                daemon=True,
            )
        self._worker.start()

    def wait_ready(self, timeout: float = READY_S) -> None:
        if not self._ready.wait(timeout):
            raise TransportError(
                f"subscriber {self.job.index} did not subscribe within {timeout:g} s"
            )
        if not self._ok.value:
            raise TransportError(self._out.get(timeout=30)["error"])

    def finish(self, timeout: float) -> dict[str, Any]:
        """Its report; past ``timeout`` it is told to stop and reports what it has."""
        try:
            report = self._out.get(timeout=timeout)
        except queue.Empty:
            self._stop.set()
            try:
                report = self._out.get(timeout=30)
            except queue.Empty:
                raise TransportError(f"subscriber {self.job.index} did not report") from None
            report["stopped"] = True
        self._worker.join(30)
        return report

    def close(self) -> None:
        self._worker.join(5)
        if not self.job.thread and self._worker.is_alive():
            self._worker.kill()
            self._worker.join(5)


# -- the publisher ----------------------------------------------------------------------------


def _payloads(spec: RunSpec, codec: Any, first: int = 0, step: int = 1) -> Callable[[int], bytes]:
    """Payload of alert ``i``: encoded now (codec mode) or looked up (pre-encoded, done here,
    before the clock starts). ``first``/``step``: the share of the alerts asked for (a
    publisher process's), so unique payloads are encoded for those alone."""
    if spec.payloads is not None:
        given = spec.payloads
        return lambda i: given[i % len(given)]
    pool = alert_pool(spec.pool_size, spec.seed, spec.cutout_fraction)
    size = len(pool)
    if spec.payload == "codec":
        return lambda i: codec.dumps(with_alert_id(pool[i % size], i))
    if spec.unique_payloads:
        if step > 1:
            mine = {
                i: codec.dumps(with_alert_id(pool[i % size], i))
                for i in range(first, spec.schedule.count, step)
            }
            return mine.__getitem__
        encoded = [
            codec.dumps(with_alert_id(pool[i % size], i)) for i in range(spec.schedule.count)
        ]
    else:
        encoded = [codec.dumps(a) for a in pool]
    count = len(encoded)
    return lambda i: encoded[i % count]


@dataclass
class _Published:
    t0: int
    late: int
    payload_bytes: int
    seconds: float
    unacknowledged: int
    published: int
    aborted: str = ""
    """Why publishing stopped before the schedule's end (a transport failure), else ""."""


def _publish(
    publisher: Any,
    schedule: Schedule,
    payload_for: Callable[[int], bytes],
    content_type: str,
    intended: np.ndarray,
    progress: Any,
    label: str,
    *,
    first: int = 0,
    step: int = 1,
    t0: int | None = None,
    tick: Callable[[int], None] | None = None,
) -> _Published:
    """Send every alert at its intended time; record that time in ``intended``.

    A publisher process sends its share, alerts ``first, first + step, ...`` (its k-th in
    ``intended[k]``), from the start ``t0`` every process was given; ``tick(k)`` tells the
    parent how far it is."""
    n = schedule.count
    task = progress.add_task(label, total=n) if progress is not None else None
    offsets_ns = None if schedule.offsets_s is None else (schedule.offsets_s * 1e9).astype(np.int64)
    late = payload_bytes = 0
    if t0 is None:
        t0 = time.time_ns() + (LEAD_NS if offsets_ns is not None else 0)
    elif offsets_ns is None and t0 > time.time_ns():
        time.sleep((t0 - time.time_ns()) / 1e9)  # a burst shared out: every process at once
    started = time.perf_counter()
    published = 0
    aborted = ""
    for k, i in enumerate(range(first, n, step)):
        if offsets_ns is None:
            due = time.time_ns()
        else:
            due = t0 + int(offsets_ns[i])
            wait = due - time.time_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        payload = payload_for(i)
        if offsets_ns is not None and is_late(due, time.time_ns()):
            late += 1
        intended[k] = due
        try:
            publisher.publish(
                Envelope(
                    payload=payload,
                    content_type=content_type,
                    alert_id=i,
                    t_shutter_ns=t0,
                    t_intended_ns=due,
                    sequence=i,
                )
            )
        except TransportError as exc:
            if published == 0:
                raise  # the run never started (refused, unreachable): the caller's mistake
            # A server lost mid-run is a result to account for, not a crash: the run stops
            # publishing, and what was acknowledged, delivered and lost is still measured.
            aborted = f"publishing stopped at alert {i:,} of {n:,}: {exc}"
            break
        published += 1
        payload_bytes += len(payload)
        if task is not None and i % 50 == 0:
            progress.update(task, completed=i)
        if tick is not None and k % 50 == 0:
            tick(k)
    try:
        left = int(publisher.flush(FLUSH_S) or 0)
    except TransportError as exc:
        left = published  # nothing known to be acknowledged beyond what the counters say
        aborted = aborted or f"flush failed: {exc}"
    if task is not None:
        progress.update(task, completed=n)
    seconds = time.perf_counter() - started
    return _Published(t0, late, payload_bytes, seconds, left, published, aborted)


# -- several publisher processes ----------------------------------------------------------------


@dataclass(frozen=True)
class _PublisherJob:
    """What publisher process ``index`` of ``of`` needs, picklable (the spec without its
    callable; registry targets resolved, as a subscriber's are)."""

    index: int
    of: int
    spec: RunSpec
    url: str
    transport_target: str
    codec: tuple[str, str, dict[str, Any]]
    subscribers: int
    ask_publisher: bool
    """Whether it asks its own publisher for the subscribers (no broker or caller counts them)."""


def _publisher_child(job: _PublisherJob, sync: dict[str, Any], out: Any) -> None:
    """A publisher process: open, wait for the start, publish its share, report."""
    from alertbench.refimpl import _native  # noqa: F401  (the subscribers' allocator policy)

    k, spec = job.index, job.spec
    start, ok = sync["start"], sync["ok"]
    try:
        codec = _build(job.codec[1], **job.codec[2])
        transport = _build(job.transport_target, job.url, **spec.transport_options)
        publisher = transport.open_publisher()
        payload_for = _payloads(spec, codec, k, job.of)
    except Exception as exc:  # reported to the parent, which raises it
        out.put({"index": k, "error": f"publisher {k} could not open: {type(exc).__name__}: {exc}"})
        sync["ready"][k].set()
        return
    ok[k] = 1
    sync["ready"][k].set()
    try:
        sync["subscribed"].wait()
        if start.value < 0:
            return  # the run was abandoned before it started
        if job.ask_publisher:
            publisher.wait_for_subscribers(job.subscribers, timeout=CONNECT_S)
        sync["counted"][k].set()
        sync["go"].wait()
        if start.value < 0:
            return
        done = sync["done"]
        intended = np.zeros(len(range(k, spec.schedule.count, job.of)), dtype=np.int64)
        cpu0 = own_cpu_seconds()
        report: dict[str, Any] = {"index": k, "error": None}
        try:
            sent = _publish(
                publisher, spec.schedule, payload_for, codec.content_type, intended, None, "",
                first=k, step=job.of, t0=start.value, tick=lambda i: done.__setitem__(k, i),
            )  # fmt: skip
        except TransportError as exc:  # refused before its first alert went
            report["error"] = f"publisher {k}: {exc}"
            sent = _Published(start.value, 0, 0, 0.0, 0, 0, str(exc))
        ids = getattr(publisher, "acknowledged_ids", None)
        report.update(
            pid=os.getpid(),
            alerts=int(intended.size),
            intended=intended,
            sent=sent,
            acked=None if ids is None else list(ids()),
            counters=_counters(publisher),
            cpu_seconds=own_cpu_seconds() - cpu0,
            peak_rss_mb=own_peak_rss_mb(),
        )
        out.put(report)
    finally:
        with contextlib.suppress(Exception):
            publisher.close()


class _Publishers:
    """``spec.publishers`` publisher processes, with the face of one publisher for the run:
    ``counters()``, ``acknowledged_ids()`` (where every one of them keeps them), ``close()``."""

    def __init__(self, spec: RunSpec, url: str, ask_publisher: bool) -> None:
        n = self.count = spec.publishers
        codec = (spec.serializer, SERIALIZERS[spec.serializer], dict(spec.serializer_options))
        bare = dataclasses.replace(spec, wait_for_subscribers=None)
        self._sync: dict[str, Any] = {
            "ready": [_SPAWN.Event() for _ in range(n)],
            "counted": [_SPAWN.Event() for _ in range(n)],
            "ok": _SPAWN.Array("b", n),
            "done": _SPAWN.Array("q", n),
            "subscribed": _SPAWN.Event(),
            "go": _SPAWN.Event(),
            "start": _SPAWN.Value("q", 0),
        }
        self._out: Any = _SPAWN.Queue()
        self._reports: list[dict[str, Any]] = []
        self.acknowledged_ids: Callable[[], list[int]] | None = None
        self._workers = []
        for k in range(n):
            job = _PublisherJob(
                k, n, bare, url, TRANSPORTS[parse_url(url)[0]], codec, spec.subscribers,
                ask_publisher,
            )  # fmt: skip
            worker = _SPAWN.Process(
                target=_publisher_child,
                args=(job, self._sync, self._out),
                name=f"alertbench-publisher-{k}",
                daemon=True,
            )
            worker.start()
            self._workers.append(worker)

    def _raise_if_failed(self) -> None:
        bad = [k for k in range(self.count) if not self._sync["ok"][k]]
        if bad:
            raise TransportError(self._out.get(timeout=30)["error"])

    def wait_ready(self, timeout: float = READY_S) -> None:
        for k, ready in enumerate(self._sync["ready"]):
            if not ready.wait(timeout):
                raise TransportError(f"publisher {k} did not open within {timeout:g} s")
        self._raise_if_failed()

    def wait_for_subscribers(self) -> None:
        """Each publisher asks its own for the subscribers, where it is told to."""
        self._sync["subscribed"].set()
        for k, counted in enumerate(self._sync["counted"]):
            if not counted.wait(CONNECT_S + 30):
                raise TransportError(f"publisher {k} did not see the subscribers connect")

    def publish(self, progress: Any, label: str, intended: np.ndarray) -> _Published:
        """Start them all at once (paced or burst: ``LEAD_NS`` from now) and gather them."""
        n = intended.size
        task = progress.add_task(label, total=n) if progress is not None else None
        t0 = time.time_ns() + LEAD_NS
        self._sync["start"].value = t0
        self._sync["go"].set()
        reports: dict[int, dict[str, Any]] = {}
        while len(reports) < self.count:
            try:
                report = self._out.get(timeout=0.5)
                reports[report["index"]] = report
            except queue.Empty:
                gone = [
                    k for k, w in enumerate(self._workers)
                    if k not in reports and w.exitcode is not None
                ]  # fmt: skip
                if gone:
                    with contextlib.suppress(queue.Empty):
                        report = self._out.get(timeout=5)
                        reports[report["index"]] = report
                        continue
                    k = gone[0]
                    raise TransportError(
                        f"publisher {k} exited with status {self._workers[k].exitcode} "
                        "without reporting"
                    ) from None
            if task is not None:
                progress.update(task, completed=sum(self._sync["done"]))
        if task is not None:
            progress.update(task, completed=n)
        self._reports = [reports[k] for k in range(self.count)]
        sents = [r["sent"] for r in self._reports]
        errors = [r["error"] for r in self._reports if r["error"]]
        if errors and not sum(s.published for s in sents):
            raise TransportError("; ".join(errors))  # the run never started
        for r in self._reports:
            intended[r["index"] :: self.count] = r["intended"]
        if all(r["acked"] is not None for r in self._reports):
            acked = [i for r in self._reports for i in r["acked"]]
            self.acknowledged_ids = lambda: acked
        return _Published(
            t0=t0,
            late=sum(s.late for s in sents),
            payload_bytes=sum(s.payload_bytes for s in sents),
            seconds=max(s.seconds for s in sents),
            unacknowledged=sum(s.unacknowledged for s in sents),
            published=sum(s.published for s in sents),
            aborted=next((s.aborted for s in sents if s.aborted), ""),
        )

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self._reports:
            for key, value in r["counters"].items():
                total[key] = total.get(key, 0) + value
        return total

    def processes(self) -> list[dict[str, Any]]:
        """Each publisher process: its share, CPU seconds, peak memory, what it sent."""
        return [
            {
                "index": r["index"],
                "pid": r["pid"],
                "alerts": r["alerts"],
                "published": r["sent"].published,
                "unacknowledged": r["sent"].unacknowledged,
                "sent_behind_schedule": r["sent"].late,
                "aborted": r["sent"].aborted,
                "cpu_seconds": r["cpu_seconds"],
                "peak_rss_mb": r["peak_rss_mb"],
                "counters": r["counters"],
            }
            for r in self._reports
        ]

    def close(self) -> None:
        if not self._sync["go"].is_set():
            self._sync["start"].value = -1  # abandoned before the start: publish nothing
            self._sync["subscribed"].set()
            self._sync["go"].set()
        for worker in self._workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
                worker.join(5)


def _wait_for_subscribers(
    spec: RunSpec, publisher: Any, stream: LocalStream | None, n: int
) -> None:
    """Return once ``n`` subscribers are in place: asked of the spec's callable (a server no
    one can ask, such as Comet), else of the local stream (whose broker counts them where the
    publisher cannot: VTP, gRPC), else of the publisher."""
    if spec.wait_for_subscribers is not None:
        spec.wait_for_subscribers(n)
    elif stream is not None:
        stream.wait_for_subscribers(publisher, n, timeout=CONNECT_S)
    else:
        publisher.wait_for_subscribers(n, timeout=CONNECT_S)


# -- the run ----------------------------------------------------------------------------------


def run(spec: RunSpec, progress: Any = None, *, shared: Any = None) -> RunResult:
    """Run ``spec`` once and measure it (see the module docstring for the sequence).

    ``shared``: the transport's shared resources when ``spec.transport`` is a kind and the
    caller keeps them across runs (see :func:`open_stream`)."""
    with open_stream(spec, shared) as (url, stream):
        pids = [*spec.server_pids, *(stream.server_pids if stream is not None else [])]
        return _run(spec, url, stream, pids, progress)


def _run(
    spec: RunSpec, url: str, stream: LocalStream | None, server_pids: list[int], progress: Any
) -> RunResult:
    codec = get_serializer(spec.serializer, **spec.serializer_options)
    transport = get_transport(url, **spec.transport_options)
    caps = transport.capabilities
    if not caps.carries(codec.content_type):
        raise ConfigError(
            f"{url} does not carry {codec.content_type} ({spec.serializer}); it carries "
            + ", ".join(caps.content_types)
        )
    if spec.subscriber_role == "process" and not caps.interprocess:
        raise ConfigError(f"{url}: subscribers of this transport must be threads of this process")
    refusal = several_publishers_refusal(url, spec.publishers)
    if refusal:
        raise ConfigError(refusal)
    transport.prepare(spec.partitions)
    fanout = bool(caps.fanout)
    n = spec.schedule.count
    payload_for = _payloads(spec, codec)
    thread = spec.subscriber_role == "thread"
    scheme = parse_url(url)[0]
    jobs = [
        _Job(
            index=k,
            url=url,
            transport_target=TRANSPORTS[scheme],
            transport_options=dict(spec.transport_options),
            subscriber_options=dict(stream.subscriber_options) if stream is not None else {},
            codec=(
                (spec.serializer, SERIALIZERS[spec.serializer], dict(spec.serializer_options))
                if spec.payload == "codec"
                else None
            ),
            n=n,
            shared=not fanout,
            idle_timeout=spec.idle_timeout,
            thread=thread,
        )
        for k in range(spec.subscribers)
    ]
    make_event = threading.Event if thread else _SPAWN.Event
    stop, published = make_event(), make_event()
    shared = _Counter() if thread else _SPAWN.Value("q", 0)
    intended = np.zeros(n, dtype=np.int64)
    servers0 = {pid: pid_cpu_seconds(pid) or 0.0 for pid in server_pids}
    label = spec.label or f"{url} x {spec.serializer}"
    several = spec.publishers > 1
    publisher: Any
    counted = spec.wait_for_subscribers is not None or (
        stream is not None and stream.counter is not None
    )  # by the caller or the broker; else the publishers count them
    if several:
        publisher = _Publishers(spec, url, ask_publisher=not counted)
    else:
        publisher = transport.open_publisher()
    roles: list[_Role] = []
    try:
        if several:
            publisher.wait_ready()
        roles = [_Role(job, stop, published, shared) for job in jobs]
        for role in roles:
            role.wait_ready()
        if several:
            if counted:
                _wait_for_subscribers(spec, None, stream, len(roles))
            publisher.wait_for_subscribers()
        else:
            _wait_for_subscribers(spec, publisher, stream, len(roles))
        cpu0 = own_cpu_seconds()
        if several:
            sent = publisher.publish(progress, label, intended)
        else:
            sent = _publish(
                publisher, spec.schedule, payload_for, codec.content_type, intended, progress,
                label,
            )  # fmt: skip
        published.set()
        reports = [role.finish(spec.idle_timeout + FINISH_GRACE_S) for role in roles]
        publisher_cpu = own_cpu_seconds() - cpu0
    finally:
        stop.set()
        published.set()
        for role in roles:
            role.close()
        with contextlib.suppress(Exception):
            publisher.close()
    failed = [r["error"] for r in reports if r.get("error")]
    if failed:
        raise TransportError("; ".join(failed))
    servers = [
        {
            "pid": pid,
            "cpu_seconds": (pid_cpu_seconds(pid) or 0.0) - servers0[pid],
            "peak_rss_mb": pid_peak_rss_mb(pid),
        }
        for pid in server_pids
    ]
    options = {**transport.resolved_options(), "unacknowledged": sent.unacknowledged}
    return _result(spec, url, caps, fanout, options, intended, sent, reports, publisher,
                   publisher_cpu, servers)  # fmt: skip


def _lost_acknowledged(
    acked: np.ndarray | None, reports: list[dict[str, Any]], fanout: bool
) -> int | None:
    """Acknowledged alerts missing at a subscriber (fan-out: at any one; shared: at all)."""
    if acked is None:
        return None
    arrays = [r["received_ns"] for r in reports]
    if not arrays:
        return int(acked.size)
    n = min(a.size for a in arrays)
    acked = acked[(acked >= 0) & (acked < n)]  # ids outside the run are not its alerts
    got = np.stack([a[:n] for a in arrays]) > 0
    have = got.all(axis=0) if fanout else got.any(axis=0)
    return int((~have[acked]).sum())


def _result(
    spec: RunSpec,
    url: str,
    caps: Any,
    fanout: bool,
    options: dict[str, Any],
    intended: np.ndarray,
    sent: _Published,
    reports: list[dict[str, Any]],
    publisher: Any,
    publisher_cpu: float,
    servers: list[dict[str, Any]],
) -> RunResult:
    n = spec.schedule.count
    delivery = tally_delivery(
        [r["received_ns"] for r in reports],
        intended,
        fanout=fanout,
        duplicates=sum(r["duplicates"] for r in reports),
        decode_errors=sum(r["decode_errors"] for r in reports),
        unexpected=sum(r["unexpected"] for r in reports),
    )
    latency = delivery.latency
    end = delivery.last_received_ns or time.time_ns()
    e2e = max((end - sent.t0) / 1e9, 0.0)
    rate = delivery.received / e2e if e2e > 0 else 0.0
    subscriber_cpu = (
        0.0 if spec.subscriber_role == "thread" else sum(r["cpu_seconds"] for r in reports)
    )
    own = {
        "pid": os.getpid(),
        "cpu_seconds": publisher_cpu,
        "peak_rss_mb": own_peak_rss_mb(),
    }
    several = publisher.processes() if isinstance(publisher, _Publishers) else None
    if several is not None:
        # this process only ran the start (and any subscriber threads or in-process servers)
        publisher_cpu = sum(p["cpu_seconds"] for p in several)
    cpu = publisher_cpu + subscriber_cpu + (own["cpu_seconds"] if several is not None else 0.0)
    server_cpu = sum(s["cpu_seconds"] for s in servers)
    deliveries = sum(delivery.received_per_subscriber)
    per_alert = (cpu + server_cpu) / max(deliveries, 1)
    publisher_counters = _counters(publisher)
    wire = sum(
        c.get("bytes_sent", 0) + c.get("bytes_received", 0)
        for c in [publisher_counters, *(r["counters"] for r in reports)]
    )
    subscribers = [
        {
            "role": spec.subscriber_role,
            "pid": r["pid"],
            "cpu_seconds": r["cpu_seconds"],
            "peak_rss_mb": r["peak_rss_mb"],
            "received": got,
            "lost": lost,
            "counters": r["counters"],
            "stopped": bool(r.get("stopped")),
        }
        for r, got, lost in zip(
            reports, delivery.received_per_subscriber, delivery.lost_per_subscriber, strict=True
        )
    ]
    peaks = [s["peak_rss_mb"] for s in subscribers if s["peak_rss_mb"] is not None]
    examples = [e for r in reports for e in r["examples"]][:5]
    ids = getattr(publisher, "acknowledged_ids", None)
    acked = None if ids is None else np.asarray(sorted(set(ids())), dtype=np.int64)

    return RunResult(
        transport_url=url,
        serializer=spec.serializer,
        payload=spec.payload,
        schedule=spec.schedule.describe(),
        subscriber_role=spec.subscriber_role,
        subscribers=spec.subscribers,
        fanout=fanout,
        capabilities=asdict(caps),
        options=options,
        alerts_sent=n,
        alerts_received=delivery.received,
        alerts_received_per_subscriber=delivery.received_per_subscriber,
        lost=delivery.lost,
        lost_per_subscriber=delivery.lost_per_subscriber,
        duplicates=delivery.duplicates,
        decode_errors=delivery.decode_errors,
        decode_error_examples=examples,
        unexpected=delivery.unexpected,
        transport_errors=sum(r["transport_errors"] for r in reports),
        sent_behind_schedule=sent.late,
        late_fraction=sent.late / n,
        unacknowledged=sent.unacknowledged,
        alerts_published=sent.published,
        acknowledged=None if acked is None else len(acked),
        lost_acknowledged=_lost_acknowledged(acked, reports, fanout),
        aborted=sent.aborted,
        payload_bytes=sent.payload_bytes,
        bytes_per_alert=sent.payload_bytes / n,
        publish_seconds=sent.seconds,
        end_to_end_seconds=e2e,
        alerts_per_second=rate,
        delivered_alerts_per_second=rate,
        offered_alerts_per_second=spec.schedule.offered_rate,
        megabytes_per_second=sent.payload_bytes * delivery.received / n / e2e / 1e6
        if e2e > 0
        else 0.0,
        latency_us=latency.summary(),
        latency_cdf_us=latency.cdf(),
        latency_histogram=latency.to_dict(),
        latency_out_of_range=latency.out_of_range,
        within_60s_fraction=latency.fraction_within(int(VISIT_BUDGET_S * 1e6)),
        cpu_seconds=cpu,
        server_cpu_seconds=server_cpu,
        cpu_seconds_per_alert=per_alert,
        cores_per_stream_at_lsst_rate=per_alert * LSST_RATE,
        processes=_processes(own, publisher_counters, several, subscribers, servers, server_cpu),
        subscriber_peak_rss_mb=max(peaks) if peaks else None,
        client_wire_bytes=wire,
        label=spec.label,
        publishers=spec.publishers,
    )


def _processes(
    own: dict[str, Any],
    counters: dict[str, int],
    several: list[dict[str, Any]] | None,
    subscribers: list[dict[str, Any]],
    servers: list[dict[str, Any]],
    server_cpu: float,
) -> dict[str, Any]:
    """The roles' processes. With several publishers, ``publisher`` is their sum (CPU seconds
    added, the largest peak), ``publishers`` each one, and ``harness`` this process."""
    roles: dict[str, Any] = {"publisher": {**own, "counters": counters}}
    if several is not None:
        roles = {
            "publisher": {
                "pid": None,
                "cpu_seconds": sum(p["cpu_seconds"] for p in several),
                "peak_rss_mb": max(p["peak_rss_mb"] for p in several),
                "counters": counters,
                "processes": len(several),
            },
            "publishers": several,
            "harness": own,
        }
    return {
        **roles,
        "subscribers": subscribers,
        "servers": servers,
        "servers_cpu_seconds": server_cpu,
    }
