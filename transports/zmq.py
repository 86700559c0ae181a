"""ZeroMQ transport (pyzmq): PUB/SUB fan-out or PUSH/PULL pipelines, no broker, no replay.

URL: ``zmq+tcp://127.0.0.1:PORT?pattern=pubsub|pushpull&hwm=N``. The publisher binds.

* ``pubsub``: every subscriber gets every envelope sent after its subscription arrived. When a
  subscriber's high-water mark (``hwm`` messages, each side) is reached, ZeroMQ **drops** new
  messages for that subscriber instead of slowing the publisher; the subscriber counts what it
  lost from the gaps in the sequence numbers (``gaps``, ``dropped`` in its counters).
  Capabilities say so: no backpressure, slow subscriber "drop-newest".
* ``pushpull``: envelopes are dealt round-robin to the connected pullers (load balancing, not
  fan-out); a full high-water mark blocks the publisher (backpressure, nothing dropped).

Neither replays: a subscriber asking for an earlier start is refused.

Per-peer budgets: each peer has its own queue of ``hwm`` messages (what a full one does is the
pattern's policy above), message parts over ``max_message`` are refused before anything is
buffered (ZMQ_MAXMSGSIZE), a connection that does not complete the ZMTP handshake within
``handshake_timeout`` is closed, and heartbeats close a peer that went silent. libzmq has no
connection cap: each idle connection costs its I/O thread a socket and no more.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import zmq
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
    TransportError,
    refuse_replay,
)
from alertbench.transports.framing import FrameError, pack_header, unpack
from alertbench.transports.tcp import host_port

log = logging.getLogger(__name__)
PATTERNS = ("pubsub", "pushpull")
PUBSUB_HWM = 40_000
"""A peak visit (LSST: up to 40,000 alerts). libzmq's own 1,000 dropped half of a 2,000-alert
burst sent at full speed (measured here). The cost is memory, only while a subscriber lags:
a subscriber a whole peak visit behind holds up to 40,000 x ~134 KB (about 5.4 GB) on the
publisher's side; a publisher with less memory per subscriber sets ``hwm`` lower and accepts
the drops, which are counted."""
PUSHPULL_HWM = 1_000
"""libzmq's own: a full queue blocks the publisher, so a larger one only delays that and costs
memory."""
SUBSCRIPTION_MAX = 4096
"""Largest message a publisher accepts from a peer (a subscription is 1 byte + a prefix)."""


class ZmqTransport(BaseTransport):
    capabilities = Capabilities(
        replay=False,
        durable=False,
        fanout=True,
        backpressure=False,
        acknowledgement="none",
        slow_subscriber="drop-newest",
        options={
            "pattern": Option(
                "pubsub",
                "pubsub: fan-out, drops for a slow subscriber; pushpull: round-robin, blocks",
                "choice",
                choices=PATTERNS,
            ),
            "hwm": Option(
                0,
                "high-water mark, messages queued on each side; 0: the pattern's own, pubsub "
                f"{PUBSUB_HWM:,} (a peak visit for a subscriber that reads none of it "
                f"meanwhile), pushpull {PUSHPULL_HWM:,} (it blocks the publisher instead)",
                "int",
                minimum=0,
            ),
            "max_message": Option(
                MAX_FRAME,
                "largest message part a subscriber accepts, bytes (ZMQ_MAXMSGSIZE: a peer "
                "announcing more is disconnected before anything is buffered)",
                "int",
                minimum=1024,
            ),
            "handshake_timeout": Option(
                10.0,
                "seconds a new peer has to complete the ZMTP handshake before it is closed",
                "float",
                minimum=0.1,
            ),
            "heartbeat": Option(
                5.0,
                "seconds between ZMTP heartbeats; a peer silent for three is closed",
                "float",
                minimum=0.1,
            ),
        },
    )
    """As declared for ``pubsub``; an instance's capabilities follow its pattern."""
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "zmq-pubsub": {"pattern": "pubsub"},
        "zmq-pushpull": {"pattern": "pushpull"},
    }
    url_example = "zmq+tcp://127.0.0.1:5601"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        host, port = host_port(self.netloc, url)
        self.endpoint = f"{self.scheme.split('+', 1)[1]}://{host}:{port}"
        self.pattern: str = self.options["pattern"]
        self.hwm: int = self.options["hwm"] or (
            PUSHPULL_HWM if self.pattern == "pushpull" else PUBSUB_HWM
        )
        self.max_message: int = self.options["max_message"]
        self.handshake_ms = int(self.options["handshake_timeout"] * 1000)
        self.heartbeat_ms = int(self.options["heartbeat"] * 1000)
        pushpull = self.pattern == "pushpull"
        self.capabilities = dataclasses.replace(
            type(self).capabilities,
            fanout=not pushpull,
            backpressure=pushpull,
            slow_subscriber="backpressure" if pushpull else "drop-newest",
        )

    def open_publisher(self) -> ZmqPublisher:
        return ZmqPublisher(self)

    def open_subscriber(self, start: Start | None = None) -> ZmqSubscriber:
        refuse_replay(f"zmq ({self.pattern})", start)
        return ZmqSubscriber(self)

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False
    ) -> Iterator[LocalStream]:
        """A free loopback port the publisher binds; no server."""
        from alertbench.transports.servers.kafka_cluster import free_port

        port = free_port()
        pattern = cls.variants[variant]["pattern"]
        # Tight: small enough that a burst of large messages overflows, but not below 8: ZeroMQ
        # returns write credit to the sender in batches, so with hwm 2-4 it drops every few
        # messages even for a subscriber that reads each one as it comes (measured here).
        url = f"zmq+tcp://127.0.0.1:{port}?pattern={pattern}" + ("&hwm=8" if tight else "")
        yield LocalStream(variant, url, ports=[port])


