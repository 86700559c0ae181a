"""VOEvent Transport Protocol (IVOA VTP 2.0, 2017): author, broker and subscriber.

URL: ``vtp://127.0.0.1:BROADCAST_PORT?receive=RECEIVE_PORT`` — subscribers connect to the
broker's broadcast port, authors to its receive port.

The protocol, as implemented here:

* A frame is a 4-byte network-order length and one XML document: a ``VOEvent`` or a
  ``Transport`` (roles ``iamalive``, ``ack``, ``nak``, ``authenticate``).
* An **author** opens a connection per event, sends it, and waits for ``ack`` or ``nak``; the
  connection then closes. A nak is permanent: the event is not sent again (``naks`` keeps why).
* The **broker** (:class:`VtpBroker`) reads one frame per author connection, refuses frames over
  ``max_frame`` bytes, non-XML, non-VOEvent, XSD-invalid events, authors not in the allow-list and
  events whose *bytes* it has already seen (de-duplication by content, not IVORN), each with a nak
  whose ``Meta/Result`` says why; otherwise it acks and fans the bytes out to every subscriber.
  It sends ``iamalive`` to a subscriber after ``iamalive_interval`` seconds of silence (at most
  90 s by the standard) and drops one that does not answer within ``iamalive_timeout``.
* A **subscriber** keeps one connection open (reconnecting with back-off), acks each event,
  answers each ``iamalive``, and naks what is not a VOEvent.
* Namespaces: the spec's examples, its schema and Comet disagree on the Transport namespace, so
  incoming Transport messages are recognised by element name and role alone; outgoing ones use
  the namespace of the spec's examples (``http://telescope-networks.org/schema/Transport/v1.1``).

Frame size: Twisted-based peers (Comet) silently drop frames of 100,000 bytes or more by default,
while a Rubin alert with embedded cutouts is ~250 KB as VOEvent XML: use cutouts by reference to
talk to a stock peer, or raise the peer's limit. Ours is ``max_frame`` (16 MiB by default).
Capabilities: VOEvent XML only, no replay, per-message acknowledgement; the harness measures the
cost. A slow subscriber: the broker queues up to ``subscriber_buffer`` events for it and then
blocks the author for up to ``ack_timeout`` seconds; a subscriber still behind (or one that
leaves an event unacknowledged that long) is **disconnected**, and the others go on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from alertbench.transports.base import (
    MAX_FRAME,
    BaseTransport,
    CannotCountSubscribers,
    Capabilities,
    CountsSubscribers,
    Envelope,
    LocalStream,
    Option,
    Received,
    Start,
    TransportError,
    refuse_content_type,
    refuse_replay,
)
from alertbench.transports.framing import LENGTH, FrameError, SocketSubscriber, recv_exact
from alertbench.transports.tcp import host_port
from lxml import etree

from alertbench.errors import ConfigError
from alertbench.xmlsafe import (
    VOEVENT_NS,
    VOEVENT_ROLES,
    UnsafeXmlError,
    parse_untrusted,
    xsd_error,
)

log = logging.getLogger(__name__)

TRANSPORT_NS = "http://telescope-networks.org/schema/Transport/v1.1"
TRANSPORT_SCHEMA_LOCATION = (
    "http://telescope-networks.org/schema/Transport/v1.1 "
    "http://telescope-networks.org/schema/Transport-v1.1.xsd"
)
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CONTENT_TYPE = "application/x-voevent+xml"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def transport_message(
    role: str,
    origin: str,
    response: str | None = None,
    result: str | None = None,
    params: dict[str, str] | None = None,
) -> bytes:
    """A VTP Transport document, as the spec's examples write it.

    ``params`` become ``Meta/Param`` elements: the place where an ``authenticate`` response
    carries what a subscriber presents (Comet puts its ``xpath-filter`` there; the mini-broker
    reads a ``token``).
    """
    root = etree.Element(f"{{{TRANSPORT_NS}}}Transport", nsmap={"trn": TRANSPORT_NS, "xsi": XSI})
    root.set("version", "1.0")
    root.set("role", role)
    root.set(f"{{{XSI}}}schemaLocation", TRANSPORT_SCHEMA_LOCATION)
    etree.SubElement(root, "Origin").text = origin
    if response:
        etree.SubElement(root, "Response").text = response
    etree.SubElement(root, "TimeStamp").text = _now()
    if result or params:
        meta = etree.SubElement(root, "Meta")
        if result:
            etree.SubElement(meta, "Result").text = result
        for name, value in (params or {}).items():
            etree.SubElement(meta, "Param", name=name, value=value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@dataclass
class Message:
    """One parsed frame: a VOEvent (``kind='voevent'``) or a Transport message."""

    kind: str
    role: str
    root: Any
    data: bytes

    def text(self, tag: str) -> str | None:
        element = self.root.find(tag)
        if element is None:  # some peers namespace the children
            element = next((e for e in self.root if etree.QName(e).localname == tag), None)
        return element.text if element is not None else None

    @property
    def result(self) -> str | None:
        for element in self.root.iter():
            if etree.QName(element).localname == "Result":
                return element.text
        return None

    @property
    def params(self) -> dict[str, str]:
        """``Meta/Param`` name/value pairs (the first value of each name wins)."""
        found: dict[str, str] = {}
        for element in self.root.iter():
            if isinstance(element.tag, str) and etree.QName(element).localname == "Param":
                found.setdefault(element.get("name", ""), element.get("value", ""))
        return found


def parse_message(data: bytes, max_frame: int) -> Message:
    """Parse one frame; FrameError says what is wrong with it."""
    try:
        root = parse_untrusted(data, max_frame)
    except UnsafeXmlError as exc:
        raise FrameError(str(exc)) from exc
    name = etree.QName(root)
    role = root.get("role", "")
    if name.localname == "Transport":
        if role not in ("iamalive", "ack", "nak", "authenticate"):
            raise FrameError(f"Transport message with unknown role {role!r}")
        return Message("transport", role, root, data)
    if name.localname == "VOEvent":
        if name.namespace != VOEVENT_NS:
            raise FrameError(f"VOEvent in namespace {name.namespace!r}, not {VOEVENT_NS}")
        return Message("voevent", role or "observation", root, data)
    raise FrameError(f"root element {name.localname!r} is neither VOEvent nor Transport")


def send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(LENGTH.pack(len(data)) + data)


def read_frame(sock: socket.socket, max_frame: int) -> bytes:
    (size,) = LENGTH.unpack(recv_exact(sock, LENGTH.size))
    if size > max_frame:
        raise FrameError(f"frame of {size:,} bytes exceeds the {max_frame:,}-byte maximum")
    return recv_exact(sock, size)


def alert_id_of(root: Any) -> int:
    """The alert id in an IVORN's fragment (``ivo://.../rubin#123``), or -1."""
    fragment = (root.get("ivorn") or "").rpartition("#")[2]
    return int(fragment) if fragment.isdigit() else -1


