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
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.transports.base import Envelope, Received, Start, TransportError, get_transport
from alertbench.transports.grpc import AlertStreamServer
from alertbench.transports.servers.kafka_cluster import KafkaCluster, free_port
from alertbench.transports.vtp import VtpBroker

KINDS = ["kafka", "grpc", "zmq-pubsub", "zmq-pushpull", "tcp", "vtp"]


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

    @property
    def voevent_only(self) -> bool:
        return getattr(self.transport, "accepts_only", None) == "application/x-voevent+xml"

    def ready(self, publisher, subscribers: int) -> None:
        """Wait until the publisher (or the broker) has ``subscribers`` subscribers."""
        owner = self.server if hasattr(self.server, "wait_for_subscribers") else publisher
        wait = getattr(owner, "wait_for_subscribers", None)
        if wait is not None:
            wait(subscribers, timeout=10)

    def gone(self, publisher) -> None:
        """Wait until a brokerless publisher (or the broker) noticed a subscriber leave."""
        owner = self.server if hasattr(self.server, "connected_subscribers") else publisher
        count = getattr(owner, "connected_subscribers", None)
        if count is None:
            return
        deadline = time.monotonic() + 10
        while count() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert count() == 0, "the publisher never noticed the subscriber leave"

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
    elif kind == "vtp":
        with VtpBroker() as broker:
            yield UnderTest(kind, broker.url, server=broker)
    elif kind.startswith("zmq"):
        pattern = kind.split("-")[1]
        yield UnderTest(kind, f"zmq+tcp://127.0.0.1:{free_port()}?pattern={pattern}")
    else:
        yield UnderTest(kind, f"tcp://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def payloads(alerts) -> list[tuple[int, bytes, str]]:
    codec = AvroSerializer()
    return [(a["diaSourceId"], codec.dumps(a), codec.content_type) for a in alerts]


@pytest.fixture(scope="module")
def voevents(alerts) -> VoeventPayloads:
    return VoeventPayloads(alerts)


class Source:
    """What the suite publishes: Rubin Avro alerts, or VOEvents where the transport needs them."""

    def __init__(self, payloads, voevents, voevent_only: bool) -> None:
        self.payloads = payloads
        self.voevents = voevents
        self.voevent_only = voevent_only

    def payload(self, alert_id: int) -> tuple[bytes, str]:
        if self.voevent_only:
            return self.voevents[alert_id], "application/x-voevent+xml"
        _, data, ctype = self.payloads[alert_id % len(self.payloads)]
        return data, ctype


@pytest.fixture
def source(under_test, payloads, voevents) -> Source:
    return Source(payloads, voevents, under_test.voevent_only)


class VoeventPayloads:
    """VTP carries only VOEvents, and its brokers refuse bytes they have seen: one distinct,
    XSD-valid VOEvent per alert id (cutouts by reference, so each is small)."""

    def __init__(self, alerts) -> None:
        self.alerts = alerts
        self.codec = VoeventSerializer(mode="reference", validate=False)
        self.cache: dict[int, bytes] = {}

    def __getitem__(self, alert_id: int) -> bytes:
        if alert_id not in self.cache:
            base = self.alerts[alert_id % len(self.alerts)]
            alert = dict(
                base, diaSourceId=alert_id, diaSource=dict(base["diaSource"], diaSourceId=alert_id)
            )
            self.cache[alert_id] = self.codec.dumps(alert)
        return self.cache[alert_id]


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


def _publish(publisher, source: Source, count: int, first_id: int = 0) -> list[int]:
    ids = []
    for i in range(count):
        alert_id = first_id + i
        payload, ctype = source.payload(alert_id)
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


def test_completeness_and_order(under_test, source) -> None:
    sub = under_test.subscriber()
    pub = under_test.publisher()
    under_test.ready(pub, 1)
    collector = Collector(sub, 200)
    sent = _publish(pub, source, 200)
    got = collector.join()
    pub.close()
    sub.close()
    assert [r.envelope.alert_id for r in got] == sent  # every alert, in publish order
    for r in got:
        payload, ctype = source.payload(r.envelope.alert_id)
        assert r.envelope.payload == payload  # byte for byte
        assert r.envelope.content_type == ctype
        if not under_test.voevent_only:  # VTP frames carry only the VOEvent, no timestamps
            assert r.t_received_ns >= r.envelope.t_sent_ns > 0


def test_five_megabyte_messages(under_test, alerts) -> None:
    big = [bytes([i]) * (5 * 1024 * 1024) for i in range(4)]
    if under_test.voevent_only:  # a VOEvent carrying a 5 MB cutout, embedded
        codec = VoeventSerializer(mode="embed", validate=False)
        big = [
            codec.dumps(dict(alerts[0], diaSourceId=i, cutoutScience=b)) for i, b in enumerate(big)
        ]
    sub = under_test.subscriber()
    pub = under_test.publisher()
    under_test.ready(pub, 1)
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


def test_three_concurrent_subscribers(under_test, source) -> None:
    subs = [under_test.subscriber() for _ in range(3)]
    pub = under_test.publisher()
    under_test.ready(pub, 3)
    n = 90
    expect_each = n if under_test.caps.fanout else None
    collectors = [
        Collector(s, expect_each or n, idle=5 if expect_each is None else 10) for s in subs
    ]
    sent = _publish(pub, source, n)
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


def test_subscriber_reconnect(under_test, source) -> None:
    sub = under_test.subscriber(Start.earliest() if under_test.caps.replay else None)
    pub = under_test.publisher()
    under_test.ready(pub, 1)
    first = Collector(sub, 30)
    sent_a = _publish(pub, source, 30)
    got_a = first.join()
    assert [r.envelope.alert_id for r in got_a] == sent_a
    resume_at = got_a[-1].position
    sub.close()

    if under_test.caps.replay:
        # Publish while nobody listens, then resume after the last position seen.
        sent_b = _publish(pub, source, 30, first_id=30)
        start = (
            Start.offset(resume_at + 1)
            if under_test.kind == "grpc"
            else Start.offset(resume_at[1] + 1)
        )
        again = under_test.subscriber(start)
        got_b = Collector(again, 30).join()
        assert [r.envelope.alert_id for r in got_b] == sent_b
    else:
        under_test.gone(pub)
        again = under_test.subscriber()
        under_test.ready(pub, 1)
        collector = Collector(again, 30)
        sent_b = _publish(pub, source, 30, first_id=30)
        assert collector.join() and collector.ids == sent_b
    again.close()
    pub.close()


def test_publisher_restart(under_test, source) -> None:
    sub = under_test.subscriber()
    pub = under_test.publisher()
    under_test.ready(pub, 1)
    collector = Collector(sub, 40, idle=15)
    sent = _publish(pub, source, 20)
    pub.close()
    time.sleep(0.2)
    pub = under_test.publisher()  # same address, a new process would do the same
    under_test.ready(pub, 1)  # brokerless transports: the subscriber reconnects on its own
    sent += _publish(pub, source, 20, first_id=20)
    got = collector.join()
    pub.close()
    sub.close()
    assert [r.envelope.alert_id for r in got] == sent


def test_capabilities_are_honoured(under_test, source) -> None:
    caps = under_test.caps
    assert caps.acknowledgement in ("per-message", "batched", "none")
    if not caps.replay:
        with pytest.raises(TransportError, match="no replay"):
            under_test.subscriber(Start.earliest())
        return
    pub = under_test.publisher()
    sent = _publish(pub, source, 25)  # nobody is subscribed yet
    late = under_test.subscriber(Start.earliest())
    got = Collector(late, 25).join()
    late.close()
    pub.close()
    assert [r.envelope.alert_id for r in got] == sent
