"""One conformance suite for every transport: the same tests, the same envelopes.

A transport is done when it passes this suite, not when it has tests of its own. Each test reads
the transport's declared capabilities and holds it to them: a transport that declares replay must
replay, one that declares fan-out must give every subscriber everything, and one that declares
neither must say so when asked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.kafka_cluster import KafkaCluster, free_port
from refimpl.avro_codec import AvroSerializer
from transports.base import Envelope, Received, Start, TransportError, get_transport
from transports.grpc import AlertStreamServer

KINDS = ["kafka", "grpc", "zmq-pubsub", "zmq-pushpull", "tcp"]


@dataclass
class UnderTest:
    """A transport plus whatever server it needs, with a fresh address per test."""

    kind: str
    url: str
    server: Any = None
    cluster: KafkaCluster | None = None
    transport: Any = field(init=False)

    def __post_init__(self) -> None:
        self.transport = get_transport(self.url)
        if self.kind == "kafka":
            self.transport.ensure_topic(partitions=1)

    @property
    def caps(self):
        return self.transport.capabilities

    def publisher(self):
        return self.transport.open_publisher()

    def subscriber(self, start: Start | None = None):
        return self.transport.open_subscriber(start) if start else self.transport.open_subscriber()


@pytest.fixture(params=KINDS)
def under_test(request) -> Iterator[UnderTest]:
    kind = request.param
    if kind == "kafka":
        cluster = request.getfixturevalue("kafka_cluster")
        url = f"kafka://{cluster.bootstrap_servers}/conformance-{uuid.uuid4().hex[:8]}"
        yield UnderTest(kind, url, cluster=cluster)
    elif kind == "grpc":
        with AlertStreamServer(window=10_000) as server:
            yield UnderTest(kind, server.url, server=server)
    elif kind.startswith("zmq"):
        pattern = kind.split("-")[1]
        yield UnderTest(kind, f"zmq+tcp://127.0.0.1:{free_port()}?pattern={pattern}")
    else:
        yield UnderTest(kind, f"tcp://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def payloads(alerts) -> list[tuple[int, bytes, str]]:
    codec = AvroSerializer()
    return [(a["diaSourceId"], codec.dumps(a), codec.content_type) for a in alerts]


class Collector:
    """Drains a subscriber in a thread (so a blocking transport never deadlocks the test)."""

    def __init__(self, subscriber, count: int, idle: float = 10.0) -> None:
        self.subscriber = subscriber
        self.count = count
        self.idle = idle
        self.items: list[Received] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while len(self.items) < self.count:
            item = self.subscriber.poll(self.idle)
            if item is None:
                return
            self.items.append(item)

    def join(self, timeout: float = 60.0) -> list[Received]:
        self._thread.join(timeout)
        return self.items

    @property
    def ids(self) -> list[int]:
        return [r.envelope.alert_id for r in self.items]


def _ready(publisher, subscribers: int) -> None:
    wait = getattr(publisher, "wait_for_subscribers", None)
    if wait is not None:
        wait(subscribers, timeout=10)


def _gone(publisher) -> None:
    """For brokerless transports: wait until the publisher has noticed a subscriber leave."""
    count = getattr(publisher, "connected_subscribers", None)
    if count is None:
        return
    deadline = time.monotonic() + 10
    while count() > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count() == 0, "the publisher never noticed the subscriber leave"


def _publish(publisher, payloads, count: int, first_id: int = 0) -> list[int]:
    ids = []
    for i in range(count):
        _, payload, ctype = payloads[i % len(payloads)]
        alert_id = first_id + i
        publisher.publish(
            Envelope(
                payload=payload,
                content_type=ctype,
                alert_id=alert_id,
                sequence=alert_id,
                t_intended_ns=time.time_ns(),
            )
        )
        ids.append(alert_id)
    assert publisher.flush(30) == 0
    return ids


def test_completeness_and_order(under_test, payloads) -> None:
    sub = under_test.subscriber()
    pub = under_test.publisher()
    _ready(pub, 1)
    collector = Collector(sub, 200)
    sent = _publish(pub, payloads, 200)
    got = collector.join()
    pub.close()
    sub.close()
    assert [r.envelope.alert_id for r in got] == sent  # every alert, in publish order
    by_id = {i: p for i, p, _ in payloads}
    for r in got[: len(payloads)]:
        assert r.envelope.payload == payloads[r.envelope.alert_id % len(payloads)][1]
        assert r.envelope.content_type == payloads[0][2]
        assert r.t_received_ns >= r.envelope.t_sent_ns > 0
    assert by_id


def test_five_megabyte_messages(under_test) -> None:
    big = [bytes([i]) * (5 * 1024 * 1024) for i in range(4)]
    sub = under_test.subscriber()
    pub = under_test.publisher()
    _ready(pub, 1)
    collector = Collector(sub, len(big), idle=20)
    for i, payload in enumerate(big):
        pub.publish(
            Envelope(
                payload=payload, content_type="application/octet-stream", alert_id=i, sequence=i
            )
        )
    assert pub.flush(60) == 0
    got = collector.join()
    pub.close()
    sub.close()
    assert [r.envelope.payload for r in got] == big


def test_three_concurrent_subscribers(under_test, payloads) -> None:
    subs = [under_test.subscriber() for _ in range(3)]
    pub = under_test.publisher()
    _ready(pub, 3)
    n = 90
    expect_each = n if under_test.caps.fanout else None
    collectors = [
        Collector(s, expect_each or n, idle=5 if expect_each is None else 10) for s in subs
    ]
    sent = _publish(pub, payloads, n)
    results = [c.join() for c in collectors]
    pub.close()
    for s in subs:
        s.close()
    if under_test.caps.fanout:
        for got in results:
            assert [r.envelope.alert_id for r in got] == sent
    else:  # load-balanced: together they received each alert exactly once
        union = sorted(r.envelope.alert_id for got in results for r in got)
        assert union == sent
        assert all(got for got in results), "every puller got a share"


def test_subscriber_reconnect(under_test, payloads) -> None:
    sub = under_test.subscriber(Start.earliest() if under_test.caps.replay else None)
    pub = under_test.publisher()
    _ready(pub, 1)
    first = Collector(sub, 30)
    sent_a = _publish(pub, payloads, 30)
    got_a = first.join()
    assert [r.envelope.alert_id for r in got_a] == sent_a
    resume_at = got_a[-1].position
    sub.close()

    if under_test.caps.replay:
        # Publish while nobody listens, then resume after the last position seen.
        sent_b = _publish(pub, payloads, 30, first_id=30)
        start = (
            Start.offset(resume_at + 1)
            if under_test.kind == "grpc"
            else Start.offset(resume_at[1] + 1)
        )
        again = under_test.subscriber(start)
        got_b = Collector(again, 30).join()
        assert [r.envelope.alert_id for r in got_b] == sent_b
    else:
        _gone(pub)
        again = under_test.subscriber()
        _ready(pub, 1)
        collector = Collector(again, 30)
        sent_b = _publish(pub, payloads, 30, first_id=30)
        assert collector.join() and collector.ids == sent_b
    again.close()
    pub.close()


def test_publisher_restart(under_test, payloads) -> None:
    sub = under_test.subscriber()
    pub = under_test.publisher()
    _ready(pub, 1)
    collector = Collector(sub, 40, idle=15)
    sent = _publish(pub, payloads, 20)
    pub.close()
    time.sleep(0.2)
    pub = under_test.publisher()  # same address, a new process would do the same
    _ready(pub, 1)  # brokerless transports: the subscriber reconnects on its own
    sent += _publish(pub, payloads, 20, first_id=20)
    got = collector.join()
    pub.close()
    sub.close()
    assert [r.envelope.alert_id for r in got] == sent


def test_capabilities_are_honoured(under_test, payloads) -> None:
    caps = under_test.caps
    assert caps.acknowledgement in ("per-message", "batched", "none")
    if not caps.replay:
        with pytest.raises(TransportError, match="no replay"):
            under_test.subscriber(Start.earliest())
        return
    pub = under_test.publisher()
    sent = _publish(pub, payloads, 25)  # nobody is subscribed yet
    late = under_test.subscriber(Start.earliest())
    got = Collector(late, 25).join()
    late.close()
    pub.close()
    assert [r.envelope.alert_id for r in got] == sent
