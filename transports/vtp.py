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
cost.

Budgets, per peer, each an option of :class:`VtpTransport` (and a keyword of :class:`VtpBroker`);
every peer cut off by one is counted in :meth:`VtpBroker.counters`:

* Frames are read incrementally, on both sides: the 4-byte length is checked against
  ``max_frame`` and the buffer then grows only as bytes arrive, so a peer that announces 16 MiB
  and sends nothing costs nothing.
* An author must deliver its whole frame within ``frame_timeout`` seconds of connecting and may
  never go ``idle_timeout`` seconds without sending; one that does is sent a nak and cut off. A
  subscriber (ours, or the broker reading its subscribers) gives a frame ``frame_timeout``
  seconds from its first byte to its last.
* At most ``max_authors`` author connections and ``max_subscribers`` subscribers at once: the
  next is refused at once, with a nak saying the broker is full, and closed.
* A slow subscriber: the broker queues up to ``subscriber_buffer`` events and ``outbox_bytes``
  bytes for it; the event that does not fit **disconnects** it at once (counted), and the authors
  and the other subscribers go on: the fan-out never waits for a subscriber, and no lock is held
  while a socket is written. A subscriber that leaves an event unacknowledged ``ack_timeout``
  seconds, or whose socket accepts nothing for ``write_timeout`` seconds, is disconnected too.
* Whatever an author's bytes make the parser or the validator do, the author gets a nak with
  the reason (a DTD, in any encoding, is refused: see :mod:`alertbench.xmlsafe`).

Keyed ports (:meth:`VtpBroker.listen`): more broadcast ports, each admitting subscribers by the
address they connect from (Comet's subscriber allow-list) instead of an ``authenticate``
exchange; an admitted subscriber receives what :meth:`VtpBroker.deliver` sends to the port's key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import math
import re
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    refuse_content_type,
    refuse_replay,
    resolve_options,
)
from alertbench.transports.framing import LENGTH, SocketSubscriber
from alertbench.transports.tcp import host_port
from lxml import etree

from alertbench.errors import ConfigError, FrameError, TransportError, UnsafeXmlError
from alertbench.xmlsafe import (
    VOEVENT_NS,
    VOEVENT_ROLES,
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

# -- budgets (the defaults of the options VtpTransport declares) ----------------------------------

FRAME_TIMEOUT = 30.0
IDLE_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_AUTHORS = 64
MAX_SUBSCRIBERS = 256
SUBSCRIBER_BUFFER = 10_000
OUTBOX_BYTES = 64 * 1024 * 1024
READ_CHUNK = 64 * 1024
"""The most a frame reader asks the socket for at once: what an announced length can cost
before the bytes are there."""
REPLY_FRAME = 1024 * 1024
"""The largest Transport message (ack, nak, iamalive, authenticate) anyone here reads."""

BROKER_OPTIONS: dict[str, Option] = {
    "frame_timeout": Option(
        FRAME_TIMEOUT,
        "seconds an author has, from connecting, to deliver its whole frame (then a nak and "
        "the connection closes); elsewhere, seconds a frame may take from its first byte to "
        "its last (a subscriber reading the broker, the broker reading a subscriber)",
        "float",
        minimum=0.01,
    ),
    "idle_timeout": Option(
        IDLE_TIMEOUT,
        "broker: seconds an author may send nothing, before or inside its frame",
        "float",
        minimum=0.01,
    ),
    "write_timeout": Option(
        WRITE_TIMEOUT,
        "broker: seconds a subscriber's socket may accept nothing before it is disconnected "
        "(and the longest a reply to an author may take)",
        "float",
        minimum=0.01,
    ),
    "max_authors": Option(
        MAX_AUTHORS,
        "broker: author connections served at once; the next is refused (nak: the broker is "
        "full) and counted. Frames in flight take at most max_authors x max_frame bytes",
        "int",
        minimum=1,
    ),
    "max_subscribers": Option(
        MAX_SUBSCRIBERS,
        "broker: subscribers connected at once; the next is refused (nak: the broker is full) "
        "and counted",
        "int",
        minimum=1,
    ),
    "subscriber_buffer": Option(
        SUBSCRIBER_BUFFER,
        "broker: events queued for one subscriber; the one that does not fit disconnects it",
        "int",
        minimum=1,
    ),
    "outbox_bytes": Option(
        OUTBOX_BYTES,
        "broker: bytes of events queued for one subscriber; the event that does not fit "
        "disconnects it (an empty queue takes any one event)",
        "int",
        minimum=1,
    ),
}
"""The broker's per-peer budgets: keywords of :class:`VtpBroker`, options of
:class:`VtpTransport` (whose :meth:`~VtpTransport.open_broker` serves its URL with them)."""

COUNTERS = (
    "accepted",
    "refused",
    "authors_refused_full",
    "author_idle_timeouts",
    "author_frame_timeouts",
    "subscribers_refused_full",
    "subscribers_refused_address",
    "subscribers_dropped",
    "slow_subscribers_dropped",
    "subscriber_write_timeouts",
)
"""What :meth:`VtpBroker.counters` counts (with the gauges ``authors`` and ``subscribers``)."""

_NOT_XML_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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
    reads a ``token``). A ``result`` may quote a peer's bytes: characters XML cannot hold are
    written as ``?``.
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
            etree.SubElement(meta, "Result").text = _NOT_XML_CHARACTER.sub("?", result)
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
    """Parse one frame; FrameError says what is wrong with it (and nothing else is raised)."""
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


