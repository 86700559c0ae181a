"""The mini-broker's I/O: its input from a transport, and where a user's matches go (VOEvent 2.0
over VTP, and an Avro Kafka topic of their own). These implement the ports the core declares in
:mod:`alertbench.refimpl.minibroker.ports`; the core itself does no I/O.

Both outputs are non-blocking towards the mini-broker: a Kafka producer queues locally (and the
mini-broker counts, rather than waits on, a full queue), and a VTP subscriber that falls behind is
dropped rather than allowed to slow the stream. Each output keeps counts of what it delivered.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.refimpl.minibroker.ports import AlertInput, UserOutput
from alertbench.transports.base import MAX_FRAME, Subscriber
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import ADMIN_USER, PRODUCER_USER
from alertbench.transports.vtp import VtpBroker
from confluent_kafka import KafkaError, KafkaException, Producer

from alertbench.errors import ConfigError

log = logging.getLogger(__name__)
RESERVED_PRINCIPALS = frozenset(
    {ADMIN_USER, PRODUCER_USER, "anonymous", "controller", "broker", "kafka", "minibroker"}
)
"""Kafka principals no mini-broker user may be named after (compared lower-case): the
launcher's accounts, the service's own, and names an operator would recognise as the system."""

__all__ = [
    "AlertInput",
    "KafkaUserTopics",
    "SubscriberInput",
    "UserOutput",
    "VtpUserStreams",
    "user_topic",
]

HEADER_FILTERS = "alertbench-filters"
TOPIC_PREFIX = "minibroker."


@dataclass(frozen=True, slots=True)
class _Inbound:
    payload: bytes
    origin: str
    position: object


class SubscriberInput:
    """A transport subscriber as the mini-broker's :class:`AlertInput` port.

    The core reads ``payload``/``origin``/``position`` and knows nothing of envelopes; this
    adapter is the one place that maps a transport's ``Received`` onto that.
    """

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def poll(self, timeout: float = 1.0) -> _Inbound | None:
        received = self.subscriber.poll(timeout)
        if received is None:
            return None
        return _Inbound(received.envelope.payload, received.origin, received.position)


def user_topic(user: str) -> str:
    return f"{TOPIC_PREFIX}{user}"


class KafkaUserTopics:
    """One topic per user (``minibroker.<user>``) carrying the alert's original Avro bytes."""

    name = "kafka"

    def __init__(self, bootstrap_url: str, **auth: Any) -> None:
        """``bootstrap_url`` is ``kafka://host:port`` (any topic part is ignored)."""
        base = bootstrap_url.split("://", 1)[-1].split("/", 1)[0]
        self.bootstrap = base
        self._transport_auth = auth
        probe = KafkaTransport(f"kafka://{base}/{TOPIC_PREFIX}probe", **auth)
        conf = probe.client_config()
        self._admin_config = {k: v for k, v in conf.items() if k not in ("logger", "error_cb")}
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": "lz4",
                "linger.ms": 5,
                "message.max.bytes": MAX_FRAME,
            }
        )
        self._producer = Producer(conf)
        self._topics: set[str] = set()
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.queue_full: Counter[str] = Counter()

    def ensure_user(self, user: str) -> str:
        topic = user_topic(user)
        if topic not in self._topics:
            KafkaTransport(
                f"kafka://{self.bootstrap}/{topic}", **self._transport_auth
            ).ensure_topic()
            self._topics.add(topic)
        return topic

    def grant(self, user: str, token: str, timeout: float = 30.0) -> None:
        """On a SASL/SCRAM cluster, let ``user`` read their own topic and nothing else.

        Refused (ConfigError) for a reserved principal name and for a principal that already
        has credentials on the cluster: a mini-broker user never takes over an account.

        The Kafka account is the user's name with their mini-broker token as its password
        (SCRAM-SHA-512), allowed to READ/DESCRIBE ``minibroker.<user>`` and to use consumer
        groups whose names start with ``<user>-``; the cluster's default-deny authorizer refuses
        every other topic, including other users' outputs. Needs an admin connection.
        """
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            AdminClient,
            ResourcePatternType,
            ResourceType,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        if user.lower() in RESERVED_PRINCIPALS:
            raise ConfigError(
                f"{user!r} is a reserved Kafka principal; choose another mini-broker user name"
            )
        admin = AdminClient(self._admin_config)
        if self._has_credentials(admin, user, timeout):
            # Someone else's principal (the cluster's producer, a broker team): overwriting its
            # password would hand its rights to this mini-broker user.
            raise ConfigError(
                f"Kafka principal {user!r} already exists on this cluster; a mini-broker user "
                "may not take over an existing account"
            )
        topic = self.ensure_user(user)
        upsert = UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), token.encode()
        )
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout)

        def allow(rtype: Any, name: str, pattern: Any, op: Any) -> AclBinding:
            return AclBinding(
                rtype, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW
            )

        literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
        acls = [
            allow(ResourceType.TOPIC, topic, literal, AclOperation.READ),
            allow(ResourceType.TOPIC, topic, literal, AclOperation.DESCRIBE),
            # With the separator: user "alic" must not use group "alice-main".
            allow(ResourceType.GROUP, f"{user}-", prefixed, AclOperation.READ),
        ]
        for future in admin.create_acls(acls).values():
            future.result(timeout)

    @staticmethod
    def _has_credentials(admin: Any, user: str, timeout: float) -> bool:
        try:
            found = admin.describe_user_scram_credentials([user])[user].result(timeout)
        except KafkaException as exc:
            if "RESOURCE_NOT_FOUND" in str(exc).upper() or "not found" in str(exc).lower():
                return False
            raise
        return bool(getattr(found, "scram_credential_infos", found))

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        user = msg.topic()[len(TOPIC_PREFIX) :]
        if err is None:
            self.delivered[user] += 1
        else:
            self.failed[user] += 1
            log.warning("mini-broker: delivery to %s failed: %s", msg.topic(), err)

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        topic = self.ensure_user(user)
        try:
            self._producer.produce(
                topic,
                value=payload,
                key=str(alert.get("diaSourceId", "")).encode(),
                headers=[(HEADER_FILTERS, ",".join(filters).encode())],
                on_delivery=self._on_delivery,
            )
        except BufferError:
            self.queue_full[user] += 1  # counted, never waited on: the main stream comes first
        except KafkaException as exc:
            self.failed[user] += 1
            log.warning("mini-broker: Kafka refused an alert for %s: %s", user, exc)
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        return int(self._producer.flush(timeout))

    def close(self) -> None:
        self.flush()


