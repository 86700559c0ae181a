"""Access control as Rubin runs it: SASL/SCRAM-SHA-512 users and ACLs on a real broker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Envelope, Start, TransportError
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import (
    ADMIN_USER,
    PRODUCER_USER,
    KafkaCluster,
    fetch_jars,
)

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
    refused = r"no Kafka broker .* answers \(is it running\? does the cluster require SASL"
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


# Kafka's own Java Admin client (librdkafka has no ``bootstrap.controllers``): the tool a local
# intruder would use. It asks the controllers to let the given principal WRITE the given topic,
# once with no credentials and once per USER:PASSWORD given after, and prints one line each.
CONTROLLER_ACL_CLIENT = """\
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class ControllerAcl {
    public static void main(String[] args) {
        AclBinding write = new AclBinding(
            new ResourcePattern(ResourceType.TOPIC, args[1], PatternType.LITERAL),
            new AccessControlEntry("User:" + args[2], "*", AclOperation.WRITE,
                AclPermissionType.ALLOW));
        // args[3..]: accounts to try after the anonymous attempt (null), as USER:PASSWORD.
        String[] accounts = new String[args.length - 2];
        System.arraycopy(args, 3, accounts, 1, args.length - 3);
        for (String account : accounts) {
            Properties conf = new Properties();
            conf.put("bootstrap.controllers", args[0]);
            conf.put("default.api.timeout.ms", "4000");
            conf.put("request.timeout.ms", "2000");
            String as = "anonymous";
            if (account != null) {
                String[] login = account.split(":", 2);
                as = login[0];
                conf.put("security.protocol", "SASL_PLAINTEXT");
                conf.put("sasl.mechanism", "PLAIN");
                conf.put("sasl.jaas.config", String.format(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required"
                    + " username='%s' password='%s';", login[0], login[1]));
            }
            try (Admin admin = Admin.create(conf)) {
                admin.createAcls(List.of(write)).all().get(8, TimeUnit.SECONDS);
                System.out.println(as + ": CREATED");
            } catch (Exception e) {
                System.out.println(as + ": REFUSED " + e);
            }
        }
    }
}
"""


def test_the_controller_listener_refuses_clients_without_its_account(secured, tmp_path) -> None:
    """Issue 14: the KRaft controller listener was PLAINTEXT and its principal, ANONYMOUS, a super
    user, so any local process could grant itself rights through ``bootstrap.controllers``
    (here: a reader allowed to WRITE the alert stream). It now takes SASL/PLAIN with the nodes'
    own account only; not even the cluster admin's password opens it."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    require_tools("javac")  # the Java client below runs from source (java File.java)
    source = tmp_path / "ControllerAcl.java"
    source.write_text(CONTROLLER_ACL_CLIENT)
    controllers = ",".join(f"127.0.0.1:{n.controller_port}" for n in secured.nodes)
    intruders_acl = AclBindingFilter(
        ResourceType.TOPIC, secured.alert_topic, ResourcePatternType.LITERAL,
        "User:broker-a", None, AclOperation.WRITE, AclPermissionType.ANY,
    )  # fmt: skip
    admin = AdminClient(secured.admin_config())
    try:
        done = subprocess.run(
            [
                "java", "-cp", f"{fetch_jars()}/*", str(source), controllers,
                secured.alert_topic, "broker-a", f"{ADMIN_USER}:{secured.users[ADMIN_USER]}",
            ],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        assert done.returncode == 0 and len(lines) == 2, done.stdout + done.stderr[-2000:]
        anonymous, guessed = lines
        assert anonymous.startswith("anonymous: REFUSED"), anonymous
        # The listener is up and authenticating (a refusal, not a dead port): a wrong account.
        assert guessed.startswith(f"{ADMIN_USER}: REFUSED"), guessed
        assert "SaslAuthenticationException" in guessed, guessed
        assert admin.describe_acls(intruders_acl).result(30) == []
        for node in secured.nodes:  # the account's password is in each node's config: 0600
            assert (Path(node.workdir) / "server.properties").stat().st_mode & 0o777 == 0o600
    finally:  # on the code before, the intruder's ACL exists: leave the cluster as it was
        for future in admin.delete_acls([intruders_acl]).values():
            future.result(30)
