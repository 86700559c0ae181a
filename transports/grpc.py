"""gRPC streaming transport: a server with a retention window, resume and flow control.

URL: ``grpc://127.0.0.1:PORT`` (``grpcs://`` with TLS). Run a server with
:class:`AlertStreamServer` (``alertbench`` starts one for the harness); publishers and
subscribers are clients of it.

* **Publish** is a bidirectional stream: batches of envelopes in, one acknowledgement per
  accepted batch out, so ``flush()`` knows what the server holds (every envelope is
  acknowledged, a batch at a time).
* **Batches** both ways (``alertstream.proto`` v2): a stream message carries every envelope
  that was waiting when it was sent, up to ``batch_bytes`` (a subscriber's own message limit
  caps what it is sent). A stream that keeps up sends batches of one, so batching adds no
  latency; one that falls behind catches up in fewer messages, which is what gRPC's Python
  cost is counted in. The server keeps each accepted envelope encoded, so serving a
  subscriber is joining bytes, with the window's lock taken once per batch, not per alert.
* **Retention**: the server keeps a bounded window of recent envelopes in memory (``window``
  alerts and ``window_bytes`` bytes, whichever binds first); subscribers start from the latest,
  the earliest retained, a sequence number (resume) or a time.
* **Flow control**: each subscriber is a cursor into the window; HTTP/2 flow control makes the
  server produce only as fast as that subscriber reads, so a slow subscriber costs no memory
  beyond the window. One that falls out of the window is **disconnected** with ``DATA_LOSS``
  and the number of alerts it missed; it can resume from the oldest retained alert.
* **Budgets** (:class:`AlertStreamServer` arguments), so that idle or hostile streams cannot
  starve the others:

  - at most ``max_streams`` Publish and Subscribe streams at once. That is gRPC's own
    ``maximum_concurrent_rpcs``: over it gRPC answers ``RESOURCE_EXHAUSTED`` itself, before a
    worker is taken. The server has more workers than that (``workers``), so a stream it
    admitted always has a thread;
  - at most ``max_streams_per_connection`` of them on one HTTP/2 connection
    (``RESOURCE_EXHAUSTED`` too). Per connection, not per host or per client id: on loopback
    every peer is 127.0.0.1, and a client id in metadata is whatever the client chooses to
    send, so the connection (``context.peer()``: address and port) is what the server can hold
    a client to. Each publisher and subscriber here has a connection of its own (left to gRPC,
    all the channels of a process to one server share one connection, and so one budget);
  - a Publish stream that sends nothing for ``publish_idle_timeout`` seconds is ended with
    ``DEADLINE_EXCEEDED``; a :class:`GrpcPublisher` opens a new stream when it next publishes,
    sending again whatever the server had not acknowledged (never anything it had);
  - HTTP/2 keepalive pings both ways (``keepalive``, ``keepalive_timeout``), so the streams of a
    peer that died end, and a subscriber notices a server that went away.

  The server's ``counters()`` say what it admitted, refused and closed as idle. A subscriber
  that is refused says so (``errors``, ``refused``) and tries again with growing, jittered
  back-off (``refused_backoff`` up to ``refused_backoff_max``); a refused publisher raises
  TransportError.
* Message size limits are raised to ``max_message`` (16 MiB by default) on both sides.
* Durability: none beyond the server process (the window is in memory).

Capabilities: replay, fan-out, per-message acknowledgement; a slow subscriber is
**disconnected** once it falls out of the window (the publisher is never slowed by it).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, ClassVar

import grpc
from alertbench.transports._generated import alertstream_pb2 as pb
from alertbench.transports._generated import alertstream_pb2_grpc as pb_grpc
from alertbench.transports.base import (
    MAX_FRAME,
    BaseTransport,
    CannotCountSubscribers,
    Capabilities,
    CountsSubscribers,
    Envelope,
    LocalStream,
    Option,
    QueuedSubscriber,
    Received,
    Start,
    TransportError,
)

from alertbench.errors import ConfigError

log = logging.getLogger(__name__)

MAX_STREAMS = 128
"""Default cap on the server's concurrent Publish and Subscribe streams, all peers together."""
MAX_STREAMS_PER_CONNECTION = 8
"""Default cap on one connection's streams (a publisher or subscriber here uses one)."""
PUBLISH_IDLE_TIMEOUT = 30.0
"""Default seconds a Publish stream may send nothing before the server ends it."""
KEEPALIVE = 20.0
"""Default seconds between keepalive pings on a quiet connection, both ways."""
KEEPALIVE_TIMEOUT = 10.0
"""Default seconds to wait for a ping's answer before the connection is taken as dead."""
MIN_KEEPALIVE = 5.0
"""The shortest ``keepalive`` a client may ask for, seconds."""
_ACCEPTED_PING_INTERVAL = MIN_KEEPALIVE / 2
"""The server accepts a client's pings this often when no data flows (gRPC's ping-abuse policy
closes a connection that pings more often); half the clients' minimum, to leave a margin."""
IDLE_CLOSED = ("alertstream-closed", "idle")
"""Trailing metadata on a Publish stream the server ended for idleness."""

