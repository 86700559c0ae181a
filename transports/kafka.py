"""Apache Kafka transport (confluent-kafka / librdkafka): the bulk transport Rubin chose.

URL: ``kafka://127.0.0.1:9092[,host:port...]/TOPIC?compression=lz4&linger_ms=5``; options may
also be passed as keyword arguments. A cluster that is not ours is reached with ``user`` and
``password`` (SASL), ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), ``ca_file`` (PEM
CA certificates for TLS) and ``security_protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL;
left out, it follows from the others: a user alone is SASL_PLAINTEXT with SCRAM-SHA-512, as
before, a user and a CA file SASL_SSL, a CA file alone SSL). Any other librdkafka setting goes
through the one declared passthrough, ``config`` (a dict, or ``config=key=value,key=value`` in
the URL), applied last to every client (admin, producer, consumer); an option that is neither
declared nor in ``config`` is refused (``linger=50`` is not ``linger_ms``).

Publisher: idempotent, ``acks=all`` (with the cluster's min.insync.replicas, an acknowledged
alert is on at least two brokers of a 3-broker cluster), configurable compression and batching.
The key is the alert id; headers carry the content type, the alert id and the shutter-close,
intended-send and send timestamps, so consumers never guess the format and the harness can
measure latency on one clock. The payload is whatever bytes the codec produced: for Avro, Rubin's
Confluent framing, so Rubin's own consumers can read the topic.

Subscriber: consumer groups; start from the group's committed position (``latest``), from the
beginning (``earliest``), from an offset, or from a time ("the last N hours"); at-least-once
(an offset is stored only when the caller asks for the next message) with de-duplication by
alert id on the consumer side, duplicates counted.

A slow subscriber costs the publisher nothing: the brokers keep the topic on disk (its
retention) and the subscriber catches up from its position ("buffer (broker)").
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from alertbench.transports.base import (
    MAX_FRAME,
    BaseTransport,
    CannotCountSubscribers,
    Capabilities,
    Envelope,
    LocalStream,
    Option,
    Received,
    Start,
    TransportError,
    resolve_options,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from alertbench.errors import ConfigError

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL = 10.0
"""Seconds between two log lines for the same Kafka client error."""
COMPRESSION = ("none", "lz4", "zstd", "snappy", "gzip")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"
"""What a user without a ``sasl_mechanism`` logs in with: what Rubin runs, and what this
transport always used before the mechanism could be chosen."""
HEADER_CONTENT_TYPE = "content-type"
HEADER_ALERT_ID = "alert-id"
HEADER_T_SHUTTER = "t-shutter-ns"
HEADER_T_INTENDED = "t-intended-ns"
HEADER_T_SENT = "t-sent-ns"
HEADER_SEQUENCE = "sequence"
ACCESS_ERRORS = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
"""Errors that retrying cannot fix: raised to the caller as TransportError, not logged and lost."""


class _Throttle:
    """At most one log line per key every ERROR_LOG_INTERVAL; the repeats in between are
    counted and reported with the next line. A dead broker is retried many times a second,
    and one line per retry buries what the run has to say."""

    def __init__(self) -> None:
        self._last: dict[Any, tuple[float, int]] = {}

    def suffix(self, key: Any) -> str | None:
        """None: stay quiet; else what to append to the line (the count of repeats)."""
        now = time.monotonic()
        last, quiet = self._last.get(key, (-ERROR_LOG_INTERVAL, 0))
        if now - last < ERROR_LOG_INTERVAL:
            self._last[key] = (last, quiet + 1)
            return None
        self._last[key] = (now, 0)
        return f" ({quiet} more like it since)" if quiet else ""


class _LibrdkafkaLog:
    """Forwards librdkafka's log lines to Python logging and keeps the fatal ones.

    confluent-kafka can lose the exception of a fatal error inside ``flush()`` (a SystemError),
    but librdkafka always logs it: this keeps the reason so the caller still gets it.
    """

    def __init__(self) -> None:
        self.fatal: list[str] = []
        self._throttle = _Throttle()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        message = fmt % args if args else fmt
        if "FATAL" in message or "Fatal error" in message:
            self.fatal.append(message)
        # librdkafka's levels are syslog's (3 error, 4 warning, 6 info, 7 debug).
        python_level = (
            logging.ERROR if level <= 3 else logging.WARNING if level == 4 else
            logging.INFO if level <= 6 else logging.DEBUG
        )  # fmt: skip
        facility = message.split(" ", 1)[0]  # FAIL, CONFWARN, ...: a reconnect loop repeats one
        again = self._throttle.suffix(facility)
        if again is not None:
            log.log(python_level, "%s%s", message, again)


class KafkaTransport(BaseTransport):
    """A Kafka topic as an alert stream."""

    capabilities = Capabilities(
        replay=True,
        durable=True,
        fanout=True,
        backpressure=True,
        acknowledgement="batched",
        slow_subscriber="buffer (broker)",
        options={
            "compression": Option(
                "lz4", "producer compression codec", "choice", choices=COMPRESSION
            ),
            "linger_ms": Option(5, "producer linger.ms: wait to fill a batch", "int", minimum=0),
            "batch_size": Option(1_000_000, "producer batch.size, bytes", "int", minimum=1),
            "user": Option(None, "SASL user name (none: no authentication)"),
            "password": Option(None, "SASL password", secret=True),
            "sasl_mechanism": Option(
                None,
                f"SASL mechanism (default {DEFAULT_SASL_MECHANISM} when a user is given)",
                "choice",
                choices=SASL_MECHANISMS,
            ),
            "security_protocol": Option(
                None,
                "security.protocol (default: SASL_PLAINTEXT with a user, SASL_SSL with a user "
                "and a CA file, SSL with a CA file alone, else PLAINTEXT)",
                "choice",
                choices=SECURITY_PROTOCOLS,
            ),
            "ca_file": Option(None, "CA certificate(s), PEM, that signed the brokers' (TLS)"),
            "config": Option(
                {}, "further librdkafka settings, applied last to every client", "mapping"
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"kafka": {}}
    several_publishers: ClassVar[bool] = True
    """Several publisher processes may produce to one topic at once (each an idempotent
    producer of its own), as Rubin's per-CCD workers do; the engine runs them for a run's
    ``publishers``."""
    local_tools = ("java", "mvn")
    url_example = "kafka://127.0.0.1:9092/alerts"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        if not self.path:
            raise ConfigError(
                f"Kafka URL {self.shown_url!r} names no topic (kafka://host:port/TOPIC)"
            )
        self.topic = self.path
        self.bootstrap_servers = self.netloc
        self.compression: str = self.options["compression"]
        self.linger_ms: int = self.options["linger_ms"]
        self.batch_size: int = self.options["batch_size"]
        self.user: str | None = self.options["user"]
        self.password: str | None = self.options["password"]
        self.config: dict[str, Any] = self.options["config"]
        self.security = security_config(self.options, self.shown_url)
        """The settings that reach the cluster (protocol, SASL, CA), checked once here."""
        self.client_errors: list[KafkaError] = []
        self.librdkafka_log = _LibrdkafkaLog()
        self._errors_logged = _Throttle()
        self.reached = False
        """Whether a client of this transport has talked to the cluster (a delivery, a
        partition assignment): after that, every broker being down is an outage to ride out,
        not a wrong address or missing credentials."""
        self._outage_logged = False

    def _on_error(self, error: KafkaError) -> None:
        """Kept (raise_access_error reads them) and logged, throttled per error code."""
        self.client_errors.append(error)
        del self.client_errors[:-100]
        again = self._errors_logged.suffix(error.code())
        if again is not None:
            log.warning("Kafka client error: %s%s", error, again)

    def raise_access_error(self) -> None:
        """Raise TransportError if the cluster refused our credentials or permissions."""
        for error in self.client_errors:
            if error.code() in ACCESS_ERRORS or (
                error.fatal() and "authoriz" in error.str().lower()
            ):
                who = f"user {self.user!r}" if self.user else "a client without credentials"
                raise TransportError(f"Kafka refused {who}: {error.str()}")
            if error.code() == KafkaError._SSL and not self.reached:
                # A certificate that does not verify never will: librdkafka would only retry
                # the handshake until the caller's timeout and then report "all brokers down".
                raise TransportError(
                    f"TLS with the Kafka brokers at {self.bootstrap_servers} failed (is the CA "
                    "file the one that signed the brokers' certificates, and is the address in "
                    f"them?): {error.str()}"
                )
        if self.client_errors and all(
            e.code() == KafkaError._ALL_BROKERS_DOWN for e in self.client_errors[-3:]
        ):
            if self.reached:
                # The cluster answered before: librdkafka keeps reconnecting, and the caller's
                # flush() or idle timeout says what was not delivered meanwhile.
                if not self._outage_logged:
                    log.warning(
                        "every Kafka broker at %s is down; retrying", self.bootstrap_servers
                    )
                    self._outage_logged = True
                return
            tls = self.security.get("security.protocol", "") in ("SSL", "SASL_SSL")
            hint = "is it running?" + (
                ""
                if self.user
                else " does the cluster require SASL credentials"
                + ("?" if tls else " or TLS (a CA file)?")
            )
            raise TransportError(
                f"no Kafka broker at {self.bootstrap_servers} answers ({hint}): "
                f"{self.client_errors[-1].str()}"
            )

    def client_config(self) -> dict[str, Any]:
        """What every client of this transport shares (admin, producer, consumer, and the
        harness's own admin clients): the address, the security settings and, last, the
        ``config`` passthrough, so an admin client reaches the cluster exactly as the
        producer does."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": self.librdkafka_log,
            "error_cb": self._on_error,
        }
        conf.update(self.security)
        conf.update(self.config)
        return conf

    def prepare(self, partitions: int = 1) -> None:
        """Create the topic (Kafka's auto-creation is off in the clusters we start)."""
        self.ensure_topic(partitions=partitions)

    def ensure_topic(
        self, partitions: int = 1, replication_factor: int = 1, timeout: float = 30.0
    ) -> None:
        """Create the topic if it does not exist (what an operator does once)."""
        admin = AdminClient(self.client_config())
        deadline = time.monotonic() + timeout
        while True:
            try:
                topics = admin.list_topics(timeout=min(2.0, timeout)).topics
                break
            except KafkaException as exc:
                # Refused credentials and failed TLS handshakes reach the error callback (served
                # by poll): raised at once as what they are, not after ``timeout`` as a
                # "transport failure".
                admin.poll(0)
                self.raise_access_error()
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"cannot list the topics of the Kafka cluster at "
                        f"{self.bootstrap_servers}: {exc.args[0].str()}"
                    ) from None
        if self.topic in topics:
            return
        futures = admin.create_topics(
            [
                NewTopic(
                    self.topic,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config={"max.message.bytes": str(MAX_FRAME)},
                )
            ],
            operation_timeout=timeout,
        )
        try:
            futures[self.topic].result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TransportError(f"cannot create topic {self.topic!r}: {exc}") from exc

    def open_publisher(self, *, config: Mapping[str, Any] | None = None) -> KafkaPublisher:
        """``config``: librdkafka settings for this producer only, over the transport's."""
        return KafkaPublisher(self, config=config)

    def open_subscriber(
        self,
        start: Start | None = None,
        *,
        group: str | None = None,
        dedupe: bool = True,
        dedupe_window: int = 1_000_000,
        assign_timeout: float = 20.0,
        config: Mapping[str, Any] | None = None,
        commit: str = "auto",
    ) -> KafkaSubscriber:
        """``config``: librdkafka settings for this consumer only, over the transport's.
        ``commit``: ``auto`` stores each record's offset once the next poll() begins (it was
        handed over) and commits in the background; ``manual`` commits only in
        :meth:`KafkaSubscriber.commit`, for a caller that delivers onwards in batches."""
        start = start or Start.latest()
        if start.kind == "after":
            _positions(start.position)  # a foreign position is refused here
        return KafkaSubscriber(
            self,
            start,
            group=group,
            dedupe=dedupe,
            dedupe_window=dedupe_window,
            assign_timeout=assign_timeout,
            config=config,
            commit=commit,
        )

    @classmethod
    @contextmanager
    def shared_resources(cls) -> Iterator[Any]:
        """One local single-node cluster (KRaft) for many streams, each its own topic."""
        from alertbench.transports.servers.kafka_cluster import KafkaCluster

        with KafkaCluster(brokers=1) as cluster:
            yield cluster

    @classmethod
    @contextmanager
    def local_stream(
        cls,
        variant: str,
        *,
        shared: Any = None,
        tight: bool = False,
        cluster: Any = None,
        bootstrap_servers: str | None = None,
        partitions: int = 1,
        transport_options: Mapping[str, Any] | None = None,
    ) -> Iterator[LocalStream]:
        """A fresh topic (created) on ``bootstrap_servers``, on ``cluster``/``shared`` (a
        KafkaCluster), or else on a single-node cluster started here and stopped on exit.
        ``transport_options`` (credentials, TLS: what the run's transport is given too) are
        how the topic is created on a cluster that is not ours; they stay out of the URL, so
        no password is in it. ``tight`` changes nothing: the brokers buffer a slow subscriber
        on disk."""
        cluster = cluster or shared
        if bootstrap_servers is None and cluster is None:
            with (
                cls.shared_resources() as own,
                cls.local_stream(
                    variant,
                    cluster=own,
                    partitions=partitions,
                    transport_options=transport_options,
                ) as stream,
            ):
                yield stream
            return
        bootstrap = bootstrap_servers or cluster.bootstrap_servers
        url = f"kafka://{bootstrap}/{variant}-{uuid.uuid4().hex[:8]}"
        cls(url, **(transport_options or {})).prepare(partitions=partitions)
        restart = None
        if cluster is not None and bootstrap_servers is None:

            def restart() -> None:
                for node in list(cluster.nodes):
                    cluster.kill(node.node_id, signal.SIGKILL)
                for node in list(cluster.nodes):
                    cluster.restart(node.node_id)
                cluster.wait_ready()

        ports = [int(h.rpartition(":")[2]) for h in bootstrap.split(",")]
        yield LocalStream(
            variant,
            url,
            server_pids=[n.pid for n in cluster.nodes] if cluster is not None else [],
            server=cluster,
            ports=ports,
            restart=restart,
        )


