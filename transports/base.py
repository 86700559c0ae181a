"""The Transport seam: opaque envelopes in, the same envelopes out, capabilities declared in code.

Transports never import a codec: they move ``payload`` bytes and the metadata the harness needs
(content type, alert id, timestamps). Each transport module declares what it can do in a
:class:`Capabilities` so tests, the harness and the ranking read it from code, not from prose.
Times are integer nanoseconds since the Unix epoch on one clock (``time.time_ns()``), because
end-to-end latency crosses processes; durations inside one process use ``perf_counter_ns``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from alertbench.errors import TransportError, UnknownTransportError
from alertbench.registry import resolve


@dataclass(frozen=True)
class Capabilities:
    """What a transport promises; the conformance suite holds each module to it."""

    replay: bool
    """A subscriber can start from an earlier position (earliest, an offset, a time)."""
    durable: bool
    """An alert acknowledged to the publisher survives the loss of a server process."""
    fanout: bool
    """Several independent subscribers each receive the full stream."""
    backpressure: bool
    """A slow subscriber slows or bounds the publisher instead of losing alerts silently."""
    acknowledgement: str
    """'per-message', 'batched', or 'none'."""


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
    """A value a subscriber can be restarted from (``Start.after(position)``)."""


@dataclass(frozen=True)
class Start:
    """Where a subscriber begins. Transports without replay accept only ``latest``."""

    kind: str = "latest"  # latest | earliest | offset | time
    value: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def latest(cls) -> Start:
        return cls("latest")

    @classmethod
    def earliest(cls) -> Start:
        return cls("earliest")

    @classmethod
    def offset(cls, offset: int) -> Start:
        """From this position (per partition for Kafka; sequence number elsewhere)."""
        return cls("offset", offset)

    @classmethod
    def time(cls, t_ns: int) -> Start:
        """From the first alert published at or after ``t_ns`` (Unix epoch nanoseconds)."""
        return cls("time", t_ns)


@runtime_checkable
class Publisher(Protocol):
    def publish(self, envelope: Envelope) -> None:
        """Hand one envelope to the transport; may block when the transport applies backpressure."""

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until everything published is delivered; returns how many are still not."""

    def close(self) -> None: ...


@runtime_checkable
class Subscriber(Protocol):
    def poll(self, timeout: float = 1.0) -> Received | None:
        """The next envelope, or None if none arrived within ``timeout`` seconds."""

    def close(self) -> None: ...


class Transport(Protocol):
    """A transport module's entry point, chosen by URL scheme from :data:`TRANSPORTS`."""

    capabilities: Capabilities

    def open_publisher(self, **options: Any) -> Publisher: ...

    def open_subscriber(self, start: Start = ..., **options: Any) -> Subscriber: ...


TRANSPORTS: dict[str, str] = {
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
        raise TransportError(
            f"transport URL {url!r} needs a scheme and a host, e.g. kafka://127.0.0.1:9092/alerts"
        )
    return parts.scheme, parts.netloc, parts.path.lstrip("/"), dict(parse_qsl(parts.query))


def get_transport(url: str, **options: Any) -> Transport:
    """The transport for ``url`` (``kafka://127.0.0.1:9092/alerts?compression=lz4``)."""
    scheme, *_ = parse_url(url)
    cls = resolve(TRANSPORTS, scheme, "transport for scheme", UnknownTransportError)
    return cls(url, **options)


def drain(subscriber: Subscriber, count: int, timeout: float) -> Iterator[Received]:
    """Up to ``count`` envelopes, stopping early after ``timeout`` seconds without one."""
    got = 0
    while got < count:
        item = subscriber.poll(timeout)
        if item is None:
            return
        got += 1
        yield item


class QueuedSubscriber:
    """For subscribers whose socket is read by a background thread: a bounded hand-off queue.

    A full queue blocks the reader thread, so the transport's own flow control (TCP windows,
    HTTP/2) slows the sender instead of this process buffering without bound.
    """

    def _init_queue(self, size: int) -> None:
        self._queue: queue.Queue[Received] = queue.Queue(maxsize=size)
        self._stop = threading.Event()

    def _put(self, item: Received) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def poll(self, timeout: float = 1.0) -> Received | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class CountsSubscribers:
    """``wait_for_subscribers`` for anything that can count its connected subscribers (a
    brokerless publisher, or a broker), so a test or a run can start publishing only once the
    subscribers it expects are there."""

    def connected_subscribers(self) -> int:
        raise NotImplementedError

    def wait_for_subscribers(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (have := self.connected_subscribers()) < n:
            if time.monotonic() > deadline:
                raise TransportError(f"only {have} of {n} subscribers connected")
            time.sleep(0.01)