_RECONNECT_BACKOFF = (0.05, 1.0)
"""A subscriber whose stream broke reconnects after this long, doubling up to the maximum."""
_PUBLISH_INBOX = 1
"""Batches a Publish stream's reader thread may hold before the worker appends them to the
window: one, so the server reads from a publisher about as far ahead as without that thread."""
BATCH_BYTES = 4 * 1024**2
"""Default most bytes of envelopes in one stream message, both ways (one envelope over it still
goes, alone)."""
BATCH_ENVELOPES = 256
"""The most envelopes in one stream message, however small."""
SERVICE = pb.DESCRIPTOR.services_by_name["AlertStream"].full_name
"""The service's full name, ``alertbench.stream.v2.AlertStream``."""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _channel_options(max_message: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
    ]


class _Window:
    """The retained envelopes, oldest first: ``(sequence, wire, t_sent_ns)``, where ``wire`` is
    the envelope encoded as an EnvelopeBatch of one. A batch's encoding is its envelopes'
    batches-of-one joined, so a subscriber's batch is built without encoding anything again."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.items: collections.deque[tuple[int, bytes, int]] = collections.deque()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self.next_sequence = 0
        self.batches_in = 0
        self.batches_out = 0
        self.envelopes_out = 0
        """Publish messages taken, Subscribe messages sent and the envelopes in those."""
        self.cond = threading.Condition()
        self._order = threading.Lock()
        """Held by one appender at a time, so sequence numbers follow arrival while the
        encoding happens outside ``cond`` (subscribers are not held up by it)."""

    def append(self, envelopes: Any) -> int:
        """Number and keep ``envelopes`` (a batch's, in order); the last one's sequence."""
        with self._order:
            seq = self.next_sequence
            entries = []
            for envelope in envelopes:
                envelope.sequence = seq
                one = pb.EnvelopeBatch()
                one.envelopes.append(envelope)
                entries.append((seq, one.SerializeToString(), envelope.t_sent_ns))
                seq += 1
            with self.cond:
                self.items.extend(entries)
                self.bytes += sum(len(wire) for _, wire, _ in entries)
                self.next_sequence = seq
                self.batches_in += 1
                while self.items and (
                    len(self.items) > self.max_items or self.bytes > self.max_bytes
                ):
                    _, old, _ = self.items.popleft()
                    self.bytes -= len(old)
                self.cond.notify_all()
            return seq - 1

    def first_sequence(self) -> int:
        return self.items[0][0] if self.items else self.next_sequence

    def batch(self, cursor: int, max_bytes: int) -> list[bytes]:
        """The encoded envelopes from ``cursor`` on (retained and published; under ``cond``),
        at least one, at most ``max_bytes`` of them together and BATCH_ENVELOPES."""
        items = self.items
        at = cursor - self.first_sequence()
        end = min(len(items), at + BATCH_ENVELOPES)
        parts = [items[at][1]]
        size = len(parts[0])
        for i in range(at + 1, end):
            wire = items[i][1]
            size += len(wire)
            if size > max_bytes:
                break
            parts.append(wire)
        return parts


class _Budget:
    """Who holds the server's streams, and what it admitted, refused and closed.

    ``arrived`` counts calls to a known method as gRPC takes them (the interceptor sees each one
    before gRPC checks ``maximum_concurrent_rpcs``); ``handed`` those gRPC gave a worker (the
    pool sees each submission). gRPC makes both steps for one call in one go, in its one serving
    thread, so the difference is the calls gRPC refused over the cap.
    """

    def __init__(self, per_connection: int) -> None:
        self.lock = threading.Lock()
        self.per_connection = per_connection
        self.by_connection: collections.Counter[str] = collections.Counter()
        self.arrived = 0
        self.handed = 0
        self.refused_per_connection = 0
        self.idle_closed = 0
        self.peak = 0

    def arrive(self) -> None:
        with self.lock:
            self.arrived += 1

    def hand(self) -> None:
        with self.lock:
            self.handed += 1

    def enter(self, peer: str) -> int:
        """0 if ``peer``'s connection may open one more stream (now counted), else its count."""
        with self.lock:
            held = self.by_connection[peer]
            if held >= self.per_connection:
                self.refused_per_connection += 1
                return held
            self.by_connection[peer] = held + 1
            self.peak = max(self.peak, sum(self.by_connection.values()))
            return 0

    def leave(self, peer: str) -> None:
        with self.lock:
            self.by_connection[peer] -= 1
            if self.by_connection[peer] <= 0:
                del self.by_connection[peer]

    def counters(self) -> dict[str, int]:
        with self.lock:
            over_cap = max(0, self.arrived - self.handed)
            return {
                "streams": sum(self.by_connection.values()),
                "peak_streams": self.peak,
                "connections": len(self.by_connection),
                "calls": self.arrived,
                "refused": over_cap + self.refused_per_connection,
                "refused_max_streams": over_cap,
                "refused_per_connection": self.refused_per_connection,
                "idle_closed": self.idle_closed,
            }


class _CountCalls(grpc.ServerInterceptor):
    """Counts every call to a known method, including those gRPC then refuses over its cap."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is not None:
            self.budget.arrive()
        return handler


class _Workers(futures.ThreadPoolExecutor):
    """The server's worker pool; counts the calls gRPC hands it (one submission per call)."""

    def __init__(self, workers: int, budget: _Budget) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="alertstream")
        self.budget = budget

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        self.budget.hand()
        return super().submit(fn, *args, **kwargs)