def send_frame_progressing(sock: socket.socket, data: bytes) -> None:
    """As :func:`send_frame`, but the socket's timeout bounds each wait for the peer to take
    *some* bytes, not the whole frame: TimeoutError only when it took nothing for that long."""
    view = memoryview(LENGTH.pack(len(data)) + data)
    while view:
        view = view[sock.send(view) :]


class FrameTimeout(FrameError):
    """A peer did not deliver a frame within its budget. ``kind``: ``idle`` (it sent nothing
    for ``idle_timeout``), ``frame`` (``frame_timeout`` after the frame's first byte) or
    ``deadline`` (the caller's deadline); ``progress`` says how far the frame got."""

    def __init__(self, message: str, kind: str, progress: str) -> None:
        super().__init__(f"{message} ({progress})")
        self.kind = kind
        self.progress = progress


def read_frame(
    sock: socket.socket,
    max_frame: int,
    *,
    deadline: float | None = None,
    frame_timeout: float | None = None,
    idle_timeout: float | None = None,
    set_timeouts: bool = True,
) -> bytes:
    """One frame's document, read incrementally: it never holds more than the bytes that came.

    The 4-byte length is checked against ``max_frame`` first; the body is then read at most
    :data:`READ_CHUNK` bytes at a time, so an announced length costs nothing until the bytes
    are there. FrameError for a frame over ``max_frame`` or cut short, ConnectionResetError if
    the peer closes before a frame begins, :class:`FrameTimeout` when a budget runs out:
    ``deadline`` (a ``time.monotonic()`` by which the whole frame must be in),
    ``frame_timeout`` (seconds from the frame's first byte to its last), ``idle_timeout``
    (seconds the peer may send nothing, before or inside the frame). Without budgets it waits
    for as long as the socket lets it.

    ``set_timeouts``: the socket's timeout is set to the budget left before each read and
    restored at the end. A socket that another thread writes keeps its timeout (pass False):
    the budgets are then checked whenever a read returns or times out.
    """
    previous = sock.gettimeout()
    header = b""
    chunks: list[bytes] = []
    size = -1
    got = 0
    last = time.monotonic()
    first: float | None = None

    def progress() -> str:
        if size < 0:
            return f"{len(header)} of {LENGTH.size} length bytes"
        return f"{got:,} of {size:,} bytes"

    try:
        while True:
            want = LENGTH.size - len(header) if size < 0 else size - got
            if size >= 0 and want == 0:
                return b"".join(chunks)
            due, kind = math.inf, ""
            if deadline is not None:
                due, kind = deadline, "deadline"
            if frame_timeout is not None and first is not None and first + frame_timeout < due:
                due, kind = first + frame_timeout, "frame"
            if idle_timeout is not None and last + idle_timeout < due:
                due, kind = last + idle_timeout, "idle"
            now = time.monotonic()
            if now >= due:
                if kind == "idle":
                    raise FrameTimeout(f"nothing received for {idle_timeout:g} s", kind, progress())
                if kind == "frame":
                    raise FrameTimeout(
                        f"frame not complete {frame_timeout:g} s after its first byte",
                        kind,
                        progress(),
                    )
                raise FrameTimeout("frame not complete by its deadline", kind, progress())
            if set_timeouts:
                sock.settimeout(None if due == math.inf else due - now)
            try:
                chunk = sock.recv(min(want, READ_CHUNK))
            except TimeoutError:
                continue  # the budgets above decide
            if not chunk:
                if size < 0 and not header:
                    raise ConnectionResetError("peer closed the connection")
                raise FrameError(f"peer closed the connection mid-frame ({progress()})")
            last = time.monotonic()
            if first is None:
                first = last
            if size < 0:
                header += chunk
                if len(header) == LENGTH.size:
                    (size,) = LENGTH.unpack(header)
                    if size > max_frame:
                        raise FrameError(
                            f"frame of {size:,} bytes exceeds the {max_frame:,}-byte maximum"
                        )
            else:
                chunks.append(chunk)
                got += len(chunk)
    finally:
        if set_timeouts:
            with contextlib.suppress(OSError):
                sock.settimeout(previous)


