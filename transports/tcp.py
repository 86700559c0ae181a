"""The baseline: length-prefixed frames over plain TCP, no acknowledgements, no broker.

URL: ``tcp://127.0.0.1:PORT``. The publisher listens; each subscriber holds one connection and
receives every envelope written after it connected. This is the ceiling every other transport is
compared to: one ``sendall`` of header and payload per subscriber, nothing else. A slow
subscriber slows the publisher (TCP flow control: backpressure, nothing dropped), and with it
every other subscriber, since one thread writes to all of them in turn; a subscriber that sends
anything, or disappears, is dropped and logged.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from alertbench.transports.base import (
    MAX_FRAME,
    BaseTransport,
    Capabilities,
    CountsSubscribers,
    Envelope,
    LocalStream,
    Option,
    Received,
    Start,
    refuse_replay,
)
from alertbench.transports.framing import SocketSubscriber, encode_frame, read_frame

from alertbench.errors import ConfigError

log = logging.getLogger(__name__)


def host_port(netloc: str, url: str) -> tuple[str, int]:
    """(host, port) of a ``host:port`` URL location; ConfigError if the port is missing."""
    host, _, port = netloc.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"{url} needs a numeric port (e.g. 127.0.0.1:5556)")
    return host or "127.0.0.1", int(port)


class TcpTransport(BaseTransport):
    capabilities = Capabilities(
        replay=False,
        durable=False,
        fanout=True,
        backpressure=True,
        acknowledgement="none",
        slow_subscriber="backpressure",
        options={
            "max_frame": Option(
                MAX_FRAME, "largest frame a subscriber accepts, bytes", "int", minimum=64
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"tcp": {}}

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.address = host_port(self.netloc, url)
        self.max_frame: int = self.options["max_frame"]

    def open_publisher(self, *, backlog: int = 64) -> TcpPublisher:
        return TcpPublisher(self.address, backlog=backlog)

    def open_subscriber(
        self,
        start: Start | None = None,
        *,
        buffer: int = 1000,
        reconnect: bool = True,
        connect_timeout: float = 0.0,
    ) -> TcpSubscriber:
        refuse_replay("tcp", start)
        return TcpSubscriber(
            self.address,
            max_frame=self.max_frame,
            buffer=buffer,
            reconnect=reconnect,
            connect_timeout=connect_timeout,
        )

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False
    ) -> Iterator[LocalStream]:
        """A free loopback port: the publisher listens on it, nothing else runs."""
        from alertbench.transports.servers.kafka_cluster import free_port

        port = free_port()
        yield LocalStream(
            variant,
            f"tcp://127.0.0.1:{port}",
            ports=[port],
            subscriber_options={"buffer": 1} if tight else {},
        )


class TcpPublisher(CountsSubscribers):
    """Listens for subscribers and writes every envelope to each of them."""

    def __init__(self, address: tuple[str, int], backlog: int = 64) -> None:
        self._server = socket.create_server(address, backlog=backlog, reuse_port=False)
        self.address = self._server.getsockname()[:2]
        self._subscribers: list[socket.socket] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, "accept")
        self._stop = threading.Event()
        self.dropped: list[str] = []
        self.published = 0
        self.bytes_sent = 0
        self._thread = threading.Thread(target=self._watch, name="tcp-publisher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        """Accept subscribers; drop any that send bytes (subscribers only listen) or hang up.
        Nothing one peer does may end this thread: without it no subscriber is ever accepted."""
        while not self._stop.is_set():
            try:
                self._watch_once()
            except Exception:  # logged and survived: the next peer must still be served
                log.exception("tcp publisher: error while watching subscribers")

    def _watch_once(self) -> None:
        for key, _ in self._selector.select(timeout=0.2):
            if key.data == "accept":
                with contextlib.suppress(OSError):
                    conn, _ = self._server.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self._lock:
                        self._subscribers.append(conn)
                    self._selector.register(conn, selectors.EVENT_READ, "subscriber")
                continue
            conn = key.fileobj
            try:
                data = conn.recv(4096)  # type: ignore[union-attr]
            except OSError:
                data = b""
            reason = (
                f"sent {len(data)} unexpected bytes (subscribers must not send)"
                if data
                else "disconnected"
            )
            self._drop(conn, reason)  # type: ignore[arg-type]

    def _drop(self, conn: socket.socket, reason: str) -> None:
        peer: Any = "(gone)"  # a peer that reset has no name any more
        with contextlib.suppress(OSError):
            peer = conn.getpeername()
        self.dropped.append(reason)
        if reason != "disconnected":
            log.warning("tcp publisher dropped subscriber %s: %s", peer, reason)
        with self._lock:
            if conn in self._subscribers:
                self._subscribers.remove(conn)
        with contextlib.suppress(Exception):
            self._selector.unregister(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def connected_subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, envelope: Envelope) -> None:
        pieces = encode_frame(envelope, envelope.t_sent_ns or time.time_ns())
        with self._lock:
            targets = list(self._subscribers)
        for conn in targets:
            try:
                for piece in pieces:
                    conn.sendall(piece)
            except OSError as exc:
                self._drop(conn, f"write failed: {exc}")
            else:
                self.bytes_sent += sum(len(p) for p in pieces)
        self.published += 1

    def counters(self) -> dict[str, int]:
        """Frames published; frame bytes written (every subscriber's); subscribers dropped."""
        return {
            "published": self.published,
            "bytes_sent": self.bytes_sent,
            "subscribers_dropped": sum(1 for d in self.dropped if d != "disconnected"),
        }

    def flush(self, timeout: float = 30.0) -> int:
        return 0  # sendall has handed everything to the kernel; there are no acknowledgements

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            conns, self._subscribers = self._subscribers, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._server.close()
        self._selector.close()


class TcpSubscriber(SocketSubscriber):
    """Connects (and reconnects, with back-off) and reads frames in a background thread."""

    label = "tcp subscriber"

    def __init__(
        self,
        address: tuple[str, int],
        *,
        max_frame: int = MAX_FRAME,
        buffer: int = 1000,
        reconnect: bool = True,
        connect_timeout: float = 0.0,
    ) -> None:
        self.max_frame = max_frame
        self._start(address, buffer=buffer, reconnect=reconnect, connect_timeout=connect_timeout)

    def _serve(self, sock: socket.socket) -> None:
        origin = f"tcp://{self.address[0]}:{self.address[1]}"
        while not self._stop.is_set():
            envelope = read_frame(sock, self.max_frame)
            self._put(Received(envelope, time.time_ns(), origin=origin, position=envelope.sequence))