def security_config(options: Mapping[str, Any], where: str = "Kafka") -> dict[str, str]:
    """librdkafka's security settings for the declared options ``user``, ``password``,
    ``security_protocol``, ``sasl_mechanism`` and ``ca_file``; ConfigError for a combination
    that cannot be meant (a user on a protocol without SASL, a CA file without TLS), so a
    mistake is reported before any connection rather than as a timeout.

    Without ``security_protocol`` the protocol follows from what is given, and a user alone
    stays SASL_PLAINTEXT with SCRAM-SHA-512, what this transport always did."""
    user: str | None = options.get("user")
    password: str | None = options.get("password")
    protocol: str | None = options.get("security_protocol")
    mechanism: str | None = options.get("sasl_mechanism")
    ca_file: str | None = options.get("ca_file")
    if protocol is None:
        if user:
            protocol = "SASL_SSL" if ca_file else "SASL_PLAINTEXT"
        elif ca_file:
            protocol = "SSL"
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    tls = protocol in ("SSL", "SASL_SSL")
    if sasl and not user:
        raise ConfigError(f"{where}: security protocol {protocol} needs a user name (SASL)")
    if user and not sasl:
        raise ConfigError(
            f"{where}: a user name is for SASL, and security protocol {protocol} has none "
            "(SASL_PLAINTEXT or SASL_SSL)"
        )
    if mechanism and not sasl:
        raise ConfigError(
            f"{where}: SASL mechanism {mechanism} given, but security protocol {protocol} has "
            "no SASL"
        )
    if ca_file and not tls:
        raise ConfigError(
            f"{where}: a CA file is for TLS, and security protocol {protocol} has none "
            "(SSL or SASL_SSL)"
        )
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{where}: CA file {ca_file}: no such file")
    conf: dict[str, str] = {}
    if protocol:
        conf["security.protocol"] = protocol
    if sasl:
        conf["sasl.mechanisms"] = mechanism or DEFAULT_SASL_MECHANISM
        conf["sasl.username"] = user or ""
        conf["sasl.password"] = password or ""
    if ca_file:
        conf["ssl.ca.location"] = str(ca_file)
    return conf


