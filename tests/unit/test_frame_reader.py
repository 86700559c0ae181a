"""The tcp transport's buffered frame reader: frames of every size come out whole and in order
whatever the kernel hands over, and a peer's announced length never allocates by itself."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from alertbench.transports.base import Envelope
from alertbench.transports.framing import LENGTH, FrameReader, encode_frame

from alertbench.errors import FrameError


def _frame(i: int, size: int) -> bytes:
    env = Envelope(payload=os.urandom(size), content_type="x/y", alert_id=i, sequence=i)
    return b"".join(encode_frame(env, 7))


def _send_in_pieces(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    def run() -> None:
        for at in range(0, len(data), piece):
            sock.sendall(data[at : at + piece])
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_frames_of_every_size_come_out_whole_through_a_small_buffer(piece: int) -> None:
    sizes = [0, 1, 100, 5_000, 70_000, 0, 300_000, 13]  # some larger than the buffer
    frames = [_frame(i, n) for i, n in enumerate(sizes)]
    a, b = socket.socketpair()
    with a, b:
        sender = _send_in_pieces(a, b"".join(frames), piece)
        reader = FrameReader(b, size=64 * 1024)
        got = [reader.read() for _ in sizes]
        with pytest.raises(ConnectionResetError):  # closed between frames: a clean end
            reader.read()
        sender.join(10)
    assert [e.sequence for e in got] == list(range(len(sizes)))
    assert [len(e.payload) for e in got] == sizes
    assert all(isinstance(e.payload, bytes) and e.content_type == "x/y" for e in got)
    assert len(reader._buf) == 64 * 1024  # a large frame's memory was given back


def test_a_frame_cut_short_is_a_frame_error() -> None:
    frame = _frame(1, 10_000)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frame[:-10])
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(FrameError, match="mid-frame"):
            FrameReader(b).read()


def test_an_announced_length_allocates_only_as_its_bytes_arrive() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(LENGTH.pack(15 << 20) + b"\0" * 1000)  # 15 MiB announced, 1 KB sent
        a.shutdown(socket.SHUT_WR)
        reader = FrameReader(b, max_frame=16 << 20, size=64 * 1024)
        with pytest.raises(FrameError, match="mid-frame"):
            reader.read()
        assert len(reader._buf) == 64 * 1024


def test_lengths_beyond_the_maximum_or_below_a_header_are_refused() -> None:
    for length, message in ((1 << 30, "exceeds"), (3, "too short")):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(LENGTH.pack(length))
            with pytest.raises(FrameError, match=message):
                FrameReader(b, max_frame=1 << 20).read()
