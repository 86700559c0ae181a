"""The baseline: length-prefixed frames over plain TCP, no acknowledgements, no broker.

URL: ``tcp://127.0.0.1:PORT``. The publisher listens; each subscriber holds one connection and
receives every envelope written after it connected. This is the ceiling every other transport is
compared to: one ``sendall`` of header and payload per subscriber, nothing else. A slow
subscriber slows the publisher (TCP flow control: backpressure, nothing dropped); a subscriber
that sends anything, or disappears, is dropped and logged.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import Any

from alertbench.transports.base import (
    Capabilities,
    CountsSubscribers,
    Envelope,
    Received,
    Start,
    TransportError,
    parse_url,
)
from alertbench.transports.framing import (
    DEFAULT_MAX_FRAME,
    SocketSubscriber,
    encode_frame,
    read_frame,
)

log = logging.getLogger(__name__)


def _host_port(netloc: str) -> tuple[str, int]:
    host, _, port = netloc.rpartition(":")
    return host or "127.0.0.1", int(port)


class TcpTransport:
    capabilities = Capabilities(
        replay=False, durable=False, fanout=True, backpressure=True, acknowledgement="none"
    )

    def __init__(self, url: str, *, max_frame: int = DEFAULT_MAX_FRAME, **_: Any) -> None:
        _, netloc, _, query = parse_url(url)
        self.url = url
        self.address = _host_port(netloc)
        self.max_frame = int(query.get("max_frame", max_frame))

    def open_publisher(self, **options: Any) -> TcpPublisher:
        return TcpPublisher(self.address, **options)

    def open_subscriber(self, start: Start | None = None, **options: Any) -> TcpSubscriber:
        if start is not None and start.kind != "latest":
            raise TransportError(
                f"tcp has no replay: it cannot start from {start.kind!r}, only from now"
            )
        return TcpSubscriber(self.address, max_frame=self.max_frame, **options)


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
        self._thread = threading.Thread(target=self._watch, name="tcp-publisher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        """Accept subscribers; drop any that send bytes (subscribers only listen) or hang up."""
        while not self._stop.is_set():
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
        with contextlib.suppress(Exception):
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
        max_frame: int = DEFAULT_MAX_FRAME,
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