# -- broker ------------------------------------------------------------------------------------


class _Session:
    """One subscriber connection of the broker: a writer thread and a reader thread."""

    def __init__(self, broker: VtpBroker, conn: socket.socket, peer: Any) -> None:
        self.broker = broker
        self.conn = conn
        self.peer = peer
        self.outbox: queue.Queue[bytes] = queue.Queue(maxsize=broker.subscriber_buffer)
        self.outstanding = 0
        self.acks = 0
        self.naks: list[str] = []
        self.last_heard = time.monotonic()
        self.alive_sent_at: float | None = None
        self.closed = threading.Event()
        self.key: str | None = None
        """Whose events this subscriber receives, once authenticated (``subscriber_auth``)."""
        self.connected_at = time.monotonic()
        self._lock = threading.Lock()
        threading.Thread(target=self._write, daemon=True, name="vtp-session-w").start()
        threading.Thread(target=self._read, daemon=True, name="vtp-session-r").start()

    def _write(self) -> None:
        broker = self.broker
        if broker.subscriber_auth is not None:  # ask who this is; only this thread writes
            try:
                send_frame(self.conn, transport_message("authenticate", broker.local_ivo))
            except OSError as exc:
                return self.close(f"write failed: {exc}")
        while not self.closed.is_set():
            try:
                data = self.outbox.get(timeout=0.2)
            except queue.Empty:
                data = None
            now = time.monotonic()
            if (
                broker.subscriber_auth is not None
                and self.key is None
                and now - self.connected_at > broker.auth_timeout
            ):
                return self.close("did not authenticate")
            try:
                if data is not None:
                    # Per-message acknowledgement: bound what a subscriber may leave unanswered.
                    deadline = now + broker.ack_timeout
                    while self.outstanding >= broker.max_outstanding:
                        if time.monotonic() > deadline or self.closed.is_set():
                            return self.close("did not acknowledge events")
                        time.sleep(0.001)
                    with self._lock:
                        self.outstanding += 1
                    send_frame(self.conn, data)
                    self.last_heard = max(self.last_heard, now)
                elif self.alive_sent_at is not None:
                    if now - self.alive_sent_at > broker.iamalive_timeout:
                        return self.close("did not answer iamalive")
                elif now - self.last_heard > broker.iamalive_interval:
                    self.alive_sent_at = now
                    send_frame(self.conn, transport_message("iamalive", broker.local_ivo))
            except OSError as exc:
                return self.close(f"write failed: {exc}")

    def _read(self) -> None:
        while not self.closed.is_set():
            try:
                message = parse_message(read_frame(self.conn, 1024 * 1024), 1024 * 1024)
            except FrameError as exc:
                return self.close(f"sent a bad frame: {exc}")
            except (OSError, ConnectionResetError):
                return self.close("disconnected")
            self.last_heard = time.monotonic()
            if message.role == "iamalive":
                self.alive_sent_at = None
            elif message.role == "authenticate" and self.broker.subscriber_auth is not None:
                key = self.broker.subscriber_auth(message.params)
                if key is None:
                    with contextlib.suppress(OSError):
                        send_frame(
                            self.conn,
                            transport_message(
                                "nak", "", self.broker.local_ivo, result="authentication refused"
                            ),
                        )
                    return self.close("authentication refused")
                self.key = key
            elif message.role in ("ack", "nak"):
                with self._lock:
                    self.outstanding = max(0, self.outstanding - 1)
                if message.role == "ack":
                    self.acks += 1
                else:
                    self.naks.append(message.result or "no reason given")

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if reason != "disconnected":
            log.warning("VTP broker dropped subscriber %s: %s", self.peer, reason)
        self.broker._forget(self, reason)
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()