def alert_id_of(root: Any) -> int:
    """The alert id in an IVORN's fragment (``ivo://.../rubin#123``), or -1 (also for one that
    is no plain decimal number of at most 18 digits)."""
    fragment = (root.get("ivorn") or "").rpartition("#")[2]
    if fragment.isascii() and fragment.isdigit() and len(fragment) <= 18:
        return int(fragment)
    return -1


# -- broker ------------------------------------------------------------------------------------


class _Outbox:
    """A subscriber's queue, bounded by events and by bytes; :meth:`offer` never waits."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: deque[bytes] = deque()
        self._ready = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, data: bytes) -> bool:
        """Queue ``data`` if it fits (an empty queue takes any one event); False if not."""
        with self._ready:
            if len(self._items) >= self.max_events or (
                self._items and self.bytes + len(data) > self.max_bytes
            ):
                return False
            self._items.append(data)
            self.bytes += len(data)
            self._ready.notify()
            return True

    def take(self, timeout: float) -> bytes | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            if not self._items:
                return None
            data = self._items.popleft()
            self.bytes -= len(data)
            return data

    def clear(self) -> None:
        with self._ready:
            self._items.clear()
            self.bytes = 0


class _Session:
    """One subscriber connection of the broker: a writer thread and a reader thread.

    Its socket's timeout is the broker's ``write_timeout`` (both threads use the socket, so
    neither changes it): a subscriber that takes no byte of a write for that long is
    disconnected, and the reader, which waits for frames indefinitely, checks its frame budget
    as reads time out.
    """

    def __init__(
        self,
        broker: VtpBroker,
        conn: socket.socket,
        peer: Any,
        key: str | None = None,
        listener: int | None = None,
    ) -> None:
        self.broker = broker
        self.conn = conn
        self.peer = peer
        self.listener = listener
        """The keyed port (:meth:`VtpBroker.listen`) it came in on, None for the broadcast port."""
        self.outbox = _Outbox(broker.subscriber_buffer, broker.outbox_bytes)
        self.outstanding = 0
        self.acks = 0
        self.naks: deque[str] = deque(maxlen=100)
        """The reasons of the subscriber's latest naks."""
        self.last_heard = time.monotonic()
        self.alive_sent_at: float | None = None
        self.closed = threading.Event()
        self.key: str | None = key
        """Whose events this subscriber receives: once authenticated (``subscriber_auth``), or
        from the start on a keyed port."""
        self.connected_at = time.monotonic()
        self._acked = threading.Condition(threading.Lock())
        self._closing = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._write, daemon=True, name="vtp-session-w").start()
        threading.Thread(target=self._read, daemon=True, name="vtp-session-r").start()

    def _wait_for_acks(self, deadline: float) -> bool:
        """Per-message acknowledgement: wait (until ``deadline``) while the subscriber has
        ``max_outstanding`` events unanswered. False if it stayed behind or was closed."""
        with self._acked:
            while self.outstanding >= self.broker.max_outstanding:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    return False
                self._acked.wait(min(left, 0.2))
            self.outstanding += 1
        return True

    def _write(self) -> None:
        broker = self.broker
        try:
            if broker.subscriber_auth is not None and self.listener is None:  # ask who this is
                send_frame(self.conn, transport_message("authenticate", broker.local_ivo))
            while not self.closed.is_set():
                data = self.outbox.take(0.2)
                now = time.monotonic()
                if (
                    broker.subscriber_auth is not None
                    and self.key is None
                    and now - self.connected_at > broker.auth_timeout
                ):
                    return self.close("did not authenticate")
                if data is not None:
                    if not self._wait_for_acks(now + broker.ack_timeout):
                        return self.close("did not acknowledge events")
                    send_frame_progressing(self.conn, data)
                    self.last_heard = max(self.last_heard, now)
                elif self.alive_sent_at is not None:
                    if now - self.alive_sent_at > broker.iamalive_timeout:
                        return self.close("did not answer iamalive")
                elif now - self.last_heard > broker.iamalive_interval:
                    self.alive_sent_at = now
                    send_frame(self.conn, transport_message("iamalive", broker.local_ivo))
        except TimeoutError:
            self.close(
                f"write timed out (its socket took nothing for {broker.write_timeout:g} s)",
                "subscriber_write_timeouts",
            )
        except OSError as exc:
            self.close(f"write failed: {exc}")

    def _read(self) -> None:
        broker = self.broker
        while not self.closed.is_set():
            try:
                data = read_frame(
                    self.conn, REPLY_FRAME, frame_timeout=broker.frame_timeout, set_timeouts=False
                )
                message = parse_message(data, REPLY_FRAME)
            except FrameError as exc:
                return self.close(f"sent a bad frame: {exc}")
            except OSError:
                return self.close("disconnected")
            self.last_heard = time.monotonic()
            if message.role == "iamalive":
                self.alive_sent_at = None
            elif message.role == "authenticate" and self.listener is not None:
                pass  # admitted by its address already: whatever it presents changes nothing
            elif message.role == "authenticate" and broker.subscriber_auth is not None:
                try:
                    key = broker.subscriber_auth(message.params)
                except Exception:
                    log.exception("VTP broker: subscriber_auth failed for %s", self.peer)
                    key = None
                if key is None:
                    with contextlib.suppress(OSError):
                        send_frame(
                            self.conn,
                            transport_message(
                                "nak", "", broker.local_ivo, result="authentication refused"
                            ),
                        )
                    return self.close("authentication refused")
                self.key = key
            elif message.role in ("ack", "nak"):
                with self._acked:
                    self.outstanding = max(0, self.outstanding - 1)
                    self._acked.notify()
                if message.role == "ack":
                    self.acks += 1
                else:
                    self.naks.append(message.result or "no reason given")

    def close(self, reason: str, counter: str | None = None) -> None:
        with self._closing:
            if self.closed.is_set():
                return
            self.closed.set()
        if reason != "disconnected":
            log.warning("VTP broker dropped subscriber %s: %s", self.peer, reason)
        self.broker._forget(self, reason, counter)
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.conn.close()
        self.outbox.clear()
        with self._acked:
            self._acked.notify_all()


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REFUSAL_LOG_INTERVAL = 10.0