class VtpUserStreams:
    """A VTP broker whose subscribers authenticate with a user token and get only their matches.

    On connection each subscriber is sent a VTP ``authenticate`` request and must answer with a
    ``Meta/Param name="token"``; events are VOEvent 2.0 with cutouts by reference, so that they
    fit the 100 KB frames that stock VTP peers accept.
    """

    name = "vtp"

    def __init__(
        self,
        authenticate: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serializer: VoeventSerializer | None = None,
        **broker_options: Any,
    ) -> None:
        self.serializer = serializer or VoeventSerializer(mode="reference")
        self.broker = VtpBroker(
            host,
            broadcast_port=port,
            subscriber_auth=self._check,
            local_ivo="ivo://alertbench.example/minibroker",
            **broker_options,
        )
        self._authenticate = authenticate
        self.delivered: Counter[str] = Counter()
        self.no_subscriber: Counter[str] = Counter()
        self._encoded: OrderedDict[int, bytes] = OrderedDict()  # alert id -> VOEvent, recent

    def _check(self, params: dict[str, str]) -> str | None:
        try:
            return self._authenticate(params.get("token", "")).name
        except Exception:
            return None

    @property
    def url(self) -> str:
        return f"vtp://{self.broker.host}:{self.broker.broadcast_port}"

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        if not self.broker.subscribers_of(user):
            self.no_subscriber[user] += 1  # VTP has no replay: nobody listening, nothing kept
            return
        self.broker.deliver(self._voevent(alert), user)
        self.delivered[user] += 1

    def _voevent(self, alert: dict[str, Any]) -> bytes:
        """Encoded once however many users an alert goes to (XML encoding is the costly part)."""
        alert_id = alert["diaSourceId"]
        data = self._encoded.get(alert_id)
        if data is None:
            data = self._encoded[alert_id] = self.serializer.dumps(alert)
            if len(self._encoded) > 1024:
                self._encoded.popitem(last=False)
        return data

    def flush(self, timeout: float = 10.0) -> int:
        return 0

    def close(self) -> None:
        self.broker.stop()
