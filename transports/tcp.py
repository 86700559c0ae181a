"""The baseline: length-prefixed frames over plain TCP, no acknowledgements, no broker.

URL: ``tcp://127.0.0.1:PORT``. The publisher listens; each subscriber holds one connection and
receives every envelope written after it connected. This is the ceiling every other transport is
compared to: one write of header and payload per subscriber, nothing else.

Per-peer budgets, so that one subscriber never stalls the others: each subscriber has its own
writer thread and an outbox bounded in bytes (``outbox_bytes``). A subscriber whose outbox stays
full for half a second while another keeps up (under half an outbox queued), or whose socket
accepts nothing for ``write_timeout`` seconds, is **disconnected** and counted
(``subscribers_dropped``); the publisher and the other subscribers go on. When every outbox is
full, the readers together are the bottleneck and the publisher waits for them (TCP flow
control), never longer than the write timeout: one subscriber alone that stops reading stalls
the publisher that long, then is cut. At most ``max_subscribers`` connections are served; one
over the cap is closed at once and counted (``subscribers_refused``). A subscriber that sends
anything (subscribers only listen), or disappears, is dropped and logged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
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
from alertbench.transports.framing import FrameReader, SocketSubscriber, encode_frame

from alertbench.errors import ConfigError

log = logging.getLogger(__name__)

OUTBOX_BYTES = 64 * 1024 * 1024
"""Bytes queued for one subscriber before it counts as too slow (~500 alerts with cutouts)."""
WRITE_TIMEOUT = 10.0
MAX_SUBSCRIBERS = 256
LAG_GRACE = 0.5
"""Seconds a subscriber's outbox must stay full before it counts as lagging the others (kernel
socket buffers make a moment's comparison of outboxes meaningless)."""


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
        slow_subscriber="disconnect",
        options={
            "max_frame": Option(
                MAX_FRAME, "largest frame a subscriber accepts, bytes", "int", minimum=64
            ),
            "outbox_bytes": Option(
                OUTBOX_BYTES,
                "bytes the publisher queues for one subscriber before disconnecting it as slow",
                "int",
                minimum=1,
            ),
            "write_timeout": Option(
                WRITE_TIMEOUT,
                "seconds a subscriber's socket may accept nothing before it is disconnected",
                "float",
                minimum=0.01,
            ),
            "max_subscribers": Option(
                MAX_SUBSCRIBERS,
                "connections the publisher serves at once; more are closed and counted",
                "int",
                minimum=1,
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"tcp": {}}
    url_example = "tcp://127.0.0.1:5600"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.address = host_port(self.netloc, url)
        self.max_frame: int = self.options["max_frame"]

    def open_publisher(self, *, backlog: int = 64) -> TcpPublisher:
        return TcpPublisher(
            self.address,
            backlog=backlog,
            outbox_bytes=self.options["outbox_bytes"],
            write_timeout=self.options["write_timeout"],
            max_subscribers=self.options["max_subscribers"],
        )

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
        """A free loopback port: the publisher listens on it, nothing else runs. ``tight``: a
        4 MiB outbox and a 2 s write timeout, so that a slow subscriber is found quickly."""
        from alertbench.transports.servers.kafka_cluster import free_port

        port = free_port()
        query = "?outbox_bytes=4194304&write_timeout=2" if tight else ""
        yield LocalStream(
            variant,
            f"tcp://127.0.0.1:{port}{query}",
            ports=[port],
            subscriber_options={"buffer": 1} if tight else {},
        )


class _Peer:
    """One subscriber's connection, outbox and writer thread."""

    def __init__(self, publisher: TcpPublisher, conn: socket.socket) -> None:
        self.publisher = publisher
        self.conn = conn
        self.name: Any = "(gone)"
        with contextlib.suppress(OSError):
            self.name = conn.getpeername()
        conn.settimeout(publisher.write_timeout)
        self.frames: collections.deque[list[Any]] = collections.deque()
        self.queued = 0
        self.closed = False
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._write, name="tcp-peer-writer", daemon=True)
        self.thread.start()

    def offer(self, pieces: list[Any], size: int) -> bool:
        """Send or queue one frame; False (and nothing queued) if it would overflow the outbox.

        With nothing queued the frame goes straight to the kernel from the publisher's thread
        (one non-blocking ``sendmsg``), and only what the socket would not take is handed to
        the writer thread: a handoff per frame and subscriber (a condition variable and a
        thread switch, under the GIL) was most of what the tcp publisher spent beyond a raw
        socket's ``sendmsg``."""
        with self.ready:
            if self.closed:
                return True  # being dropped already
            if not self.frames:  # the writer is idle: nothing of an earlier frame is unsent
                rest = self._send_now(pieces)
                if rest is None:
                    return True
                pieces = rest
            elif self.queued + size > self.publisher.outbox_bytes:
                return False  # an empty outbox takes any one frame
            self.frames.append(pieces)
            self.queued += sum(len(p) for p in pieces)
            self.ready.notify()
        return True

    def _send_now(self, pieces: list[Any]) -> list[Any] | None:
        """What of the frame the socket did not take at once (None: all of it was sent).

        ``os.writev`` on the socket's descriptor, which a socket with a timeout keeps
        non-blocking: a socket method would first wait for room for up to the write timeout,
        in the publisher's thread, which is the writer thread's job."""
        views = [memoryview(p) for p in pieces if len(p)]
        total = sum(len(v) for v in views)
        try:
            sent = os.writev(self.conn.fileno(), views)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return pieces  # the writer meets the same error and drops the peer with it
        if sent:
            self.publisher._sent(sent)
        if sent >= total:
            return None
        _advance(views, sent)
        return views

    def wait_for_room(self, timeout: float) -> None:
        """Until a queued frame is written (or ``timeout``): the publisher waits on all."""
        with self.ready:
            if self.frames and not self.closed:
                self.ready.wait(timeout)

    def idle(self) -> bool:
        with self.ready:
            return not self.frames or self.closed

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.frames and not self.closed:
                    self.ready.wait()
                if self.closed:
                    return
                pieces = self.frames[0]
            try:
                _send_all(self.conn, pieces)
            except TimeoutError:
                self.publisher._drop(
                    self,
                    f"slow: its socket accepted nothing for {self.publisher.write_timeout:g} s",
                )
                return
            except OSError as exc:
                self.publisher._drop(self, f"write failed: {exc}")
                return
            size = sum(len(p) for p in pieces)
            with self.ready:
                if self.frames:
                    self.frames.popleft()
                self.queued -= size
                self.ready.notify_all()
            self.publisher._sent(size)

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.frames.clear()
            self.queued = 0
            self.ready.notify_all()
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()


