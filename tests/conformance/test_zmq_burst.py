"""ZeroMQ pub/sub drops, by design, what a subscriber's queues cannot hold. Its default
high-water mark must hold a visit's burst sent at full speed to a subscriber that is not
reading meanwhile (busy decoding the previous one), and what it cannot hold is counted."""

from __future__ import annotations

import os

from alertbench.transports.base import Envelope, get_transport
from alertbench.transports.servers.kafka_cluster import free_port

from tests.support.streams import drain

ALERT_BYTES = 134_000  # a realistic alert with its three cutouts


def _burst(options: str, n: int) -> tuple[int, int]:
    """Sends ``n`` alert-sized envelopes as fast as ZeroMQ takes them, then reads: returns
    (received, dropped by the subscriber's count)."""
    transport = get_transport(f"zmq+tcp://127.0.0.1:{free_port()}?pattern=pubsub{options}")
    pub = transport.open_publisher()
    sub = transport.open_subscriber()
    try:
        assert pub.wait_for_subscribers(1, timeout=20)
        payload = os.urandom(ALERT_BYTES)
        for i in range(n):
            pub.publish(Envelope(payload=payload, content_type="x", alert_id=i, sequence=i))
        got = sum(1 for _ in drain(sub, n, timeout=10))
        # One more once the subscriber has caught up, so a dropped tail shows as a gap too.
        pub.publish(Envelope(payload=b"end", content_type="x", alert_id=n, sequence=n))
        trailer = [r.envelope.alert_id for r in drain(sub, 1, timeout=10)]
        assert trailer == [n], trailer
        return got, sub.counters()["dropped"]
    finally:
        sub.close()
        pub.close()


def test_a_2000_alert_burst_over_pubsub_with_the_defaults_loses_nothing() -> None:
    received, dropped = _burst("", 2000)
    assert (received, dropped) == (2000, 0)


def test_a_burst_beyond_the_high_water_mark_is_counted_as_dropped() -> None:
    received, dropped = _burst("&hwm=50", 2000)
    assert received < 2000
    assert dropped == 2000 - received  # every drop counted, the tail's too (the trailer's gap)
