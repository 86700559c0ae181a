"""gRPC streaming transport: a server with a retention window, resume and flow control.

URL: ``grpc://127.0.0.1:PORT`` (``grpcs://`` with TLS). Run a server with
:class:`AlertStreamServer` (``alertbench`` starts one for the harness); publishers and
subscribers are clients of it.

* **Publish** is a bidirectional stream: envelopes in, one acknowledgement per accepted envelope
  out, so ``flush()`` knows what the server holds (per-message acknowledgement).
* **Retention**: the server keeps a bounded window of recent envelopes in memory (``window``
  alerts and ``window_bytes`` bytes, whichever binds first); subscribers start from the latest,
  the earliest retained, a sequence number (resume) or a time.
* **Flow control**: each subscriber is a cursor into the window; HTTP/2 flow control makes the
  server produce only as fast as that subscriber reads, so a slow subscriber costs no memory
  beyond the window. One that falls out of the window is **disconnected** with ``DATA_LOSS``
  and the number of alerts it missed; it can resume from the oldest retained alert.
* Message size limits are raised to ``max_message`` (16 MiB by default) on both sides.
* Durability: none beyond the server process (the window is in memory).

Capabilities: replay, fan-out, per-message acknowledgement; a slow subscriber is
**disconnected** once it falls out of the window (the publisher is never slowed by it).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
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


def _channel_options(max_message: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
    ]


class _Window:
    """The retained envelopes, oldest first, with their server-assigned sequence numbers."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.items: collections.deque[tuple[int, Any]] = collections.deque()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0
        self.next_sequence = 0
        self.cond = threading.Condition()

    def append(self, message: Any) -> int:
        with self.cond:
            seq = self.next_sequence
            message.sequence = seq
            self.items.append((seq, message))
            self.bytes += len(message.payload)
            self.next_sequence += 1
            while self.items and (len(self.items) > self.max_items or self.bytes > self.max_bytes):
                _, old = self.items.popleft()
                self.bytes -= len(old.payload)
            self.cond.notify_all()
            return seq

    def first_sequence(self) -> int:
        return self.items[0][0] if self.items else self.next_sequence

    def get(self, seq: int) -> Any:
        first = self.first_sequence()
        return self.items[seq - first][1]


class _Servicer(pb_grpc.AlertStreamServicer):
    def __init__(self, window: _Window, stopping: threading.Event) -> None:
        self.window = window
        self.stopping = stopping
        self.subscribers = 0
        """Subscribe calls whose starting point is set: they see everything published next."""

    def Publish(self, request_iterator, context):
        for message in request_iterator:
            seq = self.window.append(message)
            yield pb.PublishAck(sequence=seq, alert_id=message.alert_id)

    def Subscribe(self, request, context):
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
                    (s for s, m in window.items if m.t_sent_ns >= request.time_ns),
                    window.next_sequence,
                )
            else:
                cursor = window.next_sequence
            self.subscribers += 1  # counted once its starting point is fixed
        try:
            yield from self._follow(cursor, context)
        finally:
            with window.cond:
                self.subscribers -= 1

    def _follow(self, cursor: int, context: Any) -> Iterator[Any]:
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
                message = window.get(cursor)
            cursor += 1
            yield message


