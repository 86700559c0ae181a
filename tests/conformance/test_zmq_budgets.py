"""ZeroMQ's per-peer budgets: a connection that never completes the ZMTP handshake is closed
after ``handshake_timeout`` (libzmq's own default is 30 s), and idle connections cost a new
subscriber nothing."""

from __future__ import annotations

import socket
import time

from alertbench.transports.base import Envelope, get_transport
from alertbench.transports.servers.kafka_cluster import free_port

from tests.support.streams import drain


def _env(i: int) -> Envelope:
    return Envelope(payload=b"x" * 500, content_type="x", alert_id=i, sequence=i)


def test_a_peer_that_never_handshakes_is_closed_after_the_handshake_timeout() -> None:
    transport = get_transport(
        f"zmq+tcp://127.0.0.1:{free_port()}?pattern=pubsub&handshake_timeout=1"
    )
    pub = transport.open_publisher()
    port = int(transport.endpoint.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    try:
        while silent.recv(4096):  # the publisher's greeting, then nothing until it closes
            pass
        waited = time.monotonic() - started
    finally:
        silent.close()
        pub.close()
    assert waited < 5, f"a silent peer was held {waited:.1f} s"


def test_200_idle_connections_do_not_keep_a_new_subscriber_waiting() -> None:
    transport = get_transport(f"zmq+tcp://127.0.0.1:{free_port()}?pattern=pubsub")
    pub = transport.open_publisher()
    port = int(transport.endpoint.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
    try:
        sub = transport.open_subscriber()
        assert pub.wait_for_subscribers(1, timeout=20)
        for i in range(10):
            pub.publish(_env(i))
        assert [r.envelope.alert_id for r in drain(sub, 10, timeout=10)] == list(range(10))
        sub.close()
    finally:
        for sock in idle:
            sock.close()
        pub.close()
