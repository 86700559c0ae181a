"""A cluster that is not ours, reached over TLS: SASL_SSL with SCRAM, and SSL, on real Kafka.

The brokers' certificates are signed by a CA this module makes (keytool), so the client's
``ca_file`` is what decides whether the connection is trusted: the right CA gets alerts through,
another CA is refused with a TransportError that says TLS, and so is a wrong password.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Envelope, Start, TransportError
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import (
    PRODUCER_USER,
    CertificateAuthority,
    KafkaCluster,
)

from tests.support.servers import require_tools
from tests.support.streams import drain

pytestmark = pytest.mark.kafka

ALERTBENCH = str(Path(sys.executable).parent / "alertbench")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    require_tools("java", "mvn", "keytool")
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def secured(ca: CertificateAuthority) -> Iterator[KafkaCluster]:
    """SCRAM users and ACLs (as tests/integration/test_kafka_auth.py), with SCRAM-SHA-256
    credentials too, plus a SASL_SSL listener whose certificate ``ca`` signed."""
    cluster = KafkaCluster(
        brokers=1, auth=True, tls=ca, heap="384m", scram=("SCRAM-SHA-512", "SCRAM-SHA-256")
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _envelopes(alerts: list[dict], n: int) -> list[Envelope]:
    codec = AvroSerializer()
    return [
        Envelope(payload=codec.dumps(alert), content_type=codec.content_type, alert_id=i)
        for i, alert in enumerate(alerts[:n])
    ]


def _sasl_ssl(cluster: KafkaCluster, user: str, password: str | None = None, ca_file=None):
    return KafkaTransport(
        f"kafka://{cluster.tls_bootstrap_servers}/{cluster.alert_topic}",
        user=user,
        password=cluster.users[user] if password is None else password,
        ca_file=str(ca_file or cluster.ca_file),
    )


def test_sasl_ssl_scram_round_trip(secured: KafkaCluster, alerts) -> None:
    producer = _sasl_ssl(secured, PRODUCER_USER)
    assert producer.client_config()["security.protocol"] == "SASL_SSL"  # user + CA file
    pub = producer.open_publisher()
    for envelope in _envelopes(alerts, 10):
        pub.publish(envelope)
    assert pub.flush(30) == 0
    assert sorted(pub.acked) == list(range(10))
    pub.close()
    # The reader in the URL's query form, the protocol and mechanism spelt out.
    query = (
        f"user=broker-a&security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512"
        f"&ca_file={secured.ca_file}"
    )
    url = f"kafka://{secured.tls_bootstrap_servers}/{secured.alert_topic}?{query}"
    reader = KafkaTransport(url, password=secured.users["broker-a"])
    sub = reader.open_subscriber(Start.earliest(), group="broker-a-tls")
    got = list(drain(sub, 10, timeout=20))
    sub.close()
    assert sorted(r.envelope.alert_id for r in got) == list(range(10))
    assert [r.envelope.payload for r in sorted(got, key=lambda r: r.envelope.alert_id)] == [
        e.payload for e in _envelopes(alerts, 10)
    ]
    # The other reader logs in with SCRAM-SHA-256.
    other = KafkaTransport(
        f"kafka://{secured.tls_bootstrap_servers}/{secured.alert_topic}",
        user="broker-b",
        password=secured.users["broker-b"],
        sasl_mechanism="SCRAM-SHA-256",
        ca_file=str(secured.ca_file),
    )
    assert other.client_config()["sasl.mechanisms"] == "SCRAM-SHA-256"
    sub = other.open_subscriber(Start.earliest(), group="broker-b-tls")
    got = list(drain(sub, 10, timeout=20))
    sub.close()
    assert sorted(r.envelope.alert_id for r in got) == list(range(10))


def test_another_ca_is_refused_with_a_clear_error(secured, alerts, tmp_path: Path) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other-ca", name="not the brokers' CA")
    pub = _sasl_ssl(secured, PRODUCER_USER, ca_file=stranger.cert_file).open_publisher(
        config={"message.timeout.ms": 8000}
    )
    with pytest.raises(TransportError, match=r"TLS with the Kafka brokers .* failed .*verify"):
        pub.publish(_envelopes(alerts, 1)[0])
        pub.flush(15)


def test_a_wrong_password_is_refused_over_tls(secured, alerts) -> None:
    pub = _sasl_ssl(secured, PRODUCER_USER, password="not-the-password").open_publisher()
    with pytest.raises(TransportError, match=r"(?i)refused user 'alert-producer'.*authentication"):
        pub.publish(_envelopes(alerts, 1)[0])
        pub.flush(15)


def _status(cluster: KafkaCluster, password: str, tmp_path: Path) -> subprocess.CompletedProcess:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return subprocess.run(
        [
            ALERTBENCH, "kafka", "status", "--bootstrap-servers", cluster.tls_bootstrap_servers,
            "--security-protocol", "SASL_SSL", "--ca-file", str(cluster.ca_file),
            "--username", PRODUCER_USER, "--password-file", str(secret),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_kafka_status_over_sasl_ssl(secured: KafkaCluster, tmp_path: Path) -> None:
    good = _status(secured, secured.users[PRODUCER_USER], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"{secured.tls_bootstrap_servers}: 1 broker(s) answering" in good.stdout
    bad = _status(secured, "not-the-password", tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "0 broker(s) answering" in bad.stdout


def test_ssl_round_trip_to_an_advertised_name(ca: CertificateAuthority, alerts) -> None:
    """SSL without SASL, the brokers telling clients a name (``advertise``) rather than the
    address they listen on: the certificate must be for that name, and is."""
    with KafkaCluster(brokers=1, tls=ca, advertise="localhost", heap="384m") as cluster:
        assert cluster.tls_bootstrap_servers.startswith("localhost:")
        url = f"kafka://{cluster.tls_bootstrap_servers}/ssl-alerts"
        transport = KafkaTransport(url, ca_file=str(ca.cert_file))
        assert transport.client_config()["security.protocol"] == "SSL"
        transport.prepare(partitions=1)  # the admin client goes over TLS too
        sub = transport.open_subscriber(Start.earliest())
        pub = transport.open_publisher()
        for envelope in _envelopes(alerts, 5):
            pub.publish(envelope)
        assert pub.flush(30) == 0
        pub.close()
        got = list(drain(sub, 5, timeout=20))
        sub.close()
        assert sorted(r.envelope.alert_id for r in got) == list(range(5))
