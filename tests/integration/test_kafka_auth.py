"""Access control as Rubin runs it: SASL/SCRAM-SHA-512 users and ACLs on a real broker."""

from __future__ import annotations

import pytest
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Envelope, Start, TransportError
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import PRODUCER_USER, KafkaCluster

from tests.support.servers import require_tools
from tests.support.streams import drain

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def secured():
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=1, auth=True, readers=("broker-a", "broker-b")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _transport(cluster: KafkaCluster, user: str | None, password: str | None = None):
    url = f"kafka://{cluster.bootstrap_servers}/{cluster.alert_topic}"
    if user is not None and password is None:
        password = cluster.users[user]
    return KafkaTransport(url, user=user, password=password)


def _envelope(alert, codec, alert_id: int) -> Envelope:
    return Envelope(payload=codec.dumps(alert), content_type=codec.content_type, alert_id=alert_id)


def test_producer_writes_and_each_reader_reads_in_its_own_groups(secured, alerts) -> None:
    codec = AvroSerializer()
    pub = _transport(secured, PRODUCER_USER).open_publisher()
    for i, alert in enumerate(alerts[:10]):
        pub.publish(_envelope(alert, codec, i))
    assert pub.flush(30) == 0
    assert sorted(pub.acked) == list(range(10))
    for reader in ("broker-a", "broker-b"):
        sub = _transport(secured, reader).open_subscriber(Start.earliest(), group=f"{reader}-prod")
        assert sorted(r.envelope.alert_id for r in drain(sub, 10, timeout=15)) == list(range(10))
        sub.close()


def test_a_client_without_credentials_is_refused(secured, alerts) -> None:
    pub = _transport(secured, None).open_publisher(config={"message.timeout.ms": 8000})
    refused = r"no Kafka broker .* accepts us \(does the cluster require SASL credentials\?\)"
    with pytest.raises(TransportError, match=refused):
        pub.publish(_envelope(alerts[0], AvroSerializer(), 1))
        pub.flush(15)


def test_a_wrong_password_is_refused(secured, alerts) -> None:
    pub = _transport(secured, PRODUCER_USER, "not-the-password").open_publisher()
    with pytest.raises(TransportError, match=r"(?i)authentication"):
        pub.publish(_envelope(alerts[0], AvroSerializer(), 2))
        pub.flush(15)


def test_a_reader_cannot_write(secured, alerts) -> None:
    pub = _transport(secured, "broker-a").open_publisher()
    with pytest.raises(TransportError, match=r"(?i)authorization"):
        pub.publish(_envelope(alerts[0], AvroSerializer(), 3))
        pub.flush(15)


def test_a_reader_cannot_use_another_users_group_prefix(secured) -> None:
    with pytest.raises(TransportError, match=r"(?i)group authorization"):
        sub = _transport(secured, "broker-a").open_subscriber(
            Start.earliest(), group="broker-b-steal"
        )
        for _ in range(30):
            sub.poll(1.0)


def test_a_group_prefix_ends_at_a_separator(secured) -> None:
    """Issue 14, item 19: the prefix "broker-a" also matched "broker-ab-main", a group of a
    user who would be named "broker-ab"; the ACL is now on "broker-a-"."""
    with pytest.raises(TransportError, match=r"(?i)group authorization"):
        sub = _transport(secured, "broker-a").open_subscriber(
            Start.earliest(), group="broker-ab-main"
        )
        for _ in range(30):
            sub.poll(1.0)
