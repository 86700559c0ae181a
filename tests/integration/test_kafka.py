"""The Kafka transport against real Apache Kafka started by the project's launcher."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from alertbench.harness.consume import AlertReader
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Envelope, Start, TransportError, get_transport
from alertbench.transports.kafka import COMPRESSION, KafkaTransport
from alertbench.transports.servers.kafka_cluster import KafkaCluster
from confluent_kafka import Producer

from alertbench.errors import ConfigError
from tests.support.servers import require_tools
from tests.support.streams import drain

pytestmark = pytest.mark.kafka


def _topic(cluster: KafkaCluster, partitions: int = 3, rf: int = 1, **opts) -> KafkaTransport:
    url = f"kafka://{cluster.bootstrap_servers}/alerts-{uuid.uuid4().hex[:8]}"
    transport = get_transport(url, **opts)
    assert isinstance(transport, KafkaTransport)
    transport.ensure_topic(partitions=partitions, replication_factor=rf)
    return transport


def _envelopes(alerts, codec, start_seq: int = 0) -> list[Envelope]:
    now = time.time_ns()
    return [
        Envelope(
            payload=codec.dumps(a),
            content_type=codec.content_type,
            alert_id=a["diaSourceId"],
            t_shutter_ns=now,
            t_intended_ns=now,
            sequence=start_seq + i,
        )
        for i, a in enumerate(alerts)
    ]


def _publish(transport: KafkaTransport, envelopes: list[Envelope]):
    pub = transport.open_publisher()
    for env in envelopes:
        pub.publish(env)
    assert pub.flush(30) == 0
    assert not pub.failed
    return pub


@pytest.fixture(scope="module")
def codec() -> AvroSerializer:
    return AvroSerializer()


def test_a_visit_arrives_complete_decodable_and_in_order_per_partition(
    kafka_cluster, alerts, codec
) -> None:
    transport = _topic(kafka_cluster, partitions=3)
    pub = _publish(transport, _envelopes(alerts, codec))
    assert sorted(pub.acked) == sorted(a["diaSourceId"] for a in alerts)

    sub = transport.open_subscriber(Start.earliest())
    reader = AlertReader(sub)
    got = list(reader.read(len(alerts), idle_timeout=20))
    sub.close()
    assert not reader.rejected
    by_id = {a["diaSourceId"]: a for a in alerts}
    assert len(got) == len(alerts)
    for alert, _ in got:
        assert alert == by_id[alert["diaSourceId"]]  # Rubin-framed Avro survives the trip
    last_seq: dict[int, int] = {}
    for _, received in got:
        partition, _offset = received.position
        assert received.envelope.sequence > last_seq.get(partition, -1)
        last_seq[partition] = received.envelope.sequence
        assert received.envelope.content_type == codec.content_type
        assert received.t_received_ns >= received.envelope.t_sent_ns > 0
    assert len(last_seq) == 3  # the key spread the visit over every partition


def test_replay_from_earliest_and_from_a_time(kafka_cluster, alerts, codec) -> None:
    transport = _topic(kafka_cluster, partitions=2)
    first, second = alerts[:60], alerts[60:120]
    _publish(transport, _envelopes(first, codec))
    time.sleep(1.0)  # Kafka timestamps are milliseconds: leave a clear gap
    cut = time.time_ns()
    time.sleep(0.2)
    _publish(transport, _envelopes(second, codec, start_seq=60))

    everything = transport.open_subscriber(Start.earliest())
    ids = {r.envelope.alert_id for r in drain(everything, 120, timeout=10)}
    assert everything.poll(1.0) is None  # and nothing more
    everything.close()
    assert ids == {a["diaSourceId"] for a in first + second}

    recent = transport.open_subscriber(Start.time(cut))
    ids = [r.envelope.alert_id for r in drain(recent, 60, timeout=10)]
    assert recent.poll(1.0) is None
    recent.close()
    assert sorted(ids) == sorted(a["diaSourceId"] for a in second)


def test_replay_from_an_offset(kafka_cluster, alerts, codec) -> None:
    transport = _topic(kafka_cluster, partitions=1)
    _publish(transport, _envelopes(alerts[:40], codec))
    sub = transport.open_subscriber(Start.offset(25))
    got = list(drain(sub, 15, timeout=10))
    assert sub.poll(1.0) is None
    sub.close()
    assert [r.envelope.alert_id for r in got] == [a["diaSourceId"] for a in alerts[25:40]]
    assert got[0].origin.endswith("/0@25")


def test_two_consumer_groups_each_get_the_full_stream(kafka_cluster, alerts, codec) -> None:
    transport = _topic(kafka_cluster, partitions=3)
    _publish(transport, _envelopes(alerts, codec))
    expected = {a["diaSourceId"] for a in alerts}
    for group in ("broker-a-main", "broker-b-main"):
        sub = transport.open_subscriber(Start.earliest(), group=group)
        assert {r.envelope.alert_id for r in drain(sub, len(expected), timeout=10)} == expected
        assert sub.poll(1.0) is None
        sub.close()


def test_a_group_resumes_where_it_committed(kafka_cluster, alerts, codec) -> None:
    transport = _topic(kafka_cluster, partitions=1)
    _publish(transport, _envelopes(alerts[:30], codec))
    sub = transport.open_subscriber(Start.earliest(), group="resumer")
    first = [r.envelope.alert_id for r in drain(sub, 10, timeout=10)]
    sub.close()  # stores and commits the position after the 10th alert
    again = transport.open_subscriber(Start.latest(), group="resumer")
    rest = [r.envelope.alert_id for r in drain(again, 20, timeout=10)]
    assert again.poll(1.0) is None
    again.close()
    assert first + rest == [a["diaSourceId"] for a in alerts[:30]]


def _numbered(codec, alerts, n: int, first_id: int) -> list[Envelope]:
    payloads = [codec.dumps(a) for a in alerts[:3]]
    return [
        Envelope(
            payload=payloads[i % len(payloads)],
            content_type=codec.content_type,
            alert_id=first_id + i,
            sequence=i,
        )
        for i in range(n)
    ]


def test_a_new_member_of_a_latest_group_starts_where_the_group_started(
    kafka_cluster, alerts, codec
) -> None:
    """A group's start is the group's, not one member's: a member that replaces one which
    read nothing (it crashed, or was scaled down) resumes where the group started, not at a
    later end of the partitions past every alert published meanwhile."""
    transport = _topic(kafka_cluster, partitions=3)
    group = f"replaced-{uuid.uuid4().hex[:8]}"
    first = transport.open_subscriber(Start.latest(), group=group, commit="manual")
    envelopes = _numbered(codec, alerts, 30, 30_000_000)
    _publish(transport, envelopes)
    first.close()  # read nothing, committed nothing itself
    second = transport.open_subscriber(Start.latest(), group=group)
    got = {r.envelope.alert_id for r in drain(second, 30, timeout=20)}
    second.close()
    assert got == {e.alert_id for e in envelopes}


def test_a_rebalance_resumes_each_partition_where_the_subscriber_left_it(
    kafka_cluster, alerts, codec
) -> None:
    """What the group does when its coordinator dies and the member's session expires (CI
    saw it when a broker kill moved the coordinator): the same member is given the same
    partitions again, here forced by leaving and rejoining the group. A manual-commit
    subscriber (the mini-broker's kind) that has committed nothing resumes after what it
    read, neither skipping to the end nor re-reading."""
    transport = _topic(kafka_cluster, partitions=3)
    sub = transport.open_subscriber(Start.latest(), commit="manual")
    envelopes = _numbered(codec, alerts, 30, 31_000_000)
    _publish(transport, envelopes)
    before = [r.envelope.alert_id for r in drain(sub, 10, timeout=20)]
    consumer = sub._consumer
    consumer.unsubscribe()
    consumer.subscribe([transport.topic], on_assign=sub._on_assign, on_revoke=sub._on_revoke)
    after = [r.envelope.alert_id for r in drain(sub, 20, timeout=30)]
    assert sub.poll(2.0) is None
    duplicates = sub.duplicates
    sub.close()
    assert len(before) == 10 and len(after) == 20
    assert sorted(before + after) == [e.alert_id for e in envelopes]
    assert duplicates == 0  # resumed after what it read, not from the group's start


def test_bad_messages_are_reported_with_their_position_and_skipped(
    kafka_cluster, alerts, codec
) -> None:
    transport = _topic(kafka_cluster, partitions=1)
    raw = Producer({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    good = _envelopes(alerts[:3], codec)
    _publish(transport, good[:1])
    raw.produce(
        transport.topic,
        value=b"\x00\x00\x00\x04Mgarbage",
        key=b"111",
        headers=[("content-type", codec.content_type.encode()), ("alert-id", b"111")],
    )
    raw.produce(
        transport.topic,
        value=b"<xml/>",
        key=b"222",
        headers=[("content-type", b"text/plain"), ("alert-id", b"222")],
    )
    raw.produce(transport.topic, value=b"no headers at all")
    assert raw.flush(10) == 0
    _publish(transport, good[1:])

    reader = AlertReader(transport.open_subscriber(Start.earliest()))
    got = [a["diaSourceId"] for a, _ in reader.read(3, idle_timeout=10)]
    reader.subscriber.close()
    assert got == [a["diaSourceId"] for a in alerts[:3]]  # the stream went on
    assert [r.origin for r in reader.rejected] == [
        f"{transport.topic}/0@1",
        f"{transport.topic}/0@2",
        f"{transport.topic}/0@3",
    ]
    assert "not a valid schema" in reader.rejected[0].reason
    assert "no serializer for content type 'text/plain'" in reader.rejected[1].reason
    assert "no serializer for content type ''" in reader.rejected[2].reason


def test_null_and_garbled_headers_are_counted_and_the_alert_still_delivered(
    kafka_cluster, alerts, codec
) -> None:
    """Issue 14, item 2: a null ``alert-id`` header (legal in Kafka) raised TypeError in the
    subscriber, which stopped the mini-broker after its offsets had passed an alert."""
    transport = _topic(kafka_cluster, partitions=1)
    raw = Producer({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    payloads = [codec.dumps(a) for a in alerts[:3]]
    ctype = codec.content_type.encode()
    raw.produce(
        transport.topic,
        value=payloads[0],
        key=b"1",
        headers=[("content-type", ctype), ("alert-id", None)],
    )
    raw.produce(
        transport.topic,
        value=payloads[1],
        key=b"2",
        headers=[("content-type", ctype), ("alert-id", b"\xff\xfe"), ("t-intended-ns", b"9" * 40)],
    )
    raw.produce(
        transport.topic,
        value=payloads[2],
        key=b"3",
        headers=[("content-type", ctype), ("alert-id", b"3"), ("sequence", None)],
    )
    assert raw.flush(10) == 0  # fmt: skip
    sub = transport.open_subscriber(Start.earliest())
    got = list(drain(sub, 3, 10))
    counters = sub.counters()
    sub.close()
    assert [r.envelope.alert_id for r in got] == [1, 2, 3]  # the key's id where the header lies
    assert [r.envelope.payload for r in got] == payloads
    assert counters["bad_headers"] == 3
    assert any(f"{transport.topic}/0@0" in e and "alert-id" in e for e in sub.errors)


def test_a_forged_alert_id_header_does_not_hide_the_real_alert(kafka_cluster, alerts, codec):
    """Issue 14, item 12: de-duplication trusted the alert-id header, so a forged record carrying
    a real alert's id, written first, made the real alert be dropped as a duplicate."""
    transport = _topic(kafka_cluster, partitions=1)
    raw = Producer({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    real = alerts[0]
    ctype = codec.content_type.encode()
    forged_id = str(real["diaSourceId"]).encode()
    raw.produce(
        transport.topic,
        value=b"\x00forged",
        key=forged_id,
        headers=[("content-type", ctype), ("alert-id", forged_id)],
    )
    raw.produce(
        transport.topic,
        value=codec.dumps(real),
        key=forged_id,
        headers=[("content-type", ctype), ("alert-id", forged_id)],
    )
    assert raw.flush(10) == 0  # fmt: skip
    sub = transport.open_subscriber(Start.earliest())
    got = list(drain(sub, 2, 10))
    sub.close()
    assert len(got) == 2 and got[0].envelope.payload == b"\x00forged"
    assert got[1].envelope.payload == codec.dumps(real)  # the real alert, not hidden
    assert sub.duplicates == 0


def test_publishing_to_a_missing_topic_is_an_error_not_all_delivered(
    kafka_cluster, alerts, codec
) -> None:
    """Issue 14, item 4: with auto-create off every delivery failed UNKNOWN_TOPIC_OR_PART, and
    flush() still returned 0, "all delivered"."""
    url = f"kafka://{kafka_cluster.bootstrap_servers}/never-created-{uuid.uuid4().hex[:8]}"
    transport = get_transport(url, config={"message.timeout.ms": "3000"})
    pub = transport.open_publisher()
    for env in _envelopes(alerts[:3], codec):
        pub.publish(env)
    with pytest.raises(TransportError, match="does not exist"):
        pub.flush(20)
    assert pub.counters()["failed"] == 3 and pub.counters()["acknowledged"] == 0


@pytest.mark.parametrize("compression", [c for c in COMPRESSION if c != "gzip"])
def test_every_compression_codec_round_trips(kafka_cluster, alerts, codec, compression) -> None:
    transport = _topic(kafka_cluster, partitions=1, compression=compression)
    envelopes = _envelopes(alerts[:20], codec)
    _publish(transport, envelopes)
    sub = transport.open_subscriber(Start.earliest())
    got = [r.envelope.payload for r in drain(sub, len(envelopes), timeout=10)]
    assert sub.poll(0.5) is None
    sub.close()
    assert got == [e.payload for e in envelopes]


def test_bad_urls_and_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="names no topic"):
        get_transport("kafka://127.0.0.1:9092")
    with pytest.raises(ConfigError, match=r"option 'compression' .* is 'brotli'"):
        get_transport("kafka://127.0.0.1:9092/alerts?compression=brotli")
    with pytest.raises(TransportError, match="did you mean 'kafka'"):
        get_transport("kafak://127.0.0.1:9092/alerts")


def test_capabilities_are_declared() -> None:
    caps = KafkaTransport.capabilities
    assert caps.replay and caps.durable and caps.fanout and caps.backpressure


# -- fault tolerance on a 3-broker cluster ------------------------------------------------------


@pytest.fixture(scope="module")
def kafka_trio():
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=3, heap="384m").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _checksum(ids) -> str:
    return hashlib.sha256(",".join(str(i) for i in sorted(ids)).encode()).hexdigest()


@pytest.mark.fault
def test_killing_a_broker_mid_visit_loses_no_acknowledged_alert(
    kafka_trio, alerts, codec, record_property
) -> None:
    assert kafka_trio.replication_factor == 3 and kafka_trio.min_insync_replicas == 2
    transport = _topic(kafka_trio, partitions=3, rf=3, linger_ms=2)
    payloads = [codec.dumps(a) for a in alerts]
    n = 1500  # one visit's worth of realistic packets, cycled with unique ids
    pub = transport.open_publisher()
    victim = kafka_trio.nodes[1].node_id
    for i in range(n):
        pub.publish(
            Envelope(
                payload=payloads[i % len(payloads)],
                content_type=codec.content_type,
                alert_id=10_000_000 + i,
                sequence=i,
            )
        )
        if i == n // 2:
            kafka_trio.kill(victim)  # SIGKILL, mid-visit, with batches in flight
    remaining = pub.flush(120)  # not acknowledged: still queued, or failed (counted in failed)
    assert remaining == len(pub.failed), f"{remaining} alerts never acknowledged nor failed"
    acked = set(pub.acked)
    assert len(acked) >= n // 2  # the cluster kept accepting alerts after the kill

    sub = transport.open_subscriber(Start.earliest())
    consumed = {r.envelope.alert_id for r in drain(sub, n, timeout=20)}
    while (extra := sub.poll(2.0)) is not None:  # anything beyond n is a duplicate or a bug
        consumed.add(extra.envelope.alert_id)
    duplicates = sub.duplicates
    sub.close()
    record_property("kafka_fault_acked", len(acked))
    record_property("kafka_fault_failed", len(pub.failed))
    record_property("kafka_fault_duplicates", duplicates)
    print(
        f"\nbroker-kill test: {len(acked)} acknowledged, {len(pub.failed)} failed, "
        f"{len(consumed)} consumed after de-duplication, {duplicates} duplicates seen"
    )
    assert acked <= consumed
    assert len(consumed & acked) == len(acked)
    assert _checksum(consumed & acked) == _checksum(acked)


@pytest.mark.fault
def test_killing_one_broker_of_three_during_a_paced_run_loses_no_acknowledged_alert(
    kafka_trio, record_property
) -> None:
    """The fault suite's first case, through the engine as every benchmark runs: a paced run
    (1,500 alerts at 150 a second, one subscriber process) during which one broker of three is
    SIGKILLed; every alert is accounted for by id and no acknowledged alert is lost."""
    import threading

    from alertbench.harness.engine import RunSpec, Schedule, run

    for node in kafka_trio.nodes:  # an earlier test of this module may have killed one
        if node.node_id in kafka_trio._killed:
            kafka_trio.restart(node.node_id)
    kafka_trio.wait_ready()
    transport = _topic(kafka_trio, partitions=3, rf=3, linger_ms=2)
    victim = kafka_trio.nodes[2].node_id
    killer = threading.Timer(5.0, kafka_trio.kill, args=(victim,))  # mid-run: 10 s of sending
    killer.start()
    try:
        result = run(
            RunSpec(
                transport=transport.url,
                schedule=Schedule.constant_rate(150, 10),
                payload="pre-encoded",
                subscribers=1,
                idle_timeout=30,
                pool_size=50,
            )
        )
    finally:
        killer.cancel()
        killer.join()
    record_property("paced_kill_acknowledged", result.acknowledged)
    record_property("paced_kill_unacknowledged", result.unacknowledged)
    print(
        f"\npaced broker-kill: {result.alerts_published} published, {result.acknowledged} "
        f"acknowledged, {result.unacknowledged} not, {result.lost_acknowledged} acknowledged "
        f"and lost, {result.lost} not delivered, {result.duplicates} duplicates"
    )
    assert victim in kafka_trio._killed, "the broker was not killed during the run"
    assert result.alerts_published == 1500 and not result.aborted
    assert result.acknowledged is not None and result.acknowledged >= 1000
    assert result.acknowledged + result.unacknowledged == result.alerts_published
    assert result.lost_acknowledged == 0