def peer_address(peer: Any) -> IpAddress | None:
    """A socket peer's address as an ``ipaddress`` object (an IPv6 scope such as ``%eth0``
    dropped), or None if it is not an IP address."""
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return None


@dataclass
class _KeyedPort:
    """A broadcast port opened by :meth:`VtpBroker.listen`: admits subscribers by address."""

    port: int
    sock: socket.socket
    admit: Callable[[IpAddress], str | None]
    closed: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    _logged: dict[str, float] = field(default_factory=dict)

    def should_log(self, address: str) -> bool:
        """Whether to log a refusal of ``address``: once per :data:`REFUSAL_LOG_INTERVAL`
        seconds per address, so a peer reconnecting in a loop cannot flood the log (every
        refusal is counted all the same)."""
        now = time.monotonic()
        if now - self._logged.get(address, -math.inf) < REFUSAL_LOG_INTERVAL:
            return False
        if len(self._logged) >= 1024:
            self._logged.clear()
        self._logged[address] = now
        return True

    def key_for(self, peer: Any) -> str | None:
        """The key ``admit`` gives this peer; None (refused) for a non-IP peer or if ``admit``
        fails (logged): a bug in it must not open the port."""
        address = peer_address(peer)
        if address is None:
            return None
        try:
            return self.admit(address)
        except Exception:
            log.exception("VTP broker: admit failed for %s on port %d", peer, self.port)
            return None


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
        subscriber_buffer: int = SUBSCRIBER_BUFFER,
        outbox_bytes: int = OUTBOX_BYTES,
        frame_timeout: float = FRAME_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_authors: int = MAX_AUTHORS,
        max_subscribers: int = MAX_SUBSCRIBERS,
        dedupe_window: int = 1_000_000,
        subscriber_auth: Callable[[dict[str, str]], str | None] | None = None,
        auth_timeout: float = 10.0,
    ) -> None:
        """``subscriber_auth``, when given, makes this a per-subscriber broker: each subscriber is
        sent an ``authenticate`` request on connection and must answer with ``Meta/Param``
        values that the callable maps to a key (None refuses it); :meth:`deliver` then sends an
        event only to the subscribers holding its key. Authors' events go to nobody in this mode.

        The budgets (``subscriber_buffer`` to ``max_subscribers``) are the options in
        :data:`BROKER_OPTIONS`, checked as :class:`VtpTransport` checks them (ConfigError).
        """
        budgets = resolve_options(
            BROKER_OPTIONS,
            {},
            {
                "subscriber_buffer": subscriber_buffer,
                "outbox_bytes": outbox_bytes,
                "frame_timeout": frame_timeout,
                "idle_timeout": idle_timeout,
                "write_timeout": write_timeout,
                "max_authors": max_authors,
                "max_subscribers": max_subscribers,
            },
            "VtpBroker",
        )
        self.subscriber_buffer: int = budgets["subscriber_buffer"]
        self.outbox_bytes: int = budgets["outbox_bytes"]
        self.frame_timeout: float = budgets["frame_timeout"]
        self.idle_timeout: float = budgets["idle_timeout"]
        self.write_timeout: float = budgets["write_timeout"]
        self.max_authors: int = budgets["max_authors"]
        self.max_subscribers: int = budgets["max_subscribers"]
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
        self._receive = socket.create_server((host, receive_port))
        self._broadcast = socket.create_server((host, broadcast_port))
        self.host = host
        self.receive_port = self._receive.getsockname()[1]
        self.broadcast_port = self._broadcast.getsockname()[1]
        self._sessions: list[_Session] = []
        self._listeners: dict[int, _KeyedPort] = {}
        self._lock = threading.Lock()
        self._fanout = threading.Lock()
        self._author_slots = threading.BoundedSemaphore(self.max_authors)
        self._authors = 0
        self._counts: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._window = dedupe_window
        self._stop = threading.Event()
        self.accepted = 0
        self.refused: deque[str] = deque(maxlen=1000)
        """Why the latest authors were sent a nak (all of them are counted)."""
        self.dropped: deque[str] = deque(maxlen=1000)
        """Why the latest subscribers were dropped (all of them are counted)."""
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

    def counters(self) -> dict[str, int]:
        """Events accepted and refused, peers refused or cut off by a budget (by which), and the
        author connections and subscribers open now (``authors``, ``subscribers``)."""
        with self._lock:
            counts = dict(self._counts)
            counts["accepted"] = self.accepted
            counts["authors"] = self._authors
            counts["subscribers"] = len(self._sessions)
        return counts

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _accepted(self, listener: socket.socket) -> tuple[socket.socket, Any] | None:
        """The next connection, None after the 0.2 s tick; OSError once the broker stops. Any
        other accept error (out of file descriptors) is logged and waited out, never fatal."""
        while not self._stop.is_set():
            try:
                return listener.accept()
            except TimeoutError:
                return None
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("VTP broker could not accept a connection: %s", exc)
                time.sleep(0.1)
        raise OSError("the broker is stopping")

    def _turn_away(self, conn: socket.socket, reason: str, logged: bool = True) -> None:
        """Refuse a connection at once: a nak saying why, then close (from the accept thread,
        so it must not wait: a second at most, for a reply that fits any socket buffer)."""
        if logged:
            log.warning("VTP broker turned a connection away: %s", reason)
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            send_frame(conn, transport_message("nak", "", self.local_ivo, result=reason))
            conn.shutdown(socket.SHUT_WR)
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                conn.recv(READ_CHUNK)  # what it already sent, so that close() sends no reset
        with contextlib.suppress(OSError):
            conn.close()

    def _accept_authors(self) -> None:
        while True:
            try:
                accepted = self._accepted(self._receive)
            except OSError:
                return  # the broker is stopping
            if accepted is None:
                continue
            conn, peer = accepted
            if not self._author_slots.acquire(blocking=False):
                reason = f"broker is full: {self.max_authors} author connections are open"
                with self._lock:
                    self._counts["authors_refused_full"] += 1
                    self._counts["refused"] += 1
                self.refused.append(reason)
                self._turn_away(conn, reason)
                continue
            with self._lock:
                self._authors += 1
            try:
                threading.Thread(
                    target=self._author, args=(conn, peer), daemon=True, name="vtp-author"
                ).start()
            except RuntimeError as exc:  # no thread to be had: refuse, never stop accepting
                self._author_done()
                self._turn_away(conn, f"broker is full: {exc}")

    def _author_done(self) -> None:
        with self._lock:
            self._authors -= 1
        self._author_slots.release()

    def _accept_subscribers(self) -> None:
        while True:
            try:
                accepted = self._accepted(self._broadcast)
            except OSError:
                return  # the broker is stopping
            if accepted is None:
                continue
            self._open_session(*accepted)

    def _open_session(
        self, conn: socket.socket, peer: Any, key: str | None = None, listener: int | None = None
    ) -> None:
        """Serve a new subscriber, or turn it away at once if ``max_subscribers`` are in."""
        with self._lock:
            full = len(self._sessions) >= self.max_subscribers
            if full:
                self._counts["subscribers_refused_full"] += 1
        if full:
            self._turn_away(
                conn, f"broker is full: {self.max_subscribers} subscribers are connected"
            )
            return
        conn.settimeout(self.write_timeout)
        session = _Session(self, conn, peer, key, listener)
        with self._lock:
            self._sessions.append(session)
        try:
            session.start()
        except RuntimeError as exc:
            session.close(f"could not start its threads: {exc}")

    def _broadcast_sessions(self) -> list[_Session]:
        """The subscribers of the broadcast port (call with the lock held): authors' events go
        to them, never to a keyed port's."""
        return [s for s in self._sessions if s.listener is None]

    # -- keyed ports ---------------------------------------------------------------------------

    def listen(self, port: int, admit: Callable[[IpAddress], str | None]) -> int:
        """Open one more broadcast port on the broker's host (0: one the OS picks); return it.

        Each connection to it is admitted by its peer's address: ``admit(address)`` returns the
        key whose events (:meth:`deliver`) the subscriber then receives, with no
        ``authenticate`` exchange (one it sends anyway is ignored), or None: the connection is
        sent a nak and closed at once, counted in ``subscribers_refused_address`` and logged.
        ``admit`` runs on the port's accept thread: keep it quick, and let it read state the
        caller may replace (then call :meth:`recheck`). OSError if the port cannot be bound.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, port), family=family)
        sock.settimeout(0.2)
        bound = sock.getsockname()[1]
        keyed = _KeyedPort(bound, sock, admit)
        with self._lock:
            self._listeners[bound] = keyed
        keyed.thread = threading.Thread(
            target=self._accept_keyed, args=(keyed,), daemon=True, name=f"vtp-keyed-{bound}"
        )
        keyed.thread.start()
        return bound

    def unlisten(self, port: int, reason: str = "its port was closed") -> None:
        """Close a port :meth:`listen` opened and disconnect its subscribers (no-op if none)."""
        with self._lock:
            keyed = self._listeners.pop(port, None)
            sessions = [s for s in self._sessions if s.listener == port]
        if keyed is None:
            return
        keyed.closed.set()
        if keyed.thread is not None:
            keyed.thread.join(timeout=2)
        keyed.sock.close()
        for session in sessions:
            session.close(reason)

    def recheck(self, port: int) -> int:
        """Ask the port's ``admit`` again about each connected subscriber (after the state it
        reads changed); disconnect those it now refuses or maps to another key. Returns how
        many were disconnected."""
        with self._lock:
            keyed = self._listeners.get(port)
            sessions = [s for s in self._sessions if s.listener == port]
        if keyed is None:
            return 0
        dropped = 0
        for session in sessions:
            if keyed.key_for(session.peer) != session.key:
                session.close("no longer admitted on its port")
                dropped += 1
        return dropped

    def keyed_ports(self) -> dict[int, int]:
        """Port -> subscribers connected to it, for every port :meth:`listen` opened."""
        with self._lock:
            return {
                port: sum(1 for s in self._sessions if s.listener == port)
                for port in self._listeners
            }

    def _accept_keyed(self, keyed: _KeyedPort) -> None:
        while not (self._stop.is_set() or keyed.closed.is_set()):
            try:
                conn, peer = keyed.sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set() or keyed.closed.is_set():
                    return
                log.warning("VTP broker could not accept on port %d: %s", keyed.port, exc)
                time.sleep(0.1)
                continue
            key = keyed.key_for(peer)
            if key is None:
                self._count("subscribers_refused_address")
                reason = f"{peer[0]} may not subscribe on port {keyed.port}"
                self._turn_away(conn, reason, logged=keyed.should_log(str(peer[0])))
                continue
            self._open_session(conn, peer, key, keyed.port)

    def _forget(self, session: _Session, reason: str, counter: str | None = None) -> None:
        self.dropped.append(reason)
        with self._lock:
            self._counts["subscribers_dropped"] += 1
            if counter:
                self._counts[counter] += 1
            if session in self._sessions:
                self._sessions.remove(session)

    def _refuse(self, conn: socket.socket, origin: str, reason: str) -> None:
        self.refused.append(reason)
        self._count("refused")
        log.warning("VTP broker refused an event: %s", reason)
        with contextlib.suppress(OSError):
            send_frame(conn, transport_message("nak", origin, self.local_ivo, result=reason))

    def _author(self, conn: socket.socket, peer: Any) -> None:
        try:
            self._serve_author(conn, peer)
        except OSError as exc:
            log.info("VTP author connection %s ended: %s", peer, exc)
        except Exception:  # a bug of ours: logged, and the broker goes on
            log.exception("VTP broker failed serving author %s", peer)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._author_done()

    def _serve_author(self, conn: socket.socket, peer: Any) -> None:
        connected = time.monotonic()
        conn.settimeout(self.write_timeout)  # for the reply; reads have budgets of their own
        if self.author_allow and not any(
            ipaddress.ip_address(peer[0]) in net for net in self.author_allow
        ):
            return self._refuse(conn, "", f"author {peer[0]} is not allowed to publish")
        try:
            data = read_frame(
                conn,
                self.max_frame,
                deadline=connected + self.frame_timeout,
                idle_timeout=self.idle_timeout,
            )
        except FrameTimeout as exc:
            if exc.kind == "idle":
                self._count("author_idle_timeouts")
                reason = f"author sent nothing for {self.idle_timeout:g} s ({exc.progress})"
            else:
                self._count("author_frame_timeouts")
                reason = (
                    f"author did not deliver its frame within {self.frame_timeout:g} s of "
                    f"connecting ({exc.progress})"
                )
            return self._refuse(conn, "", reason)
        except FrameError as exc:
            return self._refuse(conn, "", str(exc))
        try:
            ivorn, problem = self._check(data)
        except Exception as exc:  # whatever the parser or the validator raise: a nak, with why
            log.exception("VTP broker could not check an event from %s", peer)
            ivorn, problem = "", f"could not check the event: {type(exc).__name__}: {exc}"
        if problem is not None:
            return self._refuse(conn, ivorn, problem)
        self._fan_out(data)
        send_frame(conn, transport_message("ack", ivorn, self.local_ivo))

    def _check(self, data: bytes) -> tuple[str, str | None]:
        """(IVORN, None) for an event to accept, else (IVORN or "", why it is refused)."""
        try:
            message = parse_message(data, self.max_frame)
        except FrameError as exc:
            return "", str(exc)
        if message.kind != "voevent":
            return (
                message.text("Origin") or "",
                f"expected a VOEvent, got Transport role {message.role!r}",
            )
        ivorn = message.root.get("ivorn", "")
        if self.validate and (error := xsd_error(message.root)):
            return ivorn, f"fails the VOEvent 2.0 XSD: {error}"
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if digest in self._seen:
                return ivorn, "Previously seen"
            self._seen[digest] = None
            if len(self._seen) > self._window:
                self._seen.popitem(last=False)
        return ivorn, None

    def _fan_out(self, data: bytes) -> None:
        """Queue the event for every subscriber *before* it is acknowledged, one event at a
        time (so subscribers see events in the order their authors were acknowledged), without
        ever waiting: a subscriber whose outbox is full is disconnected, after the lock."""
        with self._fanout:
            with self._lock:
                sessions = [] if self.subscriber_auth else self._broadcast_sessions()
            behind = [session for session in sessions if not session.outbox.offer(data)]
            self.accepted += 1
        for session in behind:
            self._drop_slow(session)

    def _drop_slow(self, session: _Session) -> None:
        outbox = session.outbox
        session.close(
            f"fell too far behind (outbox full: {len(outbox):,} events, {outbox.bytes:,} bytes)",
            "slow_subscribers_dropped",
        )

    def deliver(self, data: bytes, key: str) -> int:
        """Queue one event for the authenticated subscribers holding ``key``, without blocking.

        A subscriber whose queue is full is dropped (it reconnects and carries on) rather than
        slowing the caller. Returns how many subscribers the event was queued for.
        """
        with self._lock:
            sessions = [s for s in self._sessions if s.key == key]
        queued = 0
        for session in sessions:
            if session.outbox.offer(data):
                queued += 1
            else:
                self._drop_slow(session)
        return queued

    def subscribers_of(self, key: str) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if s.key == key)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            ports = list(self._listeners)
        for port in ports:
            self.unlisten(port, "broker stopping")
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
            "max_frame": Option(
                MAX_FRAME, "largest frame a subscriber (or a broker) accepts, bytes", "int"
            ),
            "local_ivo": Option("ivo://alertbench.example/vtp-client", "our IVORN in replies"),
            "token": Option(
                None, "answer to a broker's authenticate request (Param token)", secret=True
            ),
            **BROKER_OPTIONS,
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"vtp": {}}
    url_example = "vtp://127.0.0.1:8099?receive=8098"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.host, self.broadcast_port = host_port(self.netloc, url)
        self.receive_port: int | None = self.options["receive"]
        self.max_frame: int = self.options["max_frame"]
        self.local_ivo: str = self.options["local_ivo"]
        self.token: str | None = self.options["token"]
        """Sent in answer to a broker's ``authenticate`` request (``Meta/Param name=token``)."""
        self.frame_timeout: float = self.options["frame_timeout"]
        """A frame from the broker must be complete this long after its first byte."""

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

    def open_broker(self, **keywords: Any) -> VtpBroker:
        """A broker serving this URL (its broadcast port; its ``receive`` port, or one the OS
        chooses) with this transport's ``max_frame`` and budget options (:data:`BROKER_OPTIONS`).
        ``keywords`` go to :class:`VtpBroker` too, and win (``author_allow``, ``ack_timeout``)."""
        settings: dict[str, Any] = {name: self.options[name] for name in BROKER_OPTIONS}
        settings.update(max_frame=self.max_frame, **keywords)
        return VtpBroker(
            self.host,
            broadcast_port=self.broadcast_port,
            receive_port=self.receive_port or 0,
            **settings,
        )

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False, **broker: Any
    ) -> Iterator[LocalStream]:
        """A VtpBroker in this process on two ports the OS chose; stopped on exit. ``tight``:
        a small per-subscriber queue and a short ack timeout (slow-subscriber tests)."""
        if tight:
            broker = {"subscriber_buffer": 16, "ack_timeout": 0.5, **broker}
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
    """A VTP author: one connection per event, waits for ack or nak (a nak is never retried).
    ``timeout`` bounds the whole exchange: connecting, sending, and the reply's last byte."""

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
        deadline = time.monotonic() + self.timeout
        try:
            with socket.create_connection(address, timeout=self.timeout) as sock:
                send_frame(sock, envelope.payload)
                reply = read_frame(sock, REPLY_FRAME, deadline=deadline)
            message = parse_message(reply, REPLY_FRAME)
        except (OSError, FrameError) as exc:
            raise TransportError(f"VTP broker at {address} did not answer: {exc}") from exc
        self.bytes_sent += LENGTH.size + len(envelope.payload)
        self.bytes_received += LENGTH.size + len(reply)
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
    broker accepts after that reach it. Frames from the broker are read incrementally, at most
    ``max_frame`` bytes each and complete within ``frame_timeout`` of their first byte (else
    the connection is dropped, the reason kept in ``errors``, and made again); a reply the
    broker does not take within ``frame_timeout`` ends the connection too.
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
        budget = self.transport.frame_timeout
        sock.settimeout(budget)  # for replies; read_frame waits for a frame as long as it takes
        while not self._stop.is_set():
            data = read_frame(sock, self.transport.max_frame, frame_timeout=budget)
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


__all__ = [
    "BROKER_OPTIONS",
    "VOEVENT_ROLES",
    "FrameTimeout",
    "VtpBroker",
    "VtpTransport",
    "read_frame",
    "transport_message",
]
