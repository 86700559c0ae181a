"""TCP's per-peer budgets (issue 14, item 11 and the socket-server build list): a subscriber that
stops reading is disconnected and counted instead of stopping the stream for everyone; the
connection cap refuses, and counts, what is over it; idle connections cost a new subscriber
nothing; a frame's announced length is never allocated before its bytes arrive."""

from __future__ import annotations

import socket
import struct
import threading
import time
import tracemalloc

from alertbench.transports.base import Envelope, get_transport
from alertbench.transports.servers.kafka_cluster import free_port

from tests.support.streams import drain

OUTBOX_BYTES = 64 * 1024 * 1024
"""The default outbox (alertbench.transports.tcp.OUTBOX_BYTES; checked below)."""

PAYLOAD = 100_000


def _env(i: int, size: int = PAYLOAD) -> Envelope:
    return Envelope(
        payload=bytes([i % 256]) * size,
        content_type="application/octet-stream",
        alert_id=i,
        sequence=i,
    )


def _stuck_subscriber(address: tuple[str, int]) -> socket.socket:
    """A subscriber that connects and then never reads a byte."""
    sock = socket.create_connection(address, timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def test_a_subscriber_that_stops_reading_does_not_stop_the_stream() -> None:
    """Before, publish() blocked in sendall on the stuck subscriber, for ever, for everyone."""
    transport = get_transport(f"tcp://127.0.0.1:{free_port()}")
    pub = transport.open_publisher()
    stuck = _stuck_subscriber(pub.address)
    good = transport.open_subscriber(buffer=100_000)
    assert pub.wait_for_subscribers(2)
    n = OUTBOX_BYTES // PAYLOAD + 400  # more than the stuck subscriber's outbox holds
    done = threading.Event()

    def publish_all() -> None:
        for i in range(n):
            pub.publish(_env(i))
        done.set()

    threading.Thread(target=publish_all, daemon=True).start()
    try:
        got = [r.envelope.alert_id for r in drain(good, n, timeout=60)]
        assert done.wait(60), "publish() stalled on a subscriber that reads nothing"
        assert got == list(range(n))  # the subscriber that reads lost nothing
        assert pub.counters()["subscribers_dropped"] == 1, pub.dropped
        assert any(reason.startswith("slow:") for reason in pub.dropped), pub.dropped
    finally:
        stuck.close()
        pub.close()
        good.close()


def test_a_lone_subscriber_that_stops_reading_is_cut_after_the_write_timeout() -> None:
    transport = get_transport(f"tcp://127.0.0.1:{free_port()}?write_timeout=1")
    pub = transport.open_publisher()
    stuck = _stuck_subscriber(pub.address)
    assert pub.wait_for_subscribers(1)
    started = time.monotonic()
    for i in range(OUTBOX_BYTES // PAYLOAD + 100):
        pub.publish(_env(i))
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 30, f"publish stalled {elapsed:.1f} s on one stuck subscriber"
        assert pub.connected_subscribers() == 0
        assert any("accepted nothing for 1 s" in reason for reason in pub.dropped), pub.dropped
    finally:
        stuck.close()
        pub.close()


def test_connections_over_the_cap_are_refused_and_counted() -> None:
    transport = get_transport(f"tcp://127.0.0.1:{free_port()}?max_subscribers=2")
    pub = transport.open_publisher()
    subs = [transport.open_subscriber() for _ in range(2)]
    assert pub.wait_for_subscribers(2)
    extra = socket.create_connection(pub.address, timeout=5)
    try:
        assert extra.recv(1) == b"", "a connection over the cap was not closed"
        assert pub.counters()["subscribers_refused"] >= 1
        for i in range(5):
            pub.publish(_env(i, 100))
        for sub in subs:  # the subscribers within the cap are served as before
            assert [r.envelope.alert_id for r in drain(sub, 5, timeout=10)] == list(range(5))
    finally:
        extra.close()
        pub.close()
        for sub in subs:
            sub.close()


def test_200_idle_connections_do_not_keep_a_new_subscriber_waiting() -> None:
    transport = get_transport(f"tcp://127.0.0.1:{free_port()}")
    pub = transport.open_publisher()
    idle = [socket.create_connection(pub.address, timeout=5) for _ in range(200)]
    try:
        assert pub.wait_for_subscribers(200, timeout=20)
        late = transport.open_subscriber(connect_timeout=5)
        assert pub.wait_for_subscribers(201, timeout=20)
        for i in range(10):
            pub.publish(_env(i, 1000))
        assert [r.envelope.alert_id for r in drain(late, 10, timeout=10)] == list(range(10))
        late.close()
    finally:
        for sock in idle:
            sock.close()
        pub.close()


def test_a_subscriber_allocates_a_frame_as_its_bytes_arrive_not_as_announced() -> None:
    """A hostile publisher announcing a 16 MiB frame and sending nothing made the subscriber
    allocate all 16 MiB at once, before a byte of it arrived."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    transport = get_transport(f"tcp://127.0.0.1:{port}")
    tracemalloc.start()
    try:
        sub = transport.open_subscriber(reconnect=False)
        conn, _ = server.accept()
        conn.sendall(struct.pack(">I", 16 * 1024 * 1024 - 1) + b"\0" * 1000)
        time.sleep(0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    conn.close()
    server.close()
    sub.close()
    assert peak < 4 * 1024 * 1024, f"{peak:,} bytes allocated for 1,004 bytes received"


def test_the_default_outbox_is_the_one_these_tests_assume() -> None:
    from alertbench.transports import tcp

    assert tcp.OUTBOX_BYTES == OUTBOX_BYTES