class VtpBroker(CountsSubscribers):
    """A VTP broker on 127.0.0.1: receives from authors, validates, de-duplicates, fans out."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        receive_port: int = 0,
        broadcast_port: int = 0,
        local_ivo: str = "ivo://alertbench.example/vtp-broker",
        max_frame: int = MAX_FRAME,
        validate: bool = True,
        author_allow: list[str] | None = None,
        iamalive_interval: float = 60.0,
        iamalive_timeout: float = 30.0,
        ack_timeout: float = 30.0,
        max_outstanding: int = 1,
        subscriber_buffer: int = 10_000,
        dedupe_window: int = 1_000_000,
        subscriber_auth: Callable[[dict[str, str]], str | None] | None = None,
        auth_timeout: float = 10.0,
    ) -> None:
        """``subscriber_auth``, when given, makes this a per-subscriber broker: each subscriber is
        sent an ``authenticate`` request on connection and must answer with ``Meta/Param``
        values that the callable maps to a key (None refuses it); :meth:`deliver` then sends an
        event only to the subscribers holding its key. Authors' events go to nobody in this mode.
        """
        self.local_ivo = local_ivo
        self.subscriber_auth = subscriber_auth
        self.auth_timeout = auth_timeout
        self.max_frame = max_frame
        self.validate = validate
        self.author_allow = [ipaddress.ip_network(a) for a in (author_allow or [])] or None
        self.iamalive_interval = min(iamalive_interval, 90.0)  # VTP: at most 90 s of silence
        self.iamalive_timeout = iamalive_timeout
        self.ack_timeout = ack_timeout
        self.max_outstanding = max_outstanding
        self.subscriber_buffer = subscriber_buffer
        self._receive = socket.create_server((host, receive_port))
        self._broadcast = socket.create_server((host, broadcast_port))
        self.host = host
        self.receive_port = self._receive.getsockname()[1]
        self.broadcast_port = self._broadcast.getsockname()[1]
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._fanout = threading.Lock()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._window = dedupe_window
        self._stop = threading.Event()
        self.accepted = 0
        self.refused: list[str] = []
        self.dropped: list[str] = []
        self._receive.settimeout(0.2)  # before the threads start: stop() may come at once
        self._broadcast.settimeout(0.2)
        self._threads = [
            threading.Thread(target=target, daemon=True, name=name)
            for target, name in (
                (self._accept_authors, "vtp-receive"),
                (self._accept_subscribers, "vtp-broadcast"),
            )
        ]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        return f"vtp://{self.host}:{self.broadcast_port}?receive={self.receive_port}"

    def connected_subscribers(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _accept_authors(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._receive.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listening socket was closed: the broker is stopping
            threading.Thread(target=self._author, args=(conn, peer), daemon=True).start()

    def _accept_subscribers(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._broadcast.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listening socket was closed: the broker is stopping
            conn.settimeout(None)
            session = _Session(self, conn, peer)
            with self._lock:
                self._sessions.append(session)

    def _forget(self, session: _Session, reason: str) -> None:
        self.dropped.append(reason)
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def _refuse(self, conn: socket.socket, origin: str, reason: str) -> None:
        self.refused.append(reason)
        log.warning("VTP broker refused an event: %s", reason)
        with contextlib.suppress(OSError):
            send_frame(conn, transport_message("nak", origin, self.local_ivo, result=reason))

    def _author(self, conn: socket.socket, peer: Any) -> None:
        conn.settimeout(30.0)
        try:
            if self.author_allow and not any(
                ipaddress.ip_address(peer[0]) in net for net in self.author_allow
            ):
                return self._refuse(conn, "", f"author {peer[0]} is not allowed to publish")
            try:
                data = read_frame(conn, self.max_frame)
                message = parse_message(data, self.max_frame)
            except FrameError as exc:
                return self._refuse(conn, "", str(exc))
            if message.kind != "voevent":
                return self._refuse(
                    conn,
                    message.text("Origin") or "",
                    f"expected a VOEvent, got Transport role {message.role!r}",
                )
            ivorn = message.root.get("ivorn", "")
            if self.validate and (error := xsd_error(message.root)):
                return self._refuse(conn, ivorn, f"fails the VOEvent 2.0 XSD: {error}")
            digest = hashlib.sha256(data).digest()
            with self._lock:
                if digest in self._seen:
                    duplicate = True
                else:
                    duplicate = False
                    self._seen[digest] = None
                    if len(self._seen) > self._window:
                        self._seen.popitem(last=False)
            if duplicate:
                return self._refuse(conn, ivorn, "Previously seen")
            # Queue for every subscriber *before* acknowledging, one event at a time, so that
            # subscribers see events in the order their authors were acknowledged.
            with self._fanout:
                with self._lock:
                    sessions = [] if self.subscriber_auth else list(self._sessions)
                for session in sessions:
                    try:
                        session.outbox.put(data, timeout=self.ack_timeout)
                    except queue.Full:
                        session.close("fell too far behind (outbox full)")
                self.accepted += 1
            send_frame(conn, transport_message("ack", ivorn, self.local_ivo))
        except OSError as exc:
            log.info("VTP author connection %s ended: %s", peer, exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def deliver(self, data: bytes, key: str) -> int:
        """Queue one event for the authenticated subscribers holding ``key``, without blocking.

        A subscriber whose queue is full is dropped (it reconnects and carries on) rather than
        slowing the caller. Returns how many subscribers the event was queued for.
        """
        with self._lock:
            sessions = [s for s in self._sessions if s.key == key]
        queued = 0
        for session in sessions:
            try:
                session.outbox.put_nowait(data)
                queued += 1
            except queue.Full:
                session.close("fell too far behind (outbox full)")
        return queued

    def subscribers_of(self, key: str) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.key == key)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close("broker stopping")
        for thread in self._threads:
            thread.join(timeout=2)
        self._receive.close()
        self._broadcast.close()

    def __enter__(self) -> VtpBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- clients -------------------------------------------------------------------------------------


class VtpTransport(BaseTransport):
    capabilities = Capabilities(
        replay=False,
        durable=False,
        fanout=True,
        backpressure=True,
        acknowledgement="per-message",
        slow_subscriber="disconnect",
        content_types=(CONTENT_TYPE,),
        options={
            "receive": Option(None, "the broker's receive port, where authors publish", "int"),
            "max_frame": Option(MAX_FRAME, "largest frame a subscriber accepts, bytes", "int"),
            "local_ivo": Option("ivo://alertbench.example/vtp-client", "our IVORN in replies"),
            "token": Option(
                None, "answer to a broker's authenticate request (Param token)", secret=True
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"vtp": {}}

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.host, self.broadcast_port = host_port(self.netloc, url)
        self.receive_port: int | None = self.options["receive"]
        self.max_frame: int = self.options["max_frame"]
        self.local_ivo: str = self.options["local_ivo"]
        self.token: str | None = self.options["token"]
        """Sent in answer to a broker's ``authenticate`` request (``Meta/Param name=token``)."""

    def open_publisher(self, *, timeout: float = 30.0) -> VtpPublisher:
        if self.receive_port is None:
            raise ConfigError(f"{self.url}: an author needs the broker's ?receive=PORT")
        return VtpPublisher(self, timeout=timeout)

    def open_subscriber(
        self,
        start: Start | None = None,
        *,
        buffer: int = 1000,
        reconnect: bool = True,
        connect_timeout: float = 5.0,
    ) -> VtpSubscriber:
        refuse_replay("vtp", start)
        return VtpSubscriber(
            self, buffer=buffer, reconnect=reconnect, connect_timeout=connect_timeout
        )

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False, **broker: Any
    ) -> Iterator[LocalStream]:
        """A VtpBroker in this process on two ports the OS chose; stopped on exit. ``tight``:
        a small per-subscriber queue and a short ack timeout (slow-subscriber tests)."""
        if tight:
            broker = {"subscriber_buffer": 4, "ack_timeout": 0.5, **broker}
        with VtpBroker(**broker) as server:
            yield LocalStream(
                variant,
                server.url,
                server=server,
                ports=[server.broadcast_port, server.receive_port],
                counter=server,
                subscriber_options={"buffer": 1} if tight else {},
            )