_END = object()


class _Servicer(pb_grpc.AlertStreamServicer):
    def __init__(
        self,
        window: _Window,
        stopping: threading.Event,
        budget: _Budget,
        publish_idle_timeout: float | None,
        batch_bytes: int,
    ) -> None:
        self.window = window
        self.batch_bytes = batch_bytes
        self.stopping = stopping
        self.budget = budget
        self.publish_idle_timeout = publish_idle_timeout
        self.subscribers = 0
        """Subscribe calls whose starting point is set: they see everything published next."""

    @contextmanager
    def _admitted(self, context: Any) -> Iterator[None]:
        """Hold one of the connection's streams for the call, or refuse it."""
        peer = context.peer()
        held = self.budget.enter(peer)
        if held:
            log.debug("gRPC server: refused a stream from %s, which holds %d", peer, held)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"connection {peer} already holds {held} streams, the most this server allows "
                f"on one connection (max_streams_per_connection); open another connection or "
                f"close a stream",
            )
        try:
            yield
        finally:
            self.budget.leave(peer)

    def Publish(self, request_iterator, context):
        with self._admitted(context):
            if self.publish_idle_timeout is None:
                for batch in request_iterator:
                    yield self._accept(batch, context)
                return
            yield from self._publish_until_idle(request_iterator, context)

    def _accept(self, batch: Any, context: Any) -> Any:
        """Put a publisher's batch in the window; its acknowledgement."""
        envelopes = batch.envelopes
        if not envelopes:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "an empty EnvelopeBatch: a Publish message carries at least one envelope",
            )
        seq = self.window.append(envelopes)
        return pb.PublishAck(sequence=seq, alert_id=envelopes[-1].alert_id, count=len(envelopes))

    def _publish_until_idle(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        """Publish, reading the requests in a thread of their own, so that this (the worker)
        can end the stream with a status when nothing arrives for ``publish_idle_timeout``."""
        idle = self.publish_idle_timeout
        assert idle is not None
        inbox: collections.deque[Any] = collections.deque()
        cond = threading.Condition()
        ended = threading.Event()

        def read() -> None:
            try:
                for message in request_iterator:
                    with cond:
                        while len(inbox) >= _PUBLISH_INBOX and not ended.is_set():
                            cond.wait(0.5)  # the window is slow: hold the client back
                        if ended.is_set():
                            return
                        inbox.append(message)
                        cond.notify_all()
            except Exception as exc:  # the call ended (cancelled, the peer gone): so does this
                log.debug("gRPC server: a publish stream's requests ended: %r", exc)
            finally:
                with cond:
                    inbox.append(_END)
                    cond.notify_all()

        reader = threading.Thread(target=read, name="alertstream-publish-reader", daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + idle
            while True:
                with cond:
                    while not inbox:
                        left = deadline - time.monotonic()
                        if left <= 0 or self.stopping.is_set() or not context.is_active():
                            break
                        cond.wait(min(left, 0.5))
                    message = inbox.popleft() if inbox else None
                    if message is not None:
                        cond.notify_all()
                if message is _END or self.stopping.is_set() or not context.is_active():
                    return
                if message is None:
                    with self.budget.lock:
                        self.budget.idle_closed += 1
                    context.set_trailing_metadata((IDLE_CLOSED,))
                    context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"publish stream idle: nothing received for {idle:g} s "
                        f"(publish_idle_timeout); the server closed it, publish on a new stream",
                    )
                yield self._accept(message, context)
                deadline = time.monotonic() + idle
        finally:
            with cond:
                ended.set()
                cond.notify_all()

    def Subscribe(self, request, context):
        with self._admitted(context):
            yield from self._subscribe(request, context)

    def _batch_bytes(self, request: Any) -> int:
        """What one message to this subscriber may hold: the server's budget, lowered to the
        subscriber's own limit (less room for the envelopes' prefixes) if it sent one."""
        budget = self.batch_bytes
        if request.max_batch_bytes:
            budget = min(budget, request.max_batch_bytes - 64)
        return budget

    def _subscribe(self, request: Any, context: Any) -> Iterator[Any]:
        window = self.window
        with window.cond:
            first = window.first_sequence()
            if request.start == pb.SubscribeRequest.EARLIEST:
                cursor = first
            elif request.start == pb.SubscribeRequest.SEQUENCE:
                cursor = request.sequence
                if cursor < first:
                    context.abort(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"sequence {cursor} is no longer retained; the oldest is {first}",
                    )
            elif request.start == pb.SubscribeRequest.TIME:
                cursor = next(
                    (s for s, _, sent in window.items if sent >= request.time_ns),
                    window.next_sequence,
                )
            else:
                cursor = window.next_sequence
            self.subscribers += 1  # counted once its starting point is fixed
        try:
            yield from self._follow(cursor, self._batch_bytes(request), context)
        finally:
            with window.cond:
                self.subscribers -= 1

    def _follow(self, cursor: int, batch_bytes: int, context: Any) -> Iterator[bytes]:
        """The subscriber's stream from ``cursor``: encoded batches of what is published."""
        window = self.window
        while context.is_active() and not self.stopping.is_set():
            with window.cond:
                while cursor >= window.next_sequence and not self.stopping.is_set():
                    window.cond.wait(0.5)
                    if not context.is_active():
                        return
                if self.stopping.is_set():
                    return
                first = window.first_sequence()
                if cursor < first:
                    context.abort(
                        grpc.StatusCode.DATA_LOSS,
                        f"subscriber fell behind the retention window: alerts {cursor} to "
                        f"{first - 1} were evicted; resume from {first}",
                    )
                parts = window.batch(cursor, batch_bytes)
                window.batches_out += 1
                window.envelopes_out += len(parts)
            cursor += len(parts)
            yield parts[0] if len(parts) == 1 else b"".join(parts)


def _handlers(servicer: _Servicer) -> grpc.GenericRpcHandler:
    """The service, with Subscribe's batches sent as the bytes the window already holds (no
    response serializer: gRPC sends bytes as they are)."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Publish": grpc.stream_stream_rpc_method_handler(
                servicer.Publish,
                request_deserializer=pb.EnvelopeBatch.FromString,
                response_serializer=pb.PublishAck.SerializeToString,
            ),
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                servicer.Subscribe,
                request_deserializer=pb.SubscribeRequest.FromString,
            ),
        },
    )


class AlertStreamServer(CountsSubscribers):
    """The gRPC alert-stream server. ``start()`` returns the port it bound on 127.0.0.1.

    ``max_streams`` caps the Publish and Subscribe streams open at once (gRPC refuses more with
    ``RESOURCE_EXHAUSTED``), ``max_streams_per_connection`` those of one connection; ``workers``
    (more than ``max_streams``; by default a few more) serve them. ``publish_idle_timeout``
    (seconds, None for never) ends a Publish stream that sends nothing; ``keepalive`` and
    ``keepalive_timeout`` (seconds) are the server's pings to its peers; ``batch_bytes`` is the
    most one message to a subscriber holds (1 sends envelopes one by one). See the module's
    notes.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        *,
        window: int = 100_000,
        window_bytes: int = 2 * 1024**3,
        max_message: int = MAX_FRAME,
        max_streams: int = MAX_STREAMS,
        max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        workers: int | None = None,
        publish_idle_timeout: float | None = PUBLISH_IDLE_TIMEOUT,
        keepalive: float = KEEPALIVE,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        tls: tuple[bytes, bytes] | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        if max_streams < 1 or max_streams_per_connection < 1:
            raise ConfigError("max_streams and max_streams_per_connection must be at least 1")
        workers = max_streams + 4 if workers is None else workers
        if workers <= max_streams:
            raise ConfigError(
                f"workers ({workers}) must be more than max_streams ({max_streams}): every "
                f"stream the server admits holds a worker for as long as it is open"
            )
        if publish_idle_timeout is not None and publish_idle_timeout <= 0:
            raise ConfigError("publish_idle_timeout must be positive seconds, or None for never")
        if keepalive <= 0 or keepalive_timeout <= 0:
            raise ConfigError("keepalive and keepalive_timeout must be positive seconds")
        if batch_bytes < 1:
            raise ConfigError("batch_bytes must be at least 1 (1: one envelope per message)")
        self.bind = bind
        self.window = _Window(window, window_bytes)
        self.max_message = max_message
        self.max_streams = max_streams
        self.max_streams_per_connection = max_streams_per_connection
        self.workers = workers
        self.publish_idle_timeout = publish_idle_timeout
        self._stopping = threading.Event()
        self._budget = _Budget(max_streams_per_connection)
        self._server = grpc.server(
            _Workers(workers, self._budget),
            interceptors=[_CountCalls(self._budget)],
            options=[
                *_channel_options(max_message),
                ("grpc.keepalive_time_ms", _ms(keepalive)),
                ("grpc.keepalive_timeout_ms", _ms(keepalive_timeout)),
                ("grpc.http2.ping_timeout_ms", _ms(keepalive_timeout)),  # else a minute
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),  # idle streams are pinged too
                ("grpc.http2.min_ping_interval_without_data_ms", _ms(_ACCEPTED_PING_INTERVAL)),
            ],
            maximum_concurrent_rpcs=max_streams,
        )
        self._servicer = _Servicer(
            self.window,
            self._stopping,
            self._budget,
            publish_idle_timeout,
            min(batch_bytes, max_message - 64),
        )
        self._server.add_generic_rpc_handlers((_handlers(self._servicer),))
        self.tls = tls
        self.port = 0

    def start(self) -> int:
        if self.tls:
            key, cert = self.tls
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self._server.add_secure_port(self.bind, creds)
        else:
            self.port = self._server.add_insecure_port(self.bind)
        self._server.start()
        return self.port

    def connected_subscribers(self) -> int:
        with self.window.cond:
            return self._servicer.subscribers

    def counters(self) -> dict[str, int]:
        """``streams`` open now (``peak_streams`` at most, over ``connections``), ``calls``
        taken, ``refused`` (``refused_max_streams`` by gRPC over the cap, plus
        ``refused_per_connection``) and ``idle_closed`` Publish streams; ``accepted`` envelopes
        in ``publish_batches`` messages, and ``sent`` envelopes in ``subscribe_batches``
        messages to all subscribers together."""
        window = self.window
        with window.cond:
            flow = {
                "accepted": window.next_sequence,
                "publish_batches": window.batches_in,
                "sent": window.envelopes_out,
                "subscribe_batches": window.batches_out,
            }
        return {**self._budget.counters(), **flow}

    @property
    def refused(self) -> int:
        """Streams refused with RESOURCE_EXHAUSTED, over either cap."""
        return self.counters()["refused"]

    @property
    def url(self) -> str:
        host = self.bind.rsplit(":", 1)[0]
        return f"{'grpcs' if self.tls else 'grpc'}://{host}:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        with self.window.cond:
            self.window.cond.notify_all()
        self._server.stop(grace).wait()

    def __enter__(self) -> AlertStreamServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GrpcTransport(BaseTransport):
    capabilities = Capabilities(
        replay=True,
        durable=False,
        fanout=True,
        backpressure=True,
        acknowledgement="per-message",
        slow_subscriber="disconnect",
        options={
            "max_message": Option(
                MAX_FRAME, "largest message sent or received, bytes", "int", minimum=1024
            ),
            "root_certificates": Option(
                None, "PEM roots to verify a grpcs:// server (keyword only)", "bytes"
            ),
            "keepalive": Option(
                KEEPALIVE,
                "seconds between the client's keepalive pings while a stream is open, so a dead "
                "server is noticed",
                "float",
                minimum=MIN_KEEPALIVE,
            ),
            "keepalive_timeout": Option(
                KEEPALIVE_TIMEOUT,
                "seconds a keepalive ping may go unanswered before the connection is dropped",
                "float",
                minimum=0.1,
            ),
            "refused_backoff": Option(
                0.25,
                "seconds a subscriber the server refused (RESOURCE_EXHAUSTED) waits before it "
                "tries again; doubled on each refusal in a row, with jitter",
                "float",
                minimum=0.01,
            ),
            "refused_backoff_max": Option(
                5.0, "the longest wait between a refused subscriber's tries, seconds", "float"
            ),
            "batch_bytes": Option(
                BATCH_BYTES,
                "the most bytes of envelopes a publisher sends in one stream message (all that "
                "are waiting, up to this; 1 sends them one by one)",
                "int",
                minimum=1,
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"grpc": {}}

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        if self.path:
            raise ConfigError(f"{url}: a gRPC URL names a server only (grpc://HOST:PORT)")
        self.target = self.netloc
        self.max_message: int = self.options["max_message"]
        self.secure = self.scheme == "grpcs"
        self.root_certificates: bytes | None = self.options["root_certificates"]
        self.keepalive: float = self.options["keepalive"]
        self.keepalive_timeout: float = self.options["keepalive_timeout"]
        self.refused_backoff: float = self.options["refused_backoff"]
        self.batch_bytes: int = self.options["batch_bytes"]
        self.refused_backoff_max: float = max(
            self.options["refused_backoff_max"], self.refused_backoff
        )

    def channel(self) -> grpc.Channel:
        """A channel with a connection of its own (the server budgets streams per connection;
        gRPC would otherwise share one between all channels of this process to the server)."""
        options = [
            *_channel_options(self.max_message),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.keepalive_time_ms", _ms(self.keepalive)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.http2.ping_timeout_ms", _ms(self.keepalive_timeout)),  # else a minute
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),  # an idle subscription is pinged too
        ]
        if self.secure:
            creds = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            return grpc.secure_channel(self.target, creds, options=options)
        return grpc.insecure_channel(self.target, options=options)

    def open_publisher(self, *, queue_size: int = 256) -> GrpcPublisher:
        return GrpcPublisher(self, queue_size=queue_size)

    def open_subscriber(
        self, start: Start | None = None, *, buffer: int = 1000, reconnect: bool = True
    ) -> GrpcSubscriber:
        start = start or Start.latest()
        if start.kind == "after":
            _sequence(start.position)  # refuse a foreign position here, not in the thread
        return GrpcSubscriber(self, start, buffer=buffer, reconnect=reconnect)

    @classmethod
    @contextmanager
    def local_stream(
        cls,
        variant: str,
        *,
        shared: Any = None,
        tight: bool = False,
        window: int = 200_000,
    ) -> Iterator[LocalStream]:
        """An AlertStreamServer in this process on a port the OS chose, retaining ``window``
        alerts; stopped on exit. ``tight``: 16 alerts, sent and acknowledged one per message
        (a batch as large as the window would evict it in one go)."""
        server_batch = 1 if tight else BATCH_BYTES
        with AlertStreamServer(window=16 if tight else window, batch_bytes=server_batch) as server:
            yield LocalStream(
                variant,
                f"{server.url}?batch_bytes=1" if tight else server.url,
                server=server,
                ports=[server.port],
                counter=server,
                subscriber_options={"buffer": 1} if tight else {},
            )


