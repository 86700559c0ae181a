"""Run real Apache Kafka (KRaft mode) on 127.0.0.1 from Maven Central jars.

Why this and not a mock or a container: Kafka is the bulk transport Rubin chose, and replay and
survival of a broker failure can only be shown on the real thing. This machine has Java 17 and
Maven and no container engine, so the launcher fetches Kafka's own jars with Maven once (the
small pom in ``transports/servers/kafka/``), formats storage in a temporary directory, starts
each node as ``java kafka.Kafka server.properties``, waits until every broker answers a metadata
request, and stops the nodes with SIGTERM (SIGKILL after a grace period).

Each node is a combined broker + controller with its own ports chosen by the OS. ``brokers=3``
gives a 3-node quorum with Rubin's durability settings (replication factor 3,
min.insync.replicas 2). ``auth=True`` turns on SASL/SCRAM-SHA-512 for clients and the KRaft
standard authorizer, as Rubin runs it; the KRaft controller listener then takes SASL/PLAIN with
one static account, ``controller``, whose password only the nodes' own (0600) configuration
holds, so no other local process can reach the controllers' Admin API (``bootstrap.controllers``).

``scram=("SCRAM-SHA-512", "SCRAM-SHA-256")`` gives every account a SCRAM-SHA-256 credential
too, for clients that speak only that. ``tls=True`` (or a :class:`CertificateAuthority`) adds a
TLS client listener beside the plain one: SASL_SSL with the same SCRAM accounts under
``auth``, else SSL. Its broker certificate is signed by a CA made here with the JDK's keytool
(the JDK Kafka runs on, so no further dependency), for the advertised host, 127.0.0.1 and
localhost; clients trust ``ca_file``. So the security settings a cluster that is not ours needs
can be tested against the real thing.
``listen``/``advertise`` choose the host the client listeners bind and the one clients are told
(both 127.0.0.1 by default); the controllers stay on 127.0.0.1, reachable by the nodes only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alertbench.transports.base import MAX_FRAME

from alertbench.errors import ConfigError, ServerError
from alertbench.resources import cache_dir, pid_alive, write_private

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("kafka") / "pom.xml"
ADMIN_USER = "admin"
PRODUCER_USER = "alert-producer"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
"""What ``scram`` may enable on the client listeners (SCRAM-SHA-512 always: the brokers use it)."""
CONTROLLER_USER = "controller"
"""With ``auth``: the one principal of the controller listener (SASL/PLAIN, a static account in
each node's server.properties); the nodes use it to reach the quorum, and nobody else has it."""


class KafkaLauncherError(ServerError):
    """Kafka could not be fetched, formatted, started or reached."""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaLauncherError(
            f"{tool!r} is not on PATH: the Kafka launcher needs Java 17+ and Maven "
            "(apt-get install openjdk-17-jre-headless maven)"
        )
    return path


def fetch_jars() -> Path:
    """Kafka's jars from Maven Central, fetched once into the cache; returns the lib folder."""
    lib = cache_dir() / f"kafka-{KAFKA_VERSION}" / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    mvn = _require("mvn")
    lib.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise KafkaLauncherError(
            f"Maven could not fetch Kafka {KAFKA_VERSION}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise KafkaLauncherError(f"Maven ran but no kafka_2.13 jar is in {lib}")
    marker.write_text(KAFKA_VERSION)
    return lib


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` the OS says is free now (the broker binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def host_port(host: str, port: int) -> str:
    """``host:port`` as Kafka and librdkafka read it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _run_keytool(*args: str) -> None:
    result = subprocess.run(
        [_require("keytool"), *args], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise KafkaLauncherError(f"keytool {args[0]} failed:\n{result.stdout}{result.stderr}")


@dataclass(frozen=True)
class CertificateAuthority:
    """A throwaway certificate authority for a test cluster's TLS listener.

    Made with the JDK's keytool, which Kafka needs anyway (the ``cryptography`` package is not
    a dependency). Its key stays in a PKCS#12 file in ``folder`` (0700); ``cert_file`` is its
    certificate in PEM, what a client's ``ca_file`` names. Valid for ``days`` only: it exists
    to be thrown away with the cluster.
    """

    folder: Path
    cert_file: Path
    keystore: Path
    password: str = field(repr=False)

    @classmethod
    def create(
        cls, folder: Path, name: str = "alertbench test CA", days: int = 30
    ) -> CertificateAuthority:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        keystore, cert = folder / "ca.p12", folder / "ca.pem"
        password = uuid.uuid4().hex
        _run_keytool(
            "-genkeypair", "-alias", "ca", "-keyalg", "EC", "-groupname", "secp256r1",
            "-dname", f"CN={name}", "-ext", "bc:c", "-validity", str(days),
            "-keystore", str(keystore), "-storetype", "PKCS12",
            "-storepass", password, "-keypass", password,
        )  # fmt: skip
        _run_keytool(
            "-exportcert", "-rfc", "-alias", "ca", "-keystore", str(keystore),
            "-storepass", password, "-file", str(cert),
        )  # fmt: skip
        return cls(folder, cert, keystore, password)

    def issue_keystore(
        self, folder: Path, hosts: Sequence[str], name: str = "broker", days: int = 30
    ) -> tuple[Path, str]:
        """A PKCS#12 keystore (path, password) holding a new key and its certificate, signed
        by this CA, for ``hosts`` (IP addresses or DNS names, all in the subjectAltName:
        librdkafka checks the host it connects to against it)."""
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # the key's password is in the nodes' (0600) configuration only
        keystore, csr, cert = (folder / f"{name}{ext}" for ext in (".p12", ".csr", ".pem"))
        password = uuid.uuid4().hex
        store = ["-keystore", str(keystore), "-storepass", password]
        _run_keytool(
            "-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1",
            "-dname", f"CN={hosts[0]}", "-validity", str(days), "-storetype", "PKCS12",
            "-keypass", password, *store,
        )  # fmt: skip
        _run_keytool("-certreq", "-alias", name, "-file", str(csr), *store)
        san = ",".join(f"ip:{h}" if _is_ip_address(h) else f"dns:{h}" for h in dict.fromkeys(hosts))
        _run_keytool(
            "-gencert", "-alias", "ca", "-keystore", str(self.keystore),
            "-storepass", self.password, "-infile", str(csr), "-outfile", str(cert), "-rfc",
            "-validity", str(days), "-ext", f"SAN={san}", "-ext", "KU=digitalSignature",
            "-ext", "EKU=serverAuth",
        )  # fmt: skip
        # The CA first, so keytool accepts the signed certificate as the key's chain.
        _run_keytool(
            "-importcert", "-alias", "ca", "-file", str(self.cert_file), "-noprompt", *store
        )
        _run_keytool("-importcert", "-alias", name, "-file", str(cert), "-noprompt", *store)
        return keystore, password


def _is_ip_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    workdir: str
    pid: int = 0
    tls_port: int = 0
    """The TLS client listener's port (0: the cluster has none)."""


@dataclass
class ClusterState:
    """What ``alertbench kafka status|stop`` needs to find a cluster started earlier."""

    bootstrap_servers: str
    nodes: list[Node]
    workdir: str
    auth: bool = False
    users: dict[str, str] = field(default_factory=dict)
    schema_registry_url: str | None = None
    """The read-only schema registry ``alertbench kafka start`` runs beside the cluster (saved
    and loaded with the rest by asdict / ``cls(**data)``; state files without it load as None)."""

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self), indent=2))  # it holds the passwords

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        data = json.loads(path.read_text())
        data["nodes"] = [Node(**n) for n in data["nodes"]]
        return cls(**data)


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaCluster:
    """One local Kafka cluster: ``start()``, use ``bootstrap_servers``, ``stop()``."""

    def __init__(
        self,
        brokers: int = 1,
        *,
        auth: bool = False,
        alert_topic: str = "alerts",
        readers: tuple[str, ...] = ("broker-a", "broker-b"),
        workdir: Path | None = None,
        heap: str = "512m",
        partitions: int = 1,
        message_max_bytes: int = MAX_FRAME,
        tls: bool | CertificateAuthority = False,
        listen: str = "127.0.0.1",
        advertise: str | None = None,
        scram: tuple[str, ...] = ("SCRAM-SHA-512",),
    ) -> None:
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        if "SCRAM-SHA-512" not in scram or not set(scram) <= set(SCRAM_MECHANISMS):
            raise ConfigError(
                f"scram mechanisms {scram!r}: SCRAM-SHA-512 (the brokers' own) and optionally "
                "SCRAM-SHA-256"
            )
        self.scram = tuple(dict.fromkeys(scram))
        if advertise is None:
            if listen in WILDCARD_HOSTS:
                raise ConfigError(
                    f"listening on {listen or 'every address'!r} needs an address to advertise "
                    "to clients (advertise=HOST, --advertise HOST)"
                )
            advertise = listen
        self.listen = listen
        self.advertise = advertise
        self.n = brokers
        self.auth = auth
        self.tls = bool(tls)
        self.ca: CertificateAuthority | None = (
            tls if isinstance(tls, CertificateAuthority) else None
        )
        self._keystore: tuple[Path, str] | None = None
        self.heap = heap
        self.partitions = partitions
        self.message_max_bytes = message_max_bytes
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="alertbench-kafka-"))
        self.nodes: list[Node] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        self.alert_topic = alert_topic
        self.readers = readers
        self.users: dict[str, str] = {}
        # Not in ``users`` (the SCRAM accounts, saved and printed by ``alertbench kafka start``):
        # it is needed only by the nodes, and lives only in their server.properties.
        self._controller_password = uuid.uuid4().hex
        if auth:
            for user in (ADMIN_USER, PRODUCER_USER, *readers):
                self.users[user] = uuid.uuid4().hex
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()

    # -- configuration ----------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """The plain client listeners (PLAINTEXT, or SASL_PLAINTEXT with ``auth``)."""
        return ",".join(host_port(self.advertise, n.port) for n in self.nodes)

    @property
    def tls_protocol(self) -> str:
        """The TLS listener's security protocol: SASL_SSL with ``auth``, else SSL."""
        return "SASL_SSL" if self.auth else "SSL"

    @property
    def tls_bootstrap_servers(self) -> str:
        """The TLS client listeners (:attr:`tls_protocol`); only with ``tls``."""
        if not self.tls:
            raise ConfigError("this cluster was started without a TLS listener (tls=True)")
        return ",".join(host_port(self.advertise, n.tls_port) for n in self.nodes)

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the brokers' (a client's ``ca_file``)."""
        if self.ca is None:
            raise ConfigError("this cluster has no TLS listener, so no CA (tls=True)")
        return self.ca.cert_file

    @property
    def replication_factor(self) -> int:
        return min(3, self.n)

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.n >= 3 else 1

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings for a privileged client of this cluster."""
        conf = {"bootstrap.servers": self.bootstrap_servers}
        if self.auth:
            conf.update(client_auth(ADMIN_USER, self.users[ADMIN_USER]))
        return conf

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        client_listener = "SASL_PLAINTEXT" if self.auth else "PLAINTEXT"
        controller_protocol = "SASL_PLAINTEXT" if self.auth else "PLAINTEXT"
        listeners = [f"{client_listener}://{host_port(self.listen, node.port)}"]
        advertised = [f"{client_listener}://{host_port(self.advertise, node.port)}"]
        protocols = [f"CONTROLLER:{controller_protocol}", f"{client_listener}:{client_listener}"]
        if self.tls:
            tls = self.tls_protocol
            listeners.append(f"{tls}://{host_port(self.listen, node.tls_port)}")
            advertised.append(f"{tls}://{host_port(self.advertise, node.tls_port)}")
            protocols.append(f"{tls}:{tls}")
        lines: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{node.controller_port}"]),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client_listener,
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(Path(node.workdir) / "data"),
            "num.partitions": self.partitions,
            "default.replication.factor": self.replication_factor,
            "min.insync.replicas": self.min_insync_replicas,
            "offsets.topic.replication.factor": self.replication_factor,
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": self.replication_factor,
            "transaction.state.log.min.isr": self.min_insync_replicas,
            "share.coordinator.state.topic.replication.factor": self.replication_factor,
            "share.coordinator.state.topic.min.isr": self.min_insync_replicas,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "message.max.bytes": self.message_max_bytes,
            "replica.fetch.max.bytes": self.message_max_bytes,
            "socket.request.max.bytes": max(104857600, 2 * self.message_max_bytes),
            "log.retention.hours": 720,  # Rubin retains ~30 days
        }
        if self.auth:
            admin = self.users[ADMIN_USER]
            controller = self._controller_password
            scram_login = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN_USER}" password="{admin}";'
            )
            # Every SASL listener needs a login context per mechanism, even one that only
            # serves clients (the TLS one).
            sasl_listeners = ("sasl_plaintext", "sasl_ssl") if self.tls else ("sasl_plaintext",)
            for listener in sasl_listeners:
                for mechanism in self.scram:
                    key = f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"
                    lines[key] = scram_login
            lines.update(
                {
                    "sasl.enabled.mechanisms": ",".join(self.scram),
                    "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                    # The controller listener authenticates too (issue 14): as PLAINTEXT its
                    # peers were ANONYMOUS, a super user, so any local process could create ACLs
                    # through bootstrap.controllers. SCRAM cannot serve it (the credentials live
                    # in the metadata the quorum must first agree on), so it takes PLAIN with a
                    # single static account: the line both logs this node in to the quorum
                    # (username/password) and is the listener's whole user list (user_<name>).
                    "sasl.mechanism.controller.protocol": "PLAIN",
                    "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
                    "listener.name.controller.plain.sasl.jaas.config": (
                        "org.apache.kafka.common.security.plain.PlainLoginModule required "
                        f'username="{CONTROLLER_USER}" password="{controller}" '
                        f'user_{CONTROLLER_USER}="{controller}";'
                    ),
                    "authorizer.class.name": (
                        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
                    ),
                    "allow.everyone.if.no.acl.found": "false",
                    # The inter-broker account and the quorum's own account; nobody anonymous.
                    "super.users": f"User:{ADMIN_USER};User:{CONTROLLER_USER}",
                }
            )
        if self.tls:
            assert self._keystore is not None, "start() makes the keystore first"
            keystore, password = self._keystore
            lines.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(keystore),
                    "ssl.keystore.password": password,
                    "ssl.key.password": password,
                    "ssl.client.auth": "none",
                }
            )
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    # -- lifecycle ----------------------------------------------------------------------------

    def _java(
        self, lib: Path, node: Node, main: str, *args: str, daemon: bool = False
    ) -> list[str]:
        log_dir = Path(node.workdir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        (Path(node.workdir) / "log4j2.properties").write_text(LOG4J2)
        cmd = [
            _require("java"),
            f"-Xms{self.heap}" if daemon else "-Xms64m",
            f"-Xmx{self.heap}" if daemon else "-Xmx256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={log_dir}",
            f"-Dlog4j2.configurationFile={Path(node.workdir) / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]
        return cmd

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        lib = fetch_jars()
        _require("java")
        self.nodes = [
            Node(
                node_id=i + 1,
                port=free_port(self.listen),
                controller_port=free_port(),
                workdir=str(self.workdir / f"node-{i + 1}"),
                tls_port=free_port(self.listen) if self.tls else 0,
            )
            for i in range(self.n)
        ]
        if self.tls:
            if self.ca is None:
                self.ca = CertificateAuthority.create(self.workdir / "ca")
            hosts = [self.advertise, "127.0.0.1", "localhost"]
            self._keystore = self.ca.issue_keystore(self.workdir / "tls", hosts)
        for node in self.nodes:
            Path(node.workdir).mkdir(parents=True, exist_ok=True)
            props = Path(node.workdir) / "server.properties"
            # The admin's and the controller account's JAAS passwords: owner only.
            write_private(props, self._properties(node))
            # "--cluster-id=ID", not "-t ID": a base64 id may start with "-" and read as a flag.
            fmt = ["format", f"--cluster-id={self.cluster_id}", "-c", str(props)]
            if self.auth:
                admin = self.users[ADMIN_USER]
                fmt += ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN_USER},password={admin}]"]
            result = subprocess.run(
                self._java(lib, node, "kafka.tools.StorageTool", *fmt),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                raise KafkaLauncherError(
                    f"formatting node {node.node_id} failed:\n{result.stdout}{result.stderr}"
                )
        for node in self.nodes:
            self._launch(lib, node)
        self.wait_ready(timeout)
        if self.auth:
            self._provision_access()
        return self

    def _provision_access(self) -> None:
        """Rubin's access model: one writer of the alert topic; readers in their own groups.

        The producer account may write (and describe) the alert topic and nothing else. Each
        reader account may read the topic, and only in consumer groups whose names start with its
        own user name and a hyphen (a PREFIXED group ACL on ``<user>-``), so one broker cannot
        consume from, or reset the offsets of, another broker's group.
        """
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            AdminClient,
            NewTopic,
            ResourcePatternType,
            ResourceType,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient(self.admin_config())
        upserts = [
            UserScramCredentialUpsertion(
                user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
            )
            for user, password in self.users.items()
            if user != ADMIN_USER
        ]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(30)
        if "SCRAM-SHA-256" in self.scram:
            # The same passwords under the second mechanism: one request of its own (Kafka
            # refuses two changes to one user in a request).
            also = [
                UserScramCredentialUpsertion(
                    user,
                    ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192),
                    password.encode(),
                )
                for user, password in self.users.items()
            ]
            for future in admin.alter_user_scram_credentials(also).values():
                future.result(30)
        topic = NewTopic(
            self.alert_topic,
            num_partitions=max(self.partitions, 3),
            replication_factor=self.replication_factor,
        )
        admin.create_topics([topic])[self.alert_topic].result(30)

        def allow(principal: str, rtype, name: str, pattern, op) -> AclBinding:
            return AclBinding(
                rtype, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW
            )

        topic_t, group_t = ResourceType.TOPIC, ResourceType.GROUP
        literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
        acls = [
            allow(PRODUCER_USER, topic_t, self.alert_topic, literal, AclOperation.WRITE),
            allow(PRODUCER_USER, topic_t, self.alert_topic, literal, AclOperation.DESCRIBE),
        ]
        for reader in self.readers:
            acls += [
                allow(reader, topic_t, self.alert_topic, literal, AclOperation.READ),
                allow(reader, topic_t, self.alert_topic, literal, AclOperation.DESCRIBE),
                # "<reader>-": with the separator, "broker-a" gets no group of "broker-ab".
                allow(reader, group_t, f"{reader}-", prefixed, AclOperation.READ),
            ]
        for future in admin.create_acls(acls).values():
            future.result(30)
        # Wait until the credentials have reached every broker (metadata propagates).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conf = {"bootstrap.servers": self.bootstrap_servers}
            conf.update(client_auth(PRODUCER_USER, self.users[PRODUCER_USER]))
            if probe(self.bootstrap_servers, timeout=3, **conf) >= self.n:
                return
            time.sleep(0.5)
        raise KafkaLauncherError("SCRAM users were created but cannot log in")

    def _launch(self, lib: Path, node: Node) -> None:
        props = Path(node.workdir) / "server.properties"
        out = (Path(node.workdir) / "logs" / "stdout.log").open("ab")
        proc = subprocess.Popen(
            self._java(lib, node, "kafka.Kafka", str(props), daemon=True),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        node.pid = proc.pid
        self.procs[node.node_id] = proc

    def wait_ready(self, timeout: float = 120.0, brokers: int | None = None) -> None:
        """Block until ``brokers`` (default all) brokers are in the cluster metadata."""
        from confluent_kafka.admin import AdminClient

        want = self.n if brokers is None else brokers
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        # librdkafka logs every refused connection while the broker boots: keep that quiet.
        quiet = logging.getLogger("alertbench.kafka.startup")
        quiet.setLevel(logging.CRITICAL)
        admin = AdminClient({**self.admin_config(), "socket.timeout.ms": 2000, "logger": quiet})
        while time.monotonic() < deadline:
            for node_id, proc in self.procs.items():
                if proc.poll() is not None and node_id not in self._killed:
                    raise KafkaLauncherError(
                        f"Kafka node {node_id} exited with code {proc.returncode}; "
                        f"see {self.log_path(node_id)}:\n{self._tail(node_id)}"
                    )
            try:
                metadata = admin.list_topics(timeout=2)
                if len(metadata.brokers) >= want and metadata.controller_id >= 0:
                    return
                last_error = f"{len(metadata.brokers)} of {want} brokers up"
            except Exception as exc:  # not up yet
                last_error = str(exc)
            time.sleep(0.3)
        raise KafkaLauncherError(f"Kafka not ready after {timeout:.0f} s ({last_error})")

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Kill one node abruptly (fault tests)."""
        self._killed.add(node_id)
        proc = self.procs[node_id]
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def restart(self, node_id: int) -> None:
        node = next(n for n in self.nodes if n.node_id == node_id)
        self._killed.discard(node_id)
        self._launch(fetch_jars(), node)

    def log_path(self, node_id: int) -> Path:
        return self.workdir / f"node-{node_id}" / "logs" / "server.log"

    def _tail(self, node_id: int, lines: int = 30) -> str:
        text = ""
        for name in ("stdout.log", "server.log"):
            path = self.workdir / f"node-{node_id}" / "logs" / name
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self, grace: float = 30.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def detach(self) -> None:
        """Leave the nodes running after this process exits (``alertbench kafka start``)."""
        self.procs.clear()
        self._own_workdir = False

    def state(self) -> ClusterState:
        return ClusterState(
            bootstrap_servers=self.bootstrap_servers,
            nodes=self.nodes,
            workdir=str(self.workdir),
            auth=self.auth,
            users=dict(self.users),
        )

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_kafka(
    bootstrap_servers: str | None = None,
    *,
    announce: Callable[[str], object] | None = None,
    **cluster_options: object,
) -> Iterator[tuple[str, KafkaCluster | None]]:
    """``(bootstrap servers, cluster)`` for the duration of a command.

    With ``bootstrap_servers`` the given cluster is used and nothing is started (cluster is
    None); otherwise a local single-node cluster is started and stopped afterwards, whatever
    happens in between. Every command that "starts its own Kafka" goes through here.
    """
    if bootstrap_servers:
        yield bootstrap_servers, None
        return
    if announce is not None:
        announce("starting a local Kafka (KRaft, 1 broker)...")
    cluster = KafkaCluster(**cluster_options).start()  # type: ignore[arg-type]
    try:
        yield cluster.bootstrap_servers, cluster
    finally:
        cluster.stop()


def client_auth(user: str, password: str) -> dict[str, str]:
    """librdkafka settings to authenticate as ``user`` with SCRAM-SHA-512."""
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    }


def replace_scram_password(
    admin_config: dict[str, Any], user: str, password: str, *, timeout: float = 30.0
) -> None:
    """Make ``password`` the one SCRAM credential of ``user``, through an admin connection.

    The SCRAM-SHA-512 credential is replaced, then any other SCRAM mechanism the user holds
    (SCRAM-SHA-256, set by another tool) is deleted, so no earlier password logs in any more (one
    request each: Kafka refuses two changes to one user in a request). Connections already
    authenticated keep their session until they close.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(admin_config)
    try:
        held = admin.describe_user_scram_credentials([user])[user].result(timeout)
        mechanisms = {info.mechanism for info in held.scram_credential_infos}
    except KafkaException as exc:  # no credential yet: nothing else to delete
        if "RESOURCE_NOT_FOUND" not in str(exc).upper():
            raise
        mechanisms = set()
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
    )
    changes: list[Any] = [upsert]
    changes += [
        UserScramCredentialDeletion(user, mechanism)
        for mechanism in mechanisms
        if mechanism != ScramMechanism.SCRAM_SHA_512
    ]
    for change in changes:
        for future in admin.alter_user_scram_credentials([change]).values():
            future.result(timeout)


def stop_state(state: ClusterState, grace: float = 30.0) -> None:
    """Stop the nodes of a cluster started earlier by ``alertbench kafka start``."""
    for node in state.nodes:
        if pid_alive(node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for node in state.nodes:
        while pid_alive(node.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
    shutil.rmtree(state.workdir, ignore_errors=True)


def probe(bootstrap_servers: str, timeout: float = 5.0, **config: str) -> int:
    """How many brokers of an existing cluster answer a metadata request (0 if none)."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("alertbench.kafka.probe")
    quiet.setLevel(logging.CRITICAL)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": quiet, **config})
    try:
        return len(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return 0