def client_settings(**options: Any) -> dict[str, Any]:
    """The librdkafka settings (no address, no callbacks) that these transport options give,
    security first and the ``config`` passthrough last: for a client that serves no one topic
    (``alertbench kafka status``), so it reaches a cluster exactly as a transport would."""
    values = resolve_options(
        KafkaTransport.capabilities.options, {}, options, "the Kafka client options"
    )
    return {**security_config(values), **values["config"]}


def _positions(position: Any) -> dict[int, int]:
    """partition -> last offset seen, from ``(partition, offset)`` or a mapping of them."""
    items = position.items() if isinstance(position, Mapping) else [position]
    try:
        found = {int(p): int(o) for p, o in items}
    except (TypeError, ValueError):
        raise ConfigError(
            f"a Kafka position is (partition, offset) or {{partition: offset}}, not {position!r}"
        ) from None
    return found


class KafkaPublisher(CannotCountSubscribers):
    """Idempotent producer; keeps the ids of acknowledged and failed alerts."""

    def __init__(
        self, transport: KafkaTransport, *, config: Mapping[str, Any] | None = None
    ) -> None:
        self.transport = transport
        conf = transport.client_config()
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": transport.compression,
                "linger.ms": transport.linger_ms,
                "batch.size": transport.batch_size,
                "message.max.bytes": MAX_FRAME,
                "queue.buffering.max.kbytes": 512 * 1024,
            }
        )
        conf.update(transport.config)
        conf.update(config or {})
        self._producer = Producer(conf)
        self.acked: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.published = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        alert_id = int(msg.key() or b"-1")
        if err is None:
            self.transport.reached = True
            self.acked.append(alert_id)
        else:
            self.failed.append((alert_id, str(err)))

    def publish(self, envelope: Envelope) -> None:
        t_sent = envelope.t_sent_ns or time.time_ns()
        headers = [
            (HEADER_CONTENT_TYPE, envelope.content_type.encode()),
            (HEADER_ALERT_ID, str(envelope.alert_id).encode()),
            (HEADER_T_SHUTTER, str(envelope.t_shutter_ns).encode()),
            (HEADER_T_INTENDED, str(envelope.t_intended_ns).encode()),
            (HEADER_T_SENT, str(t_sent).encode()),
            (HEADER_SEQUENCE, str(envelope.sequence).encode()),
        ]
        while True:
            try:
                self._producer.produce(
                    self.transport.topic,
                    value=envelope.payload,
                    key=str(envelope.alert_id).encode(),
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # local queue full: this is Kafka's backpressure, wait for acks
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise TransportError(f"Kafka refused alert {envelope.alert_id}: {exc}") from exc
        self.transport.raise_access_error()
        self.published += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for acknowledgements; how many published alerts are not acknowledged (still
        queued, or failed for any reason: the reasons are in ``failed``). Raises TransportError
        if access was refused or the topic does not exist."""
        deadline = time.monotonic() + timeout
        left = len(self._producer)
        while left and time.monotonic() < deadline:
            try:
                left = self._producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
            except (KafkaException, KafkaError) as exc:  # fatal producer errors surface here
                error = exc.args[0] if isinstance(exc, KafkaException) else exc
                raise TransportError(f"Kafka producer failed: {error.str()}") from None
            except SystemError:
                # confluent-kafka sometimes loses the exception of a fatal error in flush();
                # the error callback records it, possibly a moment later.
                self.transport.raise_access_error()
                fatal = self.transport.librdkafka_log.fatal
                reason = fatal[-1] if fatal else "no reason given"
                raise TransportError(f"Kafka producer failed: {reason}") from None
            self.transport.raise_access_error()
        for alert_id, reason in self.failed:
            if "authorization" in reason.lower():
                raise TransportError(f"Kafka refused alert {alert_id}: {reason}")
        missing = [a for a, reason in self.failed if "UNKNOWN_TOPIC" in reason.upper()]
        if self.failed and not missing and self._topic_is_missing():
            missing = [a for a, _ in self.failed]  # they timed out waiting for the topic
        if missing:
            raise TransportError(
                f"topic {self.transport.topic!r} does not exist on "
                f"{self.transport.bootstrap_servers} and the cluster does not create topics: "
                f"{len(missing):,} alert(s) not delivered (create it first: "
                "transport.prepare(partitions))"
            )
        # A failed delivery is not an acknowledged one, whatever the reason: counting only what
        # is still queued once reported "all delivered" for a visit that was lost.
        return int(left) + len(self.failed)

    def _topic_is_missing(self) -> bool:
        """Whether the broker says the topic does not exist (asked once deliveries failed:
        librdkafka reports only "message timed out" for a topic that never appears)."""
        try:
            found = self._producer.list_topics(self.transport.topic, timeout=5)
        except (KafkaException, RuntimeError):
            return False
        topic = found.topics.get(self.transport.topic)
        error = topic.error if topic is not None else None
        return topic is None or (
            error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        )

    def acknowledged_ids(self) -> list[int]:
        """The ids of the alerts the cluster acknowledged (acks=all), for per-alert accounting."""
        return list(self.acked)

    def counters(self) -> dict[str, int]:
        return {
            "published": self.published,
            "acknowledged": len(self.acked),
            "failed": len(self.failed),
        }

    def close(self) -> None:
        self.flush(10.0)


def _header(headers: dict[str, bytes | None], name: str, default: int = 0) -> int | None:
    """An integer header: ``default`` when it is absent, None when it is there but is not an
    integer (null, garbled, out of range). Total: a record's headers come from whoever could
    write to the topic, and must never raise in the subscriber (a TypeError here once stopped
    the mini-broker after its offsets were committed past an undelivered alert)."""
    if name not in headers:
        return default
    raw = headers[name]
    try:
        value = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if -(2**63) <= value < 2**63 else None


class KafkaSubscriber:
    """Consumer-group subscriber with replay, at-least-once delivery and de-duplication."""

    def __init__(
        self,
        transport: KafkaTransport,
        start: Start,
        *,
        group: str | None = None,
        dedupe: bool = True,
        dedupe_window: int = 1_000_000,
        assign_timeout: float = 20.0,
        config: Mapping[str, Any] | None = None,
        commit: str = "auto",
    ) -> None:
        if commit not in ("auto", "manual"):
            raise ConfigError(f"commit must be 'auto' or 'manual', not {commit!r}")
        self.transport = transport
        self.start = start
        self.group = group or f"alertbench-{uuid.uuid4().hex[:12]}"
        self.manual = commit == "manual"
        self._returned: dict[int, int] = {}
        """partition -> offset of the last record poll() returned (manual commits)."""
        self._next: dict[int, int] = {}
        """partition -> the offset after the last record poll() returned: where this
        subscriber resumes a partition the group gives back to it after a rebalance."""
        self._started: dict[int, int] = {}
        """partition -> the offset this subscriber's start resolved to at its first assignment
        of that partition (concrete, or Kafka's logical beginning)."""
        self._had_commit: dict[int, bool] = {}
        """partition -> the group had a committed position when this subscriber started."""
        conf = transport.client_config()
        conf.update(
            {
                "group.id": self.group,
                "auto.offset.reset": "earliest" if start.kind == "earliest" else "latest",
                "enable.auto.commit": not self.manual,
                "enable.auto.offset.store": False,
                "fetch.message.max.bytes": MAX_FRAME,
                "max.partition.fetch.bytes": MAX_FRAME,
                "session.timeout.ms": 10_000,
            }
        )
        conf.update(transport.config)
        conf.update(config or {})
        self._consumer = Consumer(conf)
        self._assigned = False
        self._early: list[Any] = []
        self._consumer.subscribe(
            [transport.topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._pending: Any = None
        # Return only once the group has given us partitions, so that "latest" means "what is
        # published after open_subscriber() returns" (messages polled meanwhile are kept).
        deadline = time.monotonic() + assign_timeout
        while not self._assigned and time.monotonic() < deadline:
            msg = self._consumer.poll(0.1)
            if msg is not None:
                self._raise_if_refused(msg)
                self._early.append(msg)
            transport.raise_access_error()
        self.dedupe = dedupe
        # Keyed by where a record is in the log, never by its alert-id header: anyone who can
        # write to the topic can forge a header, and a forged copy of a real alert's id made
        # the real alert be dropped as a duplicate. A redelivered record (a rebalance, a seek
        # back) has the same partition and offset.
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._window = dedupe_window
        self.duplicates = 0
        self.bad_headers = 0
        self.received = 0
        self.errors: list[str] = []

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Positions the partitions the group gives us. The start applies to a partition the
        first time this subscriber is given it; after a rebalance (a member joins or leaves,
        the group's coordinator dies and the session expires) a partition resumes where
        this subscriber left it, or where the group committed, whichever is further. Before,
        every rebalance applied the start again: a ``latest`` subscriber whose group had not
        committed yet jumped to the end, past every acknowledged alert published since (CI
        lost 1,042 of 1,500 when a broker kill moved the group's coordinator)."""
        again = [p for p in partitions if p.partition in self._started]
        first = [p for p in partitions if p.partition not in self._started]
        if again:
            committed = self._committed(consumer, again)
            for p in again:
                known = [
                    offset
                    for offset in (
                        committed.get(p.partition, -1),
                        self._next.get(p.partition, -1),
                        self._started[p.partition],
                    )
                    if offset >= 0
                ]
                # Nothing concrete: the start was the logical beginning and nothing was read.
                p.offset = max(known) if known else self._started[p.partition]
        if first:
            self._position_first(consumer, first)
        consumer.assign(partitions)
        if first and self.start.kind == "latest":
            # The group itself records where it started, so that a member given one of
            # these partitions later (this one after a restart, or another in the same
            # group) resumes here instead of at a later end of the partition.
            unrecorded = [
                p for p in first if p.offset >= 0 and not self._had_commit.get(p.partition)
            ]
            if unrecorded:
                try:
                    consumer.commit(offsets=unrecorded, asynchronous=False)
                except KafkaException as exc:
                    log.warning(
                        "Kafka subscriber (group %s): could not record its start: %s",
                        self.group,
                        exc.args[0].str(),
                    )
        self._assigned = True
        self.transport.reached = True

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        """Commits what was read of the partitions being taken away (``commit="auto"``), so
        the member given them next resumes after it rather than at the last periodic commit.
        With ``"manual"`` only the caller's commits count, by design."""
        if self.manual or not partitions:
            return
        if self._pending is not None:
            with contextlib.suppress(KafkaException):
                consumer.store_offsets(message=self._pending)
            self._pending = None
        mine = [
            KafkaTopicPartition(self.transport.topic, p.partition, self._next[p.partition])
            for p in partitions
            if p.partition in self._next
        ]
        if mine:
            try:
                consumer.commit(offsets=mine, asynchronous=False)
            except KafkaException as exc:
                log.warning(
                    "Kafka subscriber (group %s): commit on revoke failed: %s",
                    self.group,
                    exc.args[0].str(),
                )

    def _committed(
        self, consumer: Consumer, partitions: list[KafkaTopicPartition]
    ) -> dict[int, int]:
        """The group's committed offsets; empty when the coordinator cannot say (it may be
        the broker that just died): this subscriber's own positions still hold."""
        try:
            found = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            log.warning(
                "Kafka subscriber (group %s): committed offsets unavailable: %s",
                self.group,
                exc.args[0].str(),
            )
            return {}
        return {c.partition: c.offset for c in found}

    def _position_first(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        kind = self.start.kind
        if kind == "latest":
            # The group's committed position, else the end of the partition *now* (resolved
            # here, not lazily at the first fetch, so nothing published after this is skipped).
            committed = self._committed(consumer, partitions)
            for p in partitions:
                if committed.get(p.partition, -1) >= 0:
                    p.offset = committed[p.partition]
                    self._had_commit[p.partition] = True
                else:
                    p.offset = consumer.get_watermark_offsets(p, timeout=10)[1]
        elif kind == "earliest":
            for p in partitions:
                p.offset = OFFSET_BEGINNING
        elif kind == "offset":
            for p in partitions:
                p.offset = self.start.value
        elif kind == "after":
            # Right after the last offset seen in each partition named; a partition not named
            # starts from its beginning (nothing of it is known to have been read).
            seen = _positions(self.start.position)
            for p in partitions:
                p.offset = seen[p.partition] + 1 if p.partition in seen else OFFSET_BEGINNING
        elif kind == "time":
            wanted = [
                KafkaTopicPartition(p.topic, p.partition, self.start.value // 1_000_000)
                for p in partitions
            ]
            found = consumer.offsets_for_times(wanted, timeout=10)
            by_partition = {f.partition: f.offset for f in found}
            for p in partitions:
                offset = by_partition.get(p.partition, -1)
                if offset < 0:  # no message at or after that time: start at the end
                    offset = consumer.get_watermark_offsets(p, timeout=10)[1]
                p.offset = offset
        for p in partitions:
            self._started[p.partition] = p.offset

    def poll(self, timeout: float = 1.0) -> Received | None:
        deadline = time.monotonic() + timeout
        looked = False
        while True:
            if self._pending is not None and not self.manual:
                self._consumer.store_offsets(message=self._pending)
                self._pending = None
            remaining = deadline - time.monotonic()
            if remaining <= 0 and looked:  # poll(0) still looks once
                return None
            looked = True
            if self._early:
                msg = self._early.pop(0)
            else:
                msg = self._consumer.poll(max(0.0, min(remaining, 0.5)))
                self.transport.raise_access_error()
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                self._raise_if_refused(msg)
                self.errors.append(str(msg.error()))
                log.warning("Kafka consumer error on %s: %s", self.transport.topic, msg.error())
                continue
            self._pending = msg
            received = self._to_received(msg)
            where = (msg.partition(), msg.offset())
            if self.dedupe:
                if where in self._seen:
                    self.duplicates += 1
                    continue
                self._seen[where] = None
                if len(self._seen) > self._window:
                    self._seen.popitem(last=False)
            self.received += 1
            self._returned[msg.partition()] = msg.offset()
            self._next[msg.partition()] = msg.offset() + 1
            return received

    def commit(self) -> int:
        """Commit, synchronously, the group's position after every record poll() returned
        (``commit="manual"``): a caller that commits only once what it read is safely
        delivered onwards gets at-least-once end to end, and resumes there after a crash.
        Returns how many partitions were committed; TransportError if Kafka refused."""
        if not self._returned:
            return 0
        offsets = [
            KafkaTopicPartition(self.transport.topic, partition, offset + 1)
            for partition, offset in sorted(self._returned.items())
        ]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise TransportError(
                f"Kafka refused the commit of group {self.group!r}: {exc.args[0].str()}"
            ) from None
        self._returned.clear()
        return len(offsets)

    def _raise_if_refused(self, msg: Any) -> None:
        error = msg.error()
        if error is not None and error.code() in ACCESS_ERRORS:
            with contextlib.suppress(RuntimeError):
                self._consumer.close()
            raise TransportError(
                f"Kafka refused subscriber (group {self.group!r}) on "
                f"{self.transport.topic!r}: {error.str()}"
            )

    def _to_received(self, msg: Any) -> Received:
        now = time.time_ns()
        headers = {k: v for k, v in (msg.headers() or [])}
        key_id = -1
        with contextlib.suppress(ValueError):
            key_id = int(msg.key() or b"-1")
        numbers = {
            name: _header(headers, name, default)
            for name, default in (
                (HEADER_ALERT_ID, key_id),
                (HEADER_T_SHUTTER, 0),
                (HEADER_T_INTENDED, 0),
                (HEADER_T_SENT, 0),
                (HEADER_SEQUENCE, 0),
            )
        }
        bad = sorted(name for name, value in numbers.items() if value is None)
        if bad:
            # Counted and kept with where it came from; the payload is still delivered (the
            # headers are metadata; the alert is in the bytes), with the key's id.
            self.bad_headers += 1
            self.errors.append(
                f"{msg.topic()}/{msg.partition()}@{msg.offset()}: unreadable header(s) "
                + ", ".join(bad)
            )
            log.warning("kafka subscriber: %s", self.errors[-1])
        envelope = Envelope(
            payload=msg.value() or b"",
            content_type=(headers.get(HEADER_CONTENT_TYPE) or b"").decode("utf-8", "replace"),
            alert_id=numbers[HEADER_ALERT_ID] if numbers[HEADER_ALERT_ID] is not None else key_id,
            t_shutter_ns=numbers[HEADER_T_SHUTTER] or 0,
            t_intended_ns=numbers[HEADER_T_INTENDED] or 0,
            t_sent_ns=numbers[HEADER_T_SENT] or 0,
            sequence=numbers[HEADER_SEQUENCE] or 0,
        )
        return Received(
            envelope=envelope,
            t_received_ns=now,
            origin=f"{msg.topic()}/{msg.partition()}@{msg.offset()}",
            position=(msg.partition(), msg.offset()),
        )

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "errors": len(self.errors),
            "bad_headers": self.bad_headers,
        }

    def close(self) -> None:
        """Closes the consumer; with ``commit="auto"`` what was read is committed, with
        ``"manual"`` only what :meth:`commit` committed counts as read."""
        if self._pending is not None and not self.manual:
            self._consumer.store_offsets(message=self._pending)
        self._pending = None
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()