def _idle_closed(exc: grpc.RpcError) -> bool:
    """Whether the server ended this Publish stream because it sent nothing for a while."""
    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
        return False
    with contextlib.suppress(Exception):
        return IDLE_CLOSED in tuple(exc.trailing_metadata() or ())
    return False


class _PublishStream:
    """One Publish call of a publisher; ``done`` once it ended, for whatever reason."""

    def __init__(self) -> None:
        self.done = False
        self.call: Any = None
        self.thread: threading.Thread | None = None


class _Outgoing:
    """One published envelope, encoded as an EnvelopeBatch of one (joined with others into a
    batch as it leaves)."""

    __slots__ = ("alert_id", "wire")

    def __init__(self, wire: bytes, alert_id: int) -> None:
        self.wire = wire
        self.alert_id = alert_id


class GrpcPublisher(CannotCountSubscribers):
    """Streams envelopes to the server in batches; a bounded queue gives backpressure.

    Envelopes wait in ``_pending`` until the stream's request generator takes them: all that
    are waiting, up to the batch limit, in one message. Taken, a batch is ``_inflight`` until
    acknowledged (acknowledgements come in order, one per batch). If the server ends an idle
    stream, nothing in flight reached its window, so those go first on the next stream, which
    opens when there is something to send (``reopened`` counts them).
    """

    def __init__(self, transport: GrpcTransport, queue_size: int = 256) -> None:
        self.transport = transport
        self._channel = transport.channel()
        # Requests go as the bytes the publisher joined (no request serializer).
        self._publish = self._channel.stream_stream(
            f"/{SERVICE}/Publish", response_deserializer=pb.PublishAck.FromString
        )
        self._batch_bytes = min(transport.batch_bytes, transport.max_message - 64)
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._pending: collections.deque[_Outgoing] = collections.deque()
        self._inflight: collections.deque[list[_Outgoing]] = collections.deque()
        self._closing = False
        self._stream: _PublishStream | None = None
        self._failure: str | None = None
        self.published = 0
        self.acked: list[int] = []
        self.error: grpc.RpcError | None = None
        self.reopened = 0
        with self._cond:
            self._open()

    def _open(self) -> None:
        """Start a Publish call (under ``_cond``)."""
        stream = _PublishStream()
        stream.call = self._publish(self._requests(stream))
        stream.thread = threading.Thread(
            target=self._read_acks, args=(stream,), name="grpc-acks", daemon=True
        )
        self._stream = stream
        stream.thread.start()

    def _take_batch(self) -> list[_Outgoing]:
        """What is pending, up to the batch limit (under ``_cond``; at least one)."""
        pending = self._pending
        batch = [pending.popleft()]
        size = len(batch[0].wire)
        while pending and len(batch) < BATCH_ENVELOPES:
            size += len(pending[0].wire)
            if size > self._batch_bytes:
                break
            batch.append(pending.popleft())
        return batch

    def _requests(self, stream: _PublishStream) -> Iterator[bytes]:
        while True:
            with self._cond:
                while not self._pending and not stream.done and not self._closing:
                    self._cond.wait()
                if stream.done or not self._pending:  # this stream ended, or we close
                    return
                batch = self._take_batch()
                self._inflight.append(batch)
                self._cond.notify_all()
            yield batch[0].wire if len(batch) == 1 else b"".join(o.wire for o in batch)

    def _read_acks(self, stream: _PublishStream) -> None:
        error: grpc.RpcError | None = None
        try:
            for ack in stream.call:
                with self._cond:
                    batch = self._inflight.popleft() if self._inflight else []
                    if ack.count != len(batch) or (batch and ack.alert_id != batch[-1].alert_id):
                        self._failure = (
                            f"gRPC server acknowledged {ack.count} envelopes ending with alert "
                            f"{ack.alert_id}, not the batch of {len(batch)} it was sent"
                        )
                        stream.done = True  # no stream publishes after a forged ack
                        if self._stream is stream:
                            self._stream = None
                        self._cond.notify_all()
                        stream.call.cancel()
                        return
                    self.acked.extend(o.alert_id for o in batch)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            error = exc
        with self._cond:
            stream.done = True
            if self._stream is stream:
                self._stream = None
            if error is not None and _idle_closed(error):
                log.info("gRPC publish stream: %s", error.details())
                unacked = [o for batch in self._inflight for o in batch]
                self._pending.extendleft(reversed(unacked))  # never reached the window
                self._inflight.clear()
                if self._pending:
                    self._reopen()
            elif error is not None and error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
                self._failure = f"gRPC server refused the stream: {error.details()}"
                log.warning("gRPC publish stream failed: %s", error.details())
            elif self._pending or self._inflight or not self._closing:
                self._failure = "gRPC publish stream closed by the server"
            self._cond.notify_all()

    def _reopen(self) -> None:
        self.reopened += 1
        self._open()

    def _check(self) -> None:
        if self._failure is not None:
            raise TransportError(self._failure)

    def publish(self, envelope: Envelope) -> None:
        one = pb.EnvelopeBatch()
        one.envelopes.add(
            payload=envelope.payload,
            content_type=envelope.content_type,
            alert_id=envelope.alert_id,
            t_shutter_ns=envelope.t_shutter_ns,
            t_intended_ns=envelope.t_intended_ns,
            t_sent_ns=envelope.t_sent_ns or time.time_ns(),
        )
        outgoing = _Outgoing(one.SerializeToString(), envelope.alert_id)
        with self._cond:
            while True:
                self._check()
                if self._closing:
                    raise TransportError("gRPC publisher is closed")
                if self._stream is None:
                    self._reopen()  # the server closed the last one as idle
                if len(self._pending) < self._queue_size:
                    break
                self._cond.wait(0.5)
            self._pending.append(outgoing)
            self.published += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.acked) < self.published:
                self._check()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._stream is None and self._pending:
                    self._reopen()
                self._cond.wait(min(left, 0.5))
            return self.published - len(self.acked)

    def counters(self) -> dict[str, int]:
        return {
            "published": self.published,
            "acknowledged": len(self.acked),
            "reopened": self.reopened,
        }

    def close(self) -> None:
        with contextlib.suppress(TransportError):
            self.flush(10.0)
        with self._cond:
            self._closing = True
            stream = self._stream
            self._cond.notify_all()
        if stream is not None and stream.thread is not None:
            stream.thread.join(timeout=5)
        self._channel.close()


