"""The envelope on the wire for transports without headers of their own (TCP, ZeroMQ).

``ENVELOPE_HEADER`` (big-endian): alert id, shutter-close, intended-send and send times (ns),
sequence number, content-type length; then the content type (UTF-8), then the payload. Over TCP
each envelope is preceded by a 4-byte big-endian length (the framing VTP uses too); ZeroMQ sends
header and payload as two frames of one multipart message, so the payload is never copied.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from typing import Any

from alertbench.transports.base import MAX_FRAME, Envelope, QueuedSubscriber

from alertbench.errors import FrameError

log = logging.getLogger(__name__)

ENVELOPE_HEADER = struct.Struct(">qqqqQH")
LENGTH = struct.Struct(">I")
"""The 4-byte big-endian length before every frame, here and in VTP."""


class ClosedMidFrame(FrameError):
    """The peer closed the connection inside a frame: a malformed stream to whoever reads it,
    and also the end of that connection (a publisher that drops a slow subscriber cannot
    choose where in a frame the kernel's buffer ends)."""


def pack_header(env: Envelope, t_sent_ns: int) -> bytes:
    ctype = env.content_type.encode("utf-8")
    return (
        ENVELOPE_HEADER.pack(
            env.alert_id, env.t_shutter_ns, env.t_intended_ns, t_sent_ns, env.sequence, len(ctype)
        )
        + ctype
    )


def unpack(header: bytes | memoryview, payload: bytes) -> Envelope:
    if len(header) < ENVELOPE_HEADER.size:
        raise FrameError(
            f"envelope header of {len(header)} bytes is shorter than {ENVELOPE_HEADER.size}"
        )
    alert_id, t_shutter, t_intended, t_sent, sequence, ct_len = ENVELOPE_HEADER.unpack_from(header)
    end = ENVELOPE_HEADER.size + ct_len
    if len(header) < end:
        raise FrameError(f"content type of {ct_len} bytes runs past the envelope header")
    try:
        content_type = bytes(header[ENVELOPE_HEADER.size : end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("content type is not UTF-8") from exc
    return Envelope(
        payload=payload,
        content_type=content_type,
        alert_id=alert_id,
        t_shutter_ns=t_shutter,
        t_intended_ns=t_intended,
        t_sent_ns=t_sent,
        sequence=sequence,
    )


def encode_frame(env: Envelope, t_sent_ns: int) -> list[bytes]:
    """The pieces of one length-prefixed TCP frame (written with sendmsg, no concatenation)."""
    header = pack_header(env, t_sent_ns)
    return [LENGTH.pack(len(header) + len(env.payload)), header, env.payload]


READ_CHUNK = 1024 * 1024
"""The most a read allocates ahead of the bytes that arrived: a frame's length is the peer's
word, so a buffer grows (doubling) as data comes, never to an announced length at once."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, or FrameError if the peer closes first (a truncated frame)."""
    buf = bytearray(min(n, READ_CHUNK))
    got = 0
    while got < n:
        if got == len(buf):
            buf.extend(bytes(min(n - got, len(buf))))  # only once what was there has arrived
        k = sock.recv_into(memoryview(buf)[got:], len(buf) - got)
        if k == 0:
            if got == 0:
                raise ConnectionResetError("peer closed the connection")
            raise ClosedMidFrame(f"peer closed the connection mid-frame ({got} of {n} bytes)")
        got += k
    return bytes(buf)


class FrameReader:
    """Length-prefixed envelopes from one connection, read through one reused buffer.

    Each kernel read takes whatever has arrived into the buffer (often several small frames,
    or a large part of a big one) and each payload is copied out once. Reading a frame as
    three exact reads (length, header, rest) cost three system calls per frame and copied the
    payload twice; the receiver was the tcp transport's bottleneck against a raw socket.
    A frame larger than the buffer grows it by doubling as its bytes arrive, never to the
    announced length at once (the length is the peer's word)."""

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME, size: int = READ_CHUNK):
        self.sock = sock
        self.max_frame = max_frame
        self._base = size
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def _fill(self, need: int) -> None:
        """At least ``need`` bytes buffered from the start of the current frame."""
        while self._end - self._start < need:
            if self._start + need > len(self._buf):
                self._make_room(need)
            k = self.sock.recv_into(self._view[self._end :])
            if k == 0:
                got = self._end - self._start
                if got == 0:
                    raise ConnectionResetError("peer closed the connection")
                raise ClosedMidFrame(
                    f"peer closed the connection mid-frame ({got} bytes of a frame)"
                )
            self._end += k

    def _make_room(self, need: int) -> None:
        """Room for a frame of ``need`` bytes: what is held moves to the front; a frame larger
        than the buffer grows it to at most twice what has arrived of it (so a full buffer
        always grows)."""
        held = self._end - self._start
        capacity = len(self._buf)
        if need > capacity:
            capacity = min(need, max(capacity, 2 * held))
        if capacity == len(self._buf):
            self._view[:held] = self._view[self._start : self._end]
        else:
            grown = bytearray(capacity)
            grown[:held] = self._view[self._start : self._end]
            self._view.release()
            self._buf, self._view = grown, memoryview(grown)
        self._start, self._end = 0, held

    def read_batch(self) -> list[Envelope]:
        """The next envelope and every further one already complete in the buffer, with no
        more reads of the socket (a reader that hands frames to another thread hands them in
        one go). Errors as :meth:`read`; a malformed frame after good ones is raised at the
        next call, once the good ones are out."""
        batch = [self.read()]
        while self._complete():
            try:
                batch.append(self.read())
            except FrameError:
                break  # read() left the bad frame where it was: raised again next call
        return batch

    def _complete(self) -> bool:
        """Whether a whole frame is buffered (so reading it needs no system call)."""
        held = self._end - self._start
        if held < LENGTH.size:
            return False
        (size,) = LENGTH.unpack_from(self._buf, self._start)
        return held >= LENGTH.size + size

    def read(self) -> Envelope:
        """The next envelope; FrameError on anything malformed, ConnectionResetError when the
        peer closed between frames."""
        self._fill(LENGTH.size)
        (size,) = LENGTH.unpack_from(self._buf, self._start)
        if size > self.max_frame:
            raise FrameError(f"frame of {size:,} bytes exceeds the {self.max_frame:,}-byte maximum")
        if size < ENVELOPE_HEADER.size:
            raise FrameError(f"frame of {size} bytes is too short to hold an envelope")
        self._fill(LENGTH.size + ENVELOPE_HEADER.size)
        ct_len = ENVELOPE_HEADER.unpack_from(self._buf, self._start + LENGTH.size)[5]
        if ENVELOPE_HEADER.size + ct_len > size:
            raise FrameError(f"content type of {ct_len} bytes runs past the frame")
        self._fill(LENGTH.size + size)  # may move the frame to the front of the buffer
        head = self._start + LENGTH.size
        body = head + ENVELOPE_HEADER.size + ct_len
        end = head + size
        envelope = unpack(self._view[head:body], bytes(self._view[body:end]))
        self._start = end
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > self._base:  # a large frame passed: give its memory back
                self._view.release()
                self._buf = bytearray(self._base)
                self._view = memoryview(self._buf)
        return envelope


def read_frame(sock: socket.socket, max_frame: int = MAX_FRAME) -> Envelope:
    """One envelope from a length-prefixed stream, reading exactly its bytes and no more (for
    a caller that reads one frame and hands the socket on); a stream of frames reads faster
    through :class:`FrameReader`. FrameError on anything malformed."""
    (size,) = LENGTH.unpack(recv_exact(sock, LENGTH.size))
    if size > max_frame:
        raise FrameError(f"frame of {size:,} bytes exceeds the {max_frame:,}-byte maximum")
    if size < ENVELOPE_HEADER.size:
        raise FrameError(f"frame of {size} bytes is too short to hold an envelope")
    head = recv_exact(sock, ENVELOPE_HEADER.size)
    ct_len = ENVELOPE_HEADER.unpack(head)[5]
    if ENVELOPE_HEADER.size + ct_len > size:
        raise FrameError(f"content type of {ct_len} bytes runs past the frame")
    rest = recv_exact(sock, size - ENVELOPE_HEADER.size)
    return unpack(head + rest[:ct_len], rest[ct_len:])


def connect_with_backoff(
    address: tuple[str, int], stop: Any, max_backoff: float = 1.0
) -> socket.socket | None:
    """A connection to ``address``, retrying with exponential back-off until ``stop`` is set
    (then None). Subscribers use it to reconnect after their server went away."""
    backoff = 0.02
    while not stop.is_set():
        try:
            sock = socket.create_connection(address, timeout=2.0)
        except OSError:
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        sock.settimeout(None)
        return sock
    return None


class SocketSubscriber(QueuedSubscriber):
    """A subscriber holding one TCP connection to its server, read by a background thread.

    It connects, hands the socket to :meth:`_serve` (the protocol: read frames, ``_put`` what
    arrives), and when the connection ends reconnects with back-off, unless ``reconnect`` is
    off. A peer that sends a bad frame is dropped with the reason kept in ``errors``; a
    connection the server ends is counted in ``disconnects``. The
    constructor returns once the first connection is up (or ``connect_timeout`` has passed), so
    that, as with Kafka's subscriber, what is published after it returns reaches it.
    """

    label = "subscriber"
    max_backoff = 1.0

    def _start(
        self,
        address: tuple[str, int],
        *,
        buffer: int,
        reconnect: bool,
        connect_timeout: float,
    ) -> None:
        self.address = address
        self.reconnect = reconnect
        self._init_queue(buffer)
        self._sock: socket.socket | None = None
        self.errors: list[str] = []
        self.connections = 0
        self.disconnects = 0
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.label)
        self._thread.start()
        self._connected.wait(connect_timeout)

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        pause = 0.0
        while not self._stop.is_set():
            # A server that accepts and at once closes (it refuses us, or it is restarting)
            # must not be redialled in a tight loop: pause, doubling, after each connection
            # that brought nothing; one that delivered anything resets it.
            if pause and self._stop.wait(pause):
                return
            sock = connect_with_backoff(self.address, self._stop, self.max_backoff)
            if sock is None:
                return
            self._sock = sock
            self.connections += 1
            self._connected.set()
            received_before = self.received
            try:
                self._serve(sock)
            except FrameError as exc:
                self.errors.append(str(exc))
                if isinstance(exc, ClosedMidFrame) and not self._stop.is_set():
                    self.disconnects += 1  # and the server went away: reconnect below
                log.warning("%s dropped the connection to %s: %s", self.label, self.address, exc)
            except OSError:
                if not self._stop.is_set():
                    self.disconnects += 1  # the server went away: reconnect below
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
                self._sock = None
            if not self.reconnect:
                return
            if self.received > received_before:
                pause = 0.0
            else:
                pause = min(max(2 * pause, 0.02), self.max_backoff)

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "connections": self.connections,
            "disconnects": self.disconnects,
            "errors": len(self.errors),
        }

    def close(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=3)