class VtpPublisher(CannotCountSubscribers):
    """A VTP author: one connection per event, waits for ack or nak (a nak is never retried)."""

    def __init__(self, transport: VtpTransport, timeout: float = 30.0) -> None:
        self.transport = transport
        self.timeout = timeout
        self.acked: list[int] = []
        self.naks: list[tuple[int, str]] = []
        self.bytes_sent = 0
        self.bytes_received = 0

    def publish(self, envelope: Envelope) -> None:
        refuse_content_type(self.transport.capabilities, envelope, self.transport.url)
        address = (self.transport.host, self.transport.receive_port)
        try:
            with socket.create_connection(address, timeout=self.timeout) as sock:
                send_frame(sock, envelope.payload)
                reply = read_frame(sock, 1024 * 1024)
        except (OSError, FrameError) as exc:
            raise TransportError(f"VTP broker at {address} did not answer: {exc}") from exc
        self.bytes_sent += LENGTH.size + len(envelope.payload)
        self.bytes_received += LENGTH.size + len(reply)
        message = parse_message(reply, 1024 * 1024)
        if message.role == "ack":
            self.acked.append(envelope.alert_id)
        elif message.role == "nak":
            self.naks.append((envelope.alert_id, message.result or "no reason given"))
        else:
            raise TransportError(f"VTP broker answered with role {message.role!r}")

    def flush(self, timeout: float = 30.0) -> int:
        return 0  # every publish already waited for its ack or nak

    def counters(self) -> dict[str, int]:
        """Both directions of the author's hop (events out, acks and naks in)."""
        return {
            "published": len(self.acked) + len(self.naks),
            "acknowledged": len(self.acked),
            "refused": len(self.naks),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }

    def close(self) -> None:
        pass