class GrpcSubscriber(QueuedSubscriber):
    """Reads the server stream in a thread; reconnects and resumes after the last sequence.

    Refused by the server (RESOURCE_EXHAUSTED: over one of its stream budgets), it records the
    reason in ``errors``, counts it in ``refused`` and tries again after a growing, jittered
    back-off (the transport's ``refused_backoff`` up to ``refused_backoff_max``).
    """

    def __init__(
        self, transport: GrpcTransport, start: Start, buffer: int = 1000, reconnect: bool = True
    ) -> None:
        self.transport = transport
        self.start = start
        self.reconnect = reconnect
        self._init_queue(buffer)
        self._next: int | None = None
        self.errors: list[str] = []
        self.disconnects = 0
        self.refused = 0
        self._call: Any = None
        self._channel = transport.channel()
        self._stub = pb_grpc.AlertStreamStub(self._channel)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-subscriber", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def _request(self) -> Any:
        request = self._start_request()
        request.max_batch_bytes = min(self.transport.max_message, 2**32 - 1)
        return request

    def _start_request(self) -> Any:
        req = pb.SubscribeRequest
        if self._next is not None:
            return req(start=req.SEQUENCE, sequence=self._next)
        kind = self.start.kind
        if kind == "earliest":
            return req(start=req.EARLIEST)
        if kind == "offset":
            return req(start=req.SEQUENCE, sequence=self.start.value)
        if kind == "after":
            return req(start=req.SEQUENCE, sequence=_sequence(self.start.position) + 1)
        if kind == "time":
            return req(start=req.TIME, time_ns=self.start.value)
        return req(start=req.LATEST)

    def _run(self) -> None:
        backoff, backoff_max = _RECONNECT_BACKOFF
        refused_backoff = self.transport.refused_backoff
        streak = 0  # refusals in a row
        while not self._stop.is_set():
            delay = None  # after a refusal: that back-off; else the reconnect one
            try:
                self._call = self._stub.Subscribe(self._request())
                with contextlib.suppress(grpc.FutureTimeoutError):
                    grpc.channel_ready_future(self._channel).result(timeout=5)
                self._started.set()
                for batch in self._call:
                    backoff = _RECONNECT_BACKOFF[0]
                    refused_backoff, streak = self.transport.refused_backoff, 0
                    if batch.envelopes:
                        self._put_batch(self._received(batch.envelopes))
                        self._next = batch.envelopes[-1].sequence + 1
            except grpc.RpcError as exc:
                if self._stop.is_set() or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.refused += 1
                    streak += 1
                    log.log(
                        logging.WARNING if streak == 1 else logging.DEBUG,
                        "gRPC subscriber refused by %s (%d in a row), trying again: %s",
                        self.transport.url,
                        streak,
                        exc.details(),
                    )
                    delay = refused_backoff * random.uniform(0.5, 1.0)  # jitter: not all at once
                    refused_backoff = min(refused_backoff * 2, self.transport.refused_backoff_max)
                else:
                    self.disconnects += 1
                    if exc.code() in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.OUT_OF_RANGE):
                        log.warning("gRPC subscriber: %s", exc.details())
                        return  # the caller decides whether to resume from the oldest retained
            if delay is None:
                delay, backoff = backoff, min(backoff * 2, backoff_max)
            self._started.set()
            if not self.reconnect:
                return
            self._stop.wait(delay)

    def _received(self, messages: Any) -> list[Received]:
        now = time.time_ns()
        url = self.transport.url
        return [
            Received(
                Envelope(
                    payload=m.payload,
                    content_type=m.content_type,
                    alert_id=m.alert_id,
                    t_shutter_ns=m.t_shutter_ns,
                    t_intended_ns=m.t_intended_ns,
                    t_sent_ns=m.t_sent_ns,
                    sequence=m.sequence,
                ),
                now,
                origin=f"{url}#{m.sequence}",
                position=m.sequence,
            )
            for m in messages
        ]

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "disconnects": self.disconnects,
            "refused": self.refused,
            "errors": len(self.errors),
        }

    def close(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=5)
        self._channel.close()


def _sequence(position: Any) -> int:
    """A gRPC stream position is the server's sequence number."""
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ConfigError(f"a gRPC position is a sequence number, not {position!r}")
    return position