class AlertStreamServer(CountsSubscribers):
    """The gRPC alert-stream server. ``start()`` returns the port it bound on 127.0.0.1."""

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        *,
        window: int = 100_000,
        window_bytes: int = 2 * 1024**3,
        max_message: int = MAX_FRAME,
        workers: int = 32,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.bind = bind
        self.window = _Window(window, window_bytes)
        self.max_message = max_message
        self._stopping = threading.Event()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alertstream"),
            options=_channel_options(max_message),
        )
        self._servicer = _Servicer(self.window, self._stopping)
        pb_grpc.add_AlertStreamServicer_to_server(self._servicer, self._server)
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

    def channel(self) -> grpc.Channel:
        options = _channel_options(self.max_message)
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
        alerts (16 when ``tight``); stopped on exit."""
        with AlertStreamServer(window=16 if tight else window) as server:
            yield LocalStream(
                variant,
                server.url,
                server=server,
                ports=[server.port],
                counter=server,
                subscriber_options={"buffer": 1} if tight else {},
            )


_CLOSE = object()


class GrpcPublisher(CannotCountSubscribers):
    """Streams envelopes to the server; a bounded queue gives backpressure."""

    def __init__(self, transport: GrpcTransport, queue_size: int = 256) -> None:
        self.transport = transport
        self._channel = transport.channel()
        self._stub = pb_grpc.AlertStreamStub(self._channel)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.published = 0
        self.acked: list[int] = []
        self.error: grpc.RpcError | None = None
        self._done = threading.Event()
        self._responses = self._stub.Publish(self._requests())
        self._thread = threading.Thread(target=self._read_acks, name="grpc-acks", daemon=True)
        self._thread.start()

    def _requests(self):
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            yield item

    def _read_acks(self) -> None:
        try:
            for ack in self._responses:
                self.acked.append(ack.alert_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
                log.warning("gRPC publish stream failed: %s", exc.details())
        finally:
            self._done.set()

    def publish(self, envelope: Envelope) -> None:
        if self.error is not None:
            raise TransportError(f"gRPC server refused the stream: {self.error.details()}")
        message = pb.Envelope(
            payload=envelope.payload,
            content_type=envelope.content_type,
            alert_id=envelope.alert_id,
            t_shutter_ns=envelope.t_shutter_ns,
            t_intended_ns=envelope.t_intended_ns,
            t_sent_ns=envelope.t_sent_ns or time.time_ns(),
        )
        while True:
            try:
                self._queue.put(message, timeout=0.5)
                break
            except queue.Full:
                if self._done.is_set():
                    raise TransportError("gRPC publish stream closed") from None
        self.published += 1

    def flush(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while len(self.acked) < self.published and time.monotonic() < deadline:
            if self.error is not None:
                raise TransportError(f"gRPC server refused the stream: {self.error.details()}")
            if self._done.is_set():
                break
            time.sleep(0.002)
        return self.published - len(self.acked)

    def counters(self) -> dict[str, int]:
        return {"published": self.published, "acknowledged": len(self.acked)}

    def close(self) -> None:
        with contextlib.suppress(TransportError):
            self.flush(10.0)
        self._queue.put(_CLOSE)
        self._thread.join(timeout=5)
        self._channel.close()


class GrpcSubscriber(QueuedSubscriber):
    """Reads the server stream in a thread; reconnects and resumes after the last sequence."""

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
        self._call: Any = None
        self._channel = transport.channel()
        self._stub = pb_grpc.AlertStreamStub(self._channel)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-subscriber", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    def _request(self) -> Any:
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
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._call = self._stub.Subscribe(self._request())
                with contextlib.suppress(grpc.FutureTimeoutError):
                    grpc.channel_ready_future(self._channel).result(timeout=5)
                self._started.set()
                for message in self._call:
                    backoff = 0.05
                    envelope = Envelope(
                        payload=message.payload,
                        content_type=message.content_type,
                        alert_id=message.alert_id,
                        t_shutter_ns=message.t_shutter_ns,
                        t_intended_ns=message.t_intended_ns,
                        t_sent_ns=message.t_sent_ns,
                        sequence=message.sequence,
                    )
                    self._next = message.sequence + 1
                    self._put(
                        Received(
                            envelope,
                            time.time_ns(),
                            origin=f"{self.transport.url}#{message.sequence}",
                            position=message.sequence,
                        )
                    )
            except grpc.RpcError as exc:
                if self._stop.is_set() or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                self.errors.append(f"{exc.code().name}: {exc.details()}")
                self.disconnects += 1
                if exc.code() in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.OUT_OF_RANGE):
                    log.warning("gRPC subscriber: %s", exc.details())
                    return  # the caller decides whether to resume from the oldest retained
            self._started.set()
            if not self.reconnect:
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "disconnects": self.disconnects,
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