def _send_all(conn: socket.socket, pieces: list[bytes]) -> None:
    """Write every piece (one frame) with sendmsg, resuming after partial writes."""
    views = [memoryview(p) for p in pieces if len(p)]
    while views:
        _advance(views, conn.sendmsg(views))


def _advance(views: list[memoryview], sent: int) -> None:
    """Drop from ``views`` the ``sent`` bytes a partial write took, in place."""
    while views and sent >= len(views[0]):
        sent -= len(views[0])
        views.pop(0)
    if views and sent:
        views[0] = views[0][sent:]


class TcpPublisher(CountsSubscribers):
    """Listens for subscribers and queues every envelope to each of them."""

    def __init__(
        self,
        address: tuple[str, int],
        backlog: int = 64,
        *,
        outbox_bytes: int = OUTBOX_BYTES,
        write_timeout: float = WRITE_TIMEOUT,
        max_subscribers: int = MAX_SUBSCRIBERS,
    ) -> None:
        self.outbox_bytes = outbox_bytes
        self.write_timeout = write_timeout
        self.max_subscribers = max_subscribers
        self._server = socket.create_server(address, backlog=backlog, reuse_port=False)
        self.address = self._server.getsockname()[:2]
        self._peers: dict[socket.socket, _Peer] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, "accept")
        self._stop = threading.Event()
        self.dropped: list[str] = []
        self.refused = 0
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
                self._accept()
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
            with self._lock:
                peer = self._peers.get(conn)  # type: ignore[call-overload]
            if peer is not None:
                self._drop(peer, reason)

    def _accept(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with self._lock:
            full = len(self._peers) >= self.max_subscribers
        if full:
            self.refused += 1
            log.warning(
                "tcp publisher refused a subscriber: %d connections is its maximum",
                self.max_subscribers,
            )
            with contextlib.suppress(OSError):
                conn.close()
            return
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = _Peer(self, conn)
        with self._lock:
            self._peers[conn] = peer
        self._selector.register(conn, selectors.EVENT_READ, "subscriber")

    def _drop(self, peer: _Peer, reason: str) -> None:
        with self._lock:
            if self._peers.pop(peer.conn, None) is None:
                return  # dropped already, by the writer or the watcher
        self.dropped.append(reason)
        if reason != "disconnected":
            log.warning("tcp publisher dropped subscriber %s: %s", peer.name, reason)
        with contextlib.suppress(Exception):
            self._selector.unregister(peer.conn)
        peer.close()

    def _sent(self, size: int) -> None:
        with self._lock:
            self.bytes_sent += size

    def connected_subscribers(self) -> int:
        with self._lock:
            return len(self._peers)

    def publish(self, envelope: Envelope) -> None:
        """Queue the frame for every subscriber. A subscriber whose outbox stays full for
        LAG_GRACE while another's is less than half full lags the others: it is disconnected.
        When every outbox is full the readers as a whole are the bottleneck, and publish waits
        (TCP backpressure), each subscriber bounded by its write timeout."""
        pieces = encode_frame(envelope, envelope.t_sent_ns or time.time_ns())
        size = sum(len(p) for p in pieces)
        with self._lock:
            targets = list(self._peers.values())
        for peer in targets:
            full_since = None
            while not peer.offer(pieces, size):
                now = time.monotonic()
                full_since = full_since or now
                if now - full_since >= LAG_GRACE and self._lags(peer):
                    self._drop(
                        peer,
                        f"slow: {peer.queued:,} bytes queued (its outbox holds "
                        f"{self.outbox_bytes:,}) while another subscriber keeps up",
                    )
                    break
                peer.wait_for_room(0.05)
        self.published += 1

    def _lags(self, peer: _Peer) -> bool:
        """Whether another live subscriber has less than half an outbox queued."""
        with self._lock:
            others = [p for p in self._peers.values() if p is not peer]
        return any(p.queued < self.outbox_bytes // 2 for p in others)

    def counters(self) -> dict[str, int]:
        """Frames published; frame bytes written (every subscriber's); subscribers dropped for
        a reason of theirs (slow, sent bytes, write failed); connections refused over the cap."""
        return {
            "published": self.published,
            "bytes_sent": self.bytes_sent,
            "subscribers_dropped": sum(1 for d in self.dropped if d != "disconnected"),
            "subscribers_refused": self.refused,
        }

    def flush(self, timeout: float = 30.0) -> int:
        """Wait until every outbox is written to the kernel; returns how many frames are still
        queued (there are no acknowledgements beyond the kernel's socket buffer)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = [p for p in self._peers.values() if not p.idle()]
            if not busy or time.monotonic() >= deadline:
                return sum(len(p.frames) for p in busy)
            time.sleep(0.005)

    def close(self) -> None:
        """Written what is queued (each subscriber within its write timeout), then closed."""
        self.flush(self.write_timeout)
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            peer.close()
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
        reader = FrameReader(sock, self.max_frame)
        while not self._stop.is_set():
            batch = reader.read_batch()
            now = time.time_ns()
            self._put_batch([Received(e, now, origin=origin, position=e.sequence) for e in batch])
