"""The Transport seam: opaque envelopes in, the same envelopes out, capabilities declared in code.

Transports never import a codec: they move ``payload`` bytes and the metadata the harness needs
(content type, alert id, timestamps). Each transport class declares what it can do in a
:class:`Capabilities` (replay, durability, fan-out, backpressure, the content types it carries,
the options it accepts and what it does with a slow subscriber), so the conformance suite, the
harness and the ranking read it from code, not from prose. Options are checked once, in
:func:`get_transport`: an option a transport does not declare is refused with a "did you mean",
because a silently ignored option benchmarks the default under another name.

Times are integer nanoseconds since the Unix epoch on one clock (``time.time_ns()``), because
end-to-end latency crosses processes; durations inside one process use ``perf_counter_ns``.
"""

from __future__ import annotations

import collections
import difflib
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from alertbench.errors import ConfigError, TransportError, UnknownTransportError
from alertbench.redaction import redact_url
from alertbench.registry import resolve

MAX_FRAME = 16 * 1024 * 1024
"""The largest message any transport here accepts by default (16 MiB): one limit for TCP and VTP
frames, gRPC messages and Kafka records, so "too large" means the same everywhere."""

ANY_CONTENT_TYPE = "*/*"

SLOW_SUBSCRIBER_POLICIES = {
    "backpressure": "the publisher is slowed (it blocks) until the slow subscriber reads",
    "disconnect": "the slow subscriber is disconnected; the publisher and the others go on",
    "drop-newest": "what does not fit the slow subscriber's queue is dropped for it (counted)",
    "drop-oldest": "the oldest queued messages are dropped for the slow subscriber (counted)",
    "buffer (broker)": "the broker keeps everything on disk; the subscriber catches up later",
}
"""What a transport does with a subscriber that reads slower than the publisher publishes."""