class VtpSubscriber(SocketSubscriber):
    """A VTP subscriber: acks events, answers iamalive and authenticate, reconnects with back-off.

    The constructor returns once connected (at most ``connect_timeout`` seconds), so events the
    broker accepts after that reach it.
    """

    label = "VTP subscriber"
    max_backoff = 2.0

    def __init__(
        self,
        transport: VtpTransport,
        buffer: int = 1000,
        reconnect: bool = True,
        connect_timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.iamalives = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self._start(
            (transport.host, transport.broadcast_port),
            buffer=buffer,
            reconnect=reconnect,
            connect_timeout=connect_timeout,
        )

    def counters(self) -> dict[str, int]:
        """Both directions of the subscriber's hop (events in, acks and iamalives out)."""
        return {
            **super().counters(),
            "iamalives": self.iamalives,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }

    def _reply(self, sock: socket.socket, data: bytes) -> None:
        send_frame(sock, data)
        self.bytes_sent += LENGTH.size + len(data)

    def _serve(self, sock: socket.socket) -> None:
        local = self.transport.local_ivo
        while not self._stop.is_set():
            data = read_frame(sock, self.transport.max_frame)
            self.bytes_received += LENGTH.size + len(data)
            try:
                message = parse_message(data, self.transport.max_frame)
            except FrameError as exc:
                self.errors.append(str(exc))
                self._reply(sock, transport_message("nak", "", local, result=str(exc)))
                continue
            if message.kind == "voevent":
                ivorn = message.root.get("ivorn", "")
                self._reply(sock, transport_message("ack", ivorn, local))
                envelope = Envelope(
                    payload=data, content_type=CONTENT_TYPE, alert_id=alert_id_of(message.root)
                )
                self._put(Received(envelope, time.time_ns(), origin=ivorn))
            elif message.role == "authenticate":
                params = {"token": self.transport.token} if self.transport.token else None
                self._reply(sock, transport_message("authenticate", local, params=params))
            elif message.role == "nak":
                self.errors.append(f"broker refused us: {message.result}")
            elif message.role == "iamalive":
                self.iamalives += 1
                self._reply(
                    sock, transport_message("iamalive", message.text("Origin") or "", local)
                )


__all__ = ["VOEVENT_ROLES", "VtpBroker", "VtpTransport", "transport_message"]