def _set_peer_timeouts(sock: zmq.Socket[Any], transport: ZmqTransport) -> None:
    """A peer that never completes its handshake, or goes silent (a dead host, a half-open
    connection), is closed by libzmq instead of holding its queue for ever."""
    sock.setsockopt(zmq.HANDSHAKE_IVL, transport.handshake_ms)
    sock.setsockopt(zmq.HEARTBEAT_IVL, transport.heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * transport.heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * transport.heartbeat_ms)


class ZmqPublisher(CountsSubscribers):
    def __init__(self, transport: ZmqTransport) -> None:
        self.transport = transport
        self._ctx = zmq.Context.instance()
        if transport.pattern == "pubsub":
            # XPUB reports each subscription, so "wait for N subscribers" is exact.
            self._sock = self._ctx.socket(zmq.XPUB)
            # VERBOSER: every subscribe *and* unsubscribe (also a subscriber's disconnect).
            self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        else:
            self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, transport.hwm)
        self._sock.setsockopt(zmq.LINGER, 5000)
        # What a publisher receives is subscriptions (XPUB) or nothing (PUSH): a few bytes.
        self._sock.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_MAX)
        _set_peer_timeouts(self._sock, transport)
        self._monitor = self._sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        try:
            self._sock.bind(transport.endpoint)
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot bind {transport.endpoint}: {exc}") from exc
        self.subscribers = 0
        self.peers = 0
        self.published = 0

    def _drain_events(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.peers += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.peers -= 1
        if self.transport.pattern == "pubsub":
            while self._sock.poll(0):
                message = self._sock.recv()
                if message[:1] == b"\x01":
                    self.subscribers += 1
                elif message[:1] == b"\x00":
                    self.subscribers -= 1

    def connected_subscribers(self) -> int:
        self._drain_events()
        return self.subscribers if self.transport.pattern == "pubsub" else self.peers

    def publish(self, envelope: Envelope) -> None:
        header = pack_header(envelope, envelope.t_sent_ns or time.time_ns())
        self._sock.send_multipart([header, envelope.payload], copy=False)
        self.published += 1

    def counters(self) -> dict[str, int]:
        """Messages handed to ZeroMQ (what it dropped for a slow subscriber is not known here)."""
        return {"published": self.published}

    def flush(self, timeout: float = 30.0) -> int:
        self._drain_events()
        return 0  # ZeroMQ has no acknowledgements to wait for

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close()  # LINGER lets queued messages go out first


class ZmqSubscriber:
    def __init__(self, transport: ZmqTransport) -> None:
        self.transport = transport
        self._ctx = zmq.Context.instance()
        if transport.pattern == "pubsub":
            self._sock = self._ctx.socket(zmq.SUB)
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, transport.hwm)
        # Without it a peer announcing an 8 GB part is buffered until memory runs out.
        self._sock.setsockopt(zmq.MAXMSGSIZE, transport.max_message)
        _set_peer_timeouts(self._sock, transport)
        self._sock.setsockopt(zmq.RECONNECT_IVL, 50)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(transport.endpoint)
        self.errors: list[str] = []
        self.gaps = 0
        self.received = 0
        self._last_sequence: int | None = None

    def counters(self) -> dict[str, int]:
        """``dropped``: envelopes missing between the sequence numbers received (pub/sub)."""
        return {"received": self.received, "dropped": self.gaps, "errors": len(self.errors)}

    def poll(self, timeout: float = 1.0) -> Received | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(remaining_ms):  # poll(0) still looks once
                return None
            parts = self._sock.recv_multipart()
            now = time.time_ns()
            try:
                if len(parts) != 2:
                    raise FrameError(f"message of {len(parts)} parts, expected header + payload")
                envelope = unpack(parts[0], parts[1])
            except FrameError as exc:
                self.errors.append(str(exc))
                log.warning("zmq subscriber skipped a malformed message: %s", exc)
                continue
            last = self._last_sequence
            pubsub = self.transport.pattern == "pubsub"  # push/pull deals out: gaps are normal
            if pubsub and last is not None and envelope.sequence > last + 1:
                self.gaps += envelope.sequence - last - 1
            self._last_sequence = envelope.sequence
            self.received += 1
            return Received(
                envelope, now, origin=self.transport.endpoint, position=envelope.sequence
            )

    def close(self) -> None:
        self._sock.close()