@dataclass(frozen=True)
class Option:
    """One option a transport accepts, in its URL query or as a keyword of get_transport().

    ``kind`` says how a URL string is converted: ``str``, ``int``, ``float``, ``bool``,
    ``choice`` (one of ``choices``), ``mapping`` (a dict, or ``key=value,key=value`` in a URL)
    or ``bytes`` (keyword only). ``secret`` values are shown as ``***`` in resolved options.
    """

    default: Any
    doc: str
    kind: str = "str"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    secret: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a transport promises; the conformance suite holds each module to it."""

    replay: bool
    """A subscriber can start from an earlier position (earliest, an offset, a time, after a
    position it received)."""
    durable: bool
    """An alert acknowledged to the publisher survives the loss of a server process."""
    fanout: bool
    """Several independent subscribers each receive the full stream."""
    backpressure: bool
    """A slow subscriber slows or bounds the publisher instead of losing alerts silently."""
    acknowledgement: str
    """'per-message', 'batched', or 'none'."""
    slow_subscriber: str = "backpressure"
    """What happens to a slow subscriber: a key of :data:`SLOW_SUBSCRIBER_POLICIES`."""
    content_types: tuple[str, ...] = (ANY_CONTENT_TYPE,)
    """The media types it carries; ``*/*`` for any bytes with any content type."""
    options: Mapping[str, Option] = field(default_factory=dict)
    """Every option it accepts (URL query or keyword), with its default and what it does."""
    interprocess: bool = True
    """Publisher and subscribers may live in different processes (memory:// cannot)."""

    def carries(self, content_type: str) -> bool:
        """Whether a payload of ``content_type`` (parameters ignored) may be published."""
        if ANY_CONTENT_TYPE in self.content_types:
            return True
        media_type = content_type.split(";", 1)[0].strip().lower()
        return media_type in self.content_types


@dataclass(frozen=True)
class Envelope:
    """One alert in flight. ``payload`` is opaque; the rest rides in headers or frame fields."""

    payload: bytes
    content_type: str
    alert_id: int
    t_shutter_ns: int = 0
    """When the shutter closed for the visit that produced the alert."""
    t_intended_ns: int = 0
    """When the schedule meant the alert to be sent (coordinated-omission correction)."""
    t_sent_ns: int = 0
    """When the publisher actually handed it to the transport."""
    sequence: int = 0


@dataclass(frozen=True)
class Received:
    """An envelope as a subscriber got it, with where it came from and when it arrived."""

    envelope: Envelope
    t_received_ns: int
    origin: str = ""
    """Transport-specific position, e.g. ``alerts/3@1234`` (topic/partition@offset) for Kafka."""
    position: Any = None
    """Where this envelope sits in a replayable stream (a sequence number; ``(partition,
    offset)`` for Kafka): ``Start.after(position)`` resumes right after it."""


@dataclass(frozen=True)
class Start:
    """Where a subscriber begins. Transports without replay accept only ``latest``."""

    kind: str = "latest"  # latest | earliest | offset | time | after
    value: int = 0
    position: Any = None

    @classmethod
    def latest(cls) -> Start:
        return cls("latest")

    @classmethod
    def earliest(cls) -> Start:
        """From the oldest envelope the transport still retains."""
        return cls("earliest")

    @classmethod
    def offset(cls, offset: int) -> Start:
        """From this position (per partition for Kafka; sequence number elsewhere)."""
        return cls("offset", offset)

    @classmethod
    def time(cls, t_ns: int) -> Start:
        """From the first alert published at or after ``t_ns`` (Unix epoch nanoseconds)."""
        return cls("time", t_ns)

    @classmethod
    def after(cls, position: Any) -> Start:
        """Right after a ``Received.position`` this subscriber (or another) got: resume."""
        if position is None:
            raise ConfigError("Start.after() needs a Received.position; this one has none")
        return cls("after", position=position)


@runtime_checkable
class Publisher(Protocol):
    def publish(self, envelope: Envelope) -> None:
        """Hand one envelope to the transport; may block when the transport applies backpressure.
        A content type the transport does not carry is refused (ConfigError) before sending."""

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until everything published is delivered; returns how many are still not."""

    def wait_for_subscribers(self, n: int, timeout: float = 10.0) -> bool:
        """Return once ``n`` subscribers are connected (TransportError after ``timeout``).
        True at once where the publisher cannot count them: there a subscriber is in place
        when ``open_subscriber`` returns."""

    def counters(self) -> dict[str, int]:
        """What this publisher counted (``published``, ``bytes_sent``, ``acknowledged``...)."""

    def close(self) -> None: ...


@runtime_checkable
class Subscriber(Protocol):
    def poll(self, timeout: float = 1.0) -> Received | None:
        """The next envelope, or None if none arrived within ``timeout`` seconds."""

    def counters(self) -> dict[str, int]:
        """What this subscriber counted (``received``, ``duplicates``, ``dropped``...)."""

    def close(self) -> None: ...


class Transport(Protocol):
    """A transport's entry point, chosen by URL scheme from :data:`TRANSPORTS`."""

    url: str
    capabilities: Capabilities

    def open_publisher(self, **options: Any) -> Publisher: ...

    def open_subscriber(self, start: Start | None = None, **options: Any) -> Subscriber: ...

    def prepare(self, partitions: int = 1) -> None:
        """Create what the stream needs before the first publish (Kafka: the topic)."""

    def resolved_options(self) -> dict[str, Any]:
        """Every declared option's effective value, secrets as ``***`` (for results)."""


TRANSPORTS: dict[str, str] = {
    "memory": "alertbench.transports.memory:MemoryTransport",
    "kafka": "alertbench.transports.kafka:KafkaTransport",
    "grpc": "alertbench.transports.grpc:GrpcTransport",
    "grpcs": "alertbench.transports.grpc:GrpcTransport",
    "zmq+tcp": "alertbench.transports.zmq:ZmqTransport",
    "tcp": "alertbench.transports.tcp:TcpTransport",
    "vtp": "alertbench.transports.vtp:VtpTransport",
}


def parse_url(url: str) -> tuple[str, str, str, dict[str, str]]:
    """(scheme, host:port list, path without leading slash, query options) of a transport URL."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ConfigError(
            f"transport URL {redact_url(url)!r} needs a scheme and a host, e.g. kafka://127.0.0.1:9092/alerts"
        )
    return parts.scheme, parts.netloc, parts.path.lstrip("/"), dict(parse_qsl(parts.query))


def get_transport(url: str, **options: Any) -> Transport:
    """The transport for ``url`` (``kafka://127.0.0.1:9092/alerts?compression=lz4``).

    Options come from the URL query and from keywords (the same name in both is refused unless
    the values agree); one the transport does not declare raises ConfigError.
    """
    scheme, *_ = parse_url(url)
    cls = resolve(TRANSPORTS, scheme, "transport for scheme", UnknownTransportError)
    transport: Transport = cls(url, **options)
    return transport


# -- options ------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, spec: Option, value: Any, where: str) -> Any:
    """``value`` (a URL string or a keyword's value) as ``spec`` wants it; ConfigError if not."""
    if value is None:
        return None
    bad = f"option {name!r} of {where}"
    try:
        if spec.kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif spec.kind == "float":
            value = float(value)
        elif spec.kind == "bool":
            if isinstance(value, str):
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError
                value = value.lower() in _TRUE
            elif not isinstance(value, bool):
                raise ValueError
        elif spec.kind == "choice":
            if value not in spec.choices:
                close = difflib.get_close_matches(str(value), spec.choices, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{bad} is {value!r}{hint} (choose one of {', '.join(spec.choices)})"
                )
        elif spec.kind == "mapping":
            if isinstance(value, str):
                pairs = [p.partition("=") for p in value.split(",") if p.strip()]
                if any(not sep or not key.strip() for key, sep, _ in pairs):
                    raise ValueError
                value = {key.strip(): v for key, _, v in pairs}
            elif not isinstance(value, Mapping):
                raise ValueError
            value = dict(value)
        elif spec.kind == "bytes":
            if not isinstance(value, bytes):
                raise ConfigError(f"{bad} takes bytes, as a keyword of get_transport()")
        elif spec.kind == "str":
            if not isinstance(value, str):
                raise ValueError
        else:
            raise ConfigError(f"{bad} declares an unknown kind {spec.kind!r}")
    except ConfigError:
        raise
    except (ValueError, TypeError):
        wanted = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "mapping": "key=value pairs",
            "str": "a string",
        }[spec.kind]
        raise ConfigError(f"{bad} must be {wanted}, not {value!r}") from None
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{bad} must be at least {spec.minimum:g}, not {value!r}")
    return value


def resolve_options(
    declared: Mapping[str, Option],
    query: Mapping[str, str],
    keywords: Mapping[str, Any],
    where: str,
) -> dict[str, Any]:
    """Every declared option's value, from the URL ``query`` and ``keywords`` or its default.

    An undeclared name is refused with the closest declared one ("did you mean"); a name given
    in both places with different values is refused rather than one silently winning.
    """
    for name in [*query, *keywords]:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(f"{where} has no option {name!r}{hint} (it accepts: {known})")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        given = [_convert(name, spec, src[name], where) for src in (query, keywords) if name in src]
        if len(given) == 2 and given[0] != given[1]:
            raise ConfigError(f"option {name!r} of {where} is given twice, with different values")
        values[name] = given[-1] if given else spec.default
    return values


def redact(declared: Mapping[str, Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` fit for a results file: secrets, and password-like keys of mappings, as ***."""
    shown: dict[str, Any] = {}
    for name, value in values.items():
        spec = declared.get(name)
        if spec is not None and spec.secret and value is not None:
            value = "***"
        elif isinstance(value, Mapping):
            value = {
                k: "***" if any(w in k.lower() for w in ("password", "secret", "token")) else v
                for k, v in value.items()
            }
        elif isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        shown[name] = value
    return shown


def refuse_content_type(capabilities: Capabilities, envelope: Envelope, url: str) -> None:
    """ConfigError, before anything is sent, if the transport does not carry this payload."""
    if not capabilities.carries(envelope.content_type):
        raise ConfigError(
            f"{url} carries only {', '.join(capabilities.content_types)}; alert "
            f"{envelope.alert_id} is {envelope.content_type!r}"
        )


def refuse_replay(kind: str, start: Start | None) -> None:
    """TransportError for a transport without replay asked to start anywhere but now."""
    if start is not None and start.kind != "latest":
        raise TransportError(f"{kind} has no replay: it cannot start from {start.kind!r}")


# -- the base of every transport --------------------------------------------------------------


@dataclass
class LocalStream:
    """A stream on this machine that a recipe made ready: its URL, and what runs behind it.

    ``server`` is the in-process server object, if any; ``server_pids`` the processes whose CPU
    counts towards the stream (Kafka's JVMs); ``ports`` every loopback port the stream serves
    on (where a hostile peer would connect). ``counter`` can count connected subscribers (the
    broker, where the publisher cannot). ``subscriber_options`` are the ``open_subscriber``
    keywords the stream wants (a tight stream's small receive buffer); ``restart`` kills and
    restarts the server processes (durability tests).
    """

    kind: str
    url: str
    server_pids: list[int] = field(default_factory=list)
    server: Any = None
    ports: list[int] = field(default_factory=list)
    counter: Any = None
    subscriber_options: dict[str, Any] = field(default_factory=dict)
    restart: Any = None

    def transport(self, **options: Any) -> Transport:
        return get_transport(self.url, **options)

    def wait_for_subscribers(self, publisher: Publisher, n: int, timeout: float = 10.0) -> bool:
        """Wait until ``n`` subscribers are in place, asking the broker if the publisher
        cannot count them."""
        owner = self.counter if self.counter is not None else publisher
        return bool(owner.wait_for_subscribers(n, timeout=timeout))

    def connected_subscribers(self, publisher: Publisher) -> int | None:
        """How many subscribers the broker (or the publisher) has now; None if neither counts."""
        owner = self.counter if self.counter is not None else publisher
        return owner.connected_subscribers() if isinstance(owner, CountsSubscribers) else None


class BaseTransport:
    """What every transport class shares: options checked against its declaration, the
    resolved options for results, a no-op :meth:`prepare`, and its local-stream recipe.

    A subclass declares ``capabilities`` (with ``options``) and ``variants`` (the kinds the
    matrix, the CLI and the conformance suite know it by, each with the options that make
    it that kind), and implements :meth:`local_stream`.
    """

    capabilities: ClassVar[Capabilities]
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    local_tools: ClassVar[tuple[str, ...]] = ()
    """Programs the local-stream recipe needs on PATH (Kafka: java and mvn)."""
    url_example: ClassVar[str] = ""
    """A URL of this transport as a user writes it (documentation and the capability table;
    empty: ``SCHEME://127.0.0.1:PORT``)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        """The URL for messages and logs: its password and secret parameters hidden."""
        self.scheme, self.netloc, self.path, query = parse_url(url)
        self.options = resolve_options(self.capabilities.options, query, options, self.shown_url)

    def resolved_options(self) -> dict[str, Any]:
        return redact(self.capabilities.options, self.options)

    def prepare(self, partitions: int = 1) -> None:
        """Nothing to create for transports without topics."""

    @classmethod
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False, **kw: Any
    ) -> AbstractContextManager[LocalStream]:
        """A fresh stream of kind ``variant`` on 127.0.0.1 (its server started and ready), torn
        down on exit. ``shared`` is what :meth:`shared_resources` gave, if the caller holds it
        across streams (Kafka: one cluster for many topics). ``tight`` makes every buffer and
        window between publisher and subscriber small, so a slow subscriber shows its policy
        with little data (tests only: a tight stream benchmarks nothing)."""
        raise NotImplementedError(f"{cls.__name__} has no local-stream recipe")

    @classmethod
    def shared_resources(cls) -> AbstractContextManager[Any]:
        """What many streams of this transport can share (a Kafka cluster); None for most."""
        return _nothing()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


# -- shared parts of publishers and subscribers ---------------------------------------------------


class QueuedSubscriber:
    """For subscribers whose socket is read by a background thread: a bounded hand-off queue.

    A full queue blocks the reader thread, so the transport's own flow control (TCP windows,
    HTTP/2) slows the sender instead of this process buffering without bound.

    The queue carries batches: a reader that parsed several messages out of one read (or one
    gRPC stream message) hands them over at once (:meth:`_put_batch`), and :meth:`poll` serves
    them one by one from its own side. One hand-off per message (a condition variable and a
    thread wake-up each) was most of what the tcp subscriber spent beyond a raw socket's
    ``recv_into``. The bound is ``size`` envelopes, not batches, so batching does not multiply
    the memory a slow consumer holds: a batch waits until it fits, except into an empty queue.
    """

    def _init_queue(self, size: int) -> None:
        self._size = max(1, size)
        self._batches: collections.deque[list[Received]] = collections.deque()
        self._held = 0
        """Envelopes in ``_batches``."""
        self._handoff = threading.Condition()
        self._pending: collections.deque[Received] = collections.deque()
        self._stop = threading.Event()
        self.received = 0

    def _put(self, item: Received) -> None:
        self._put_batch([item])

    def _put_batch(self, items: list[Received]) -> None:
        if not items:
            return
        with self._handoff:
            while self._held and self._held + len(items) > self._size:
                if self._stop.is_set():
                    return
                self._handoff.wait(0.2)
            self._batches.append(items)
            self._held += len(items)
            self._handoff.notify_all()

    def poll(self, timeout: float = 1.0) -> Received | None:
        if not self._pending:
            with self._handoff:
                if not self._batches and not self._handoff.wait_for(
                    lambda: bool(self._batches), timeout
                ):
                    return None
                batch = self._batches.popleft()
                self._held -= len(batch)
                self._handoff.notify_all()
            self._pending.extend(batch)
        self.received += 1
        return self._pending.popleft()


class CountsSubscribers:
    """``wait_for_subscribers`` for anything that can count its connected subscribers (a
    brokerless publisher, or a broker), so a test or a run can start publishing only once the
    subscribers it expects are there."""

    def connected_subscribers(self) -> int:
        raise NotImplementedError

    def wait_for_subscribers(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while (have := self.connected_subscribers()) < n:
            if time.monotonic() > deadline:
                raise TransportError(f"only {have} of {n} subscribers connected")
            time.sleep(0.01)
        return True


class CannotCountSubscribers:
    """``wait_for_subscribers`` for publishers that cannot count them: their subscribers are in
    place when ``open_subscriber`` returns (Kafka: partitions assigned; gRPC: stream open)."""

    def wait_for_subscribers(self, n: int, timeout: float = 10.0) -> bool:
        return True


# -- kinds: the registry's transports as the matrix, the CLI and the tests name them -------------


def _classes() -> dict[str, type[BaseTransport]]:
    """scheme -> class for every registered transport (each module imported once)."""
    found: dict[str, type[BaseTransport]] = {}
    by_target: dict[str, type[BaseTransport]] = {}
    for scheme, target in TRANSPORTS.items():
        if target not in by_target:
            by_target[target] = resolve(TRANSPORTS, scheme, "transport for scheme", KeyError)
        found[scheme] = by_target[target]
    return found


def kind_table() -> dict[str, tuple[type[BaseTransport], str]]:
    """kind -> (transport class, scheme), read from :data:`TRANSPORTS` each time it is asked,
    so a transport registered at run time is there. A class without ``variants`` is one kind
    named after its first scheme."""
    table: dict[str, tuple[type[BaseTransport], str]] = {}
    seen: set[type] = set()
    for scheme, cls in _classes().items():
        if cls in seen:
            continue
        seen.add(cls)
        for kind in getattr(cls, "variants", None) or {scheme: {}}:
            if kind in table:
                raise ConfigError(f"transport kind {kind!r} is declared twice")
            table[kind] = (cls, scheme)
    return table


def kinds(interprocess: bool | None = None) -> list[str]:
    """Every registered transport kind (``tcp``, ``zmq-pubsub``, ...); with ``interprocess``,
    only those whose publisher and subscribers may (True) or may not (False) be in different
    processes."""
    table = kind_table()
    return [
        kind
        for kind, (cls, _) in table.items()
        if interprocess is None or cls.capabilities.interprocess == interprocess
    ]


def transport_class(kind: str) -> type[BaseTransport]:
    """The class behind a kind; ConfigError with a did-you-mean for an unknown one."""
    table = kind_table()
    if kind not in table:
        close = difflib.get_close_matches(kind, table, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"no transport kind {kind!r}{hint} (known: {', '.join(table)})")
    return table[kind][0]


def local_stream(kind: str, **kw: Any) -> AbstractContextManager[LocalStream]:
    """A ready local stream of ``kind``, its server (if any) started here and stopped on exit."""
    return transport_class(kind).local_stream(kind, **kw)
