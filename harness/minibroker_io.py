"""The mini-broker's I/O: its input from a transport, and where a user's matches go (VOEvent 2.0
over VTP, and an Avro Kafka topic of their own). These implement the ports the core declares in
:mod:`alertbench.refimpl.minibroker.ports`; the core itself does no I/O.

Delivery is at-least-once end to end over a committing input: :class:`SubscriberInput` forwards
``commit()`` to its subscriber (``alertbench minibroker serve`` opens Kafka with
``commit="manual"``), and the core commits only after each batch was delivered and every output's
``flush()`` returned 0, so a restart resumes at the end of a batch every output had. What an
output's 0 vouches for ("reached"):

* :class:`KafkaUserTopics`: every message is acknowledged by the cluster (idempotent producer,
  ``acks=all``). One that failed after ``deliver`` returned (the delivery report says so), or
  that found the local queue still full after waiting ``QUEUE_WAIT`` seconds, or that a fatal
  producer error refused, is counted by the next ``flush()``: the core then stops uncommitted.
  One Kafka refuses outright (too large) raises, and is counted in the core's
  ``output_errors`` and not retried.
* :class:`VtpUserStreams`: the VOEvent was queued, before ``deliver`` returned, for every
  subscriber of the user connected at that moment (``flush()`` has nothing to wait for). VTP
  keeps nothing: a user with no subscriber connected gets nothing (``no_subscriber``), and a
  subscriber dropped for falling behind loses its queue. For more, read the Kafka topic.

Neither output waits on a user: a Kafka user reads their topic at their own pace (the cluster
keeps it) and a VTP subscriber that falls behind is dropped rather than allowed to slow the
stream. The service waits only on the Kafka cluster: for acknowledgements after each batch, and
for room when the producer's local queue is full. Each output keeps counts of what it delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.refimpl.minibroker.archive import AlertArchive
from alertbench.refimpl.minibroker.ports import AlertInput, UserOutput
from alertbench.refimpl.minibroker.store import Network, VtpPort, allows
from alertbench.transports.base import MAX_FRAME, Start, Subscriber
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import ADMIN_USER, PRODUCER_USER
from alertbench.transports.vtp import IpAddress, VtpBroker
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from alertbench.errors import ConfigError, StoreError, TransportError

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
    "kafka_start",
    "user_topic",
]

HEADER_FILTERS = "alertbench-filters"
TOPIC_PREFIX = "minibroker."
QUEUE_WAIT = 10.0
"""Seconds ``KafkaUserTopics.deliver`` waits for room in a full local producer queue."""


@dataclass(frozen=True, slots=True)
class _Inbound:
    payload: bytes
    origin: str
    position: object


class SubscriberInput:
    """A transport subscriber as the mini-broker's input port, committing if the subscriber can.

    The core reads ``payload``/``origin``/``position`` and knows nothing of envelopes; this
    adapter is the one place that maps a transport's ``Received`` onto that. :meth:`commit`
    (the core's :class:`~alertbench.refimpl.minibroker.ports.CommittingInput`) forwards to the
    subscriber's own ``commit()``; for the at-least-once guarantee the subscriber must commit
    nothing by itself (Kafka: ``open_subscriber(..., commit="manual")``).
    """

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def poll(self, timeout: float = 1.0) -> _Inbound | None:
        received = self.subscriber.poll(timeout)
        if received is None:
            return None
        return _Inbound(received.envelope.payload, received.origin, received.position)

    def commit(self) -> object:
        """Commit, durably, every message :meth:`poll` returned (the subscriber's
        ``commit()``). A subscriber without one cannot resume: nothing to do, and such an input
        is delivered at most once whatever the core does."""
        commit = getattr(self.subscriber, "commit", None)
        return commit() if commit is not None else 0


COORDINATOR_WAIT_S = 30.0
"""How long a starting service waits for its group's coordinator (a fresh cluster creates and
loads ``__consumer_offsets`` on the first group request)."""
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def _committed(consumer: Consumer, wanted: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, waiting out a coordinator that is still being elected or
    loaded: those answers are Kafka's "ask again", not a refusal, and a service started next
    to a new cluster must not exit on them."""
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            result: list[TopicPartition] = consumer.committed(wanted, timeout=15)
            return result
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def kafka_start(transport: KafkaTransport, group: str, *, from_earliest: bool) -> Start:
    """Where ``group`` reads ``transport``'s topic: its committed position, which a restart
    resumes from, made durable before the first alert is read.

    A partition the group has no commit for is first committed at its beginning
    (``from_earliest``) or its end (now), so a crash before the service's first commit resumes
    where that first run began instead of at the end of the topic. The returned start reads
    the group's commits; if the early commit was refused (another member holds the group),
    it reads the same positions without making them durable.
    """
    conf = {k: v for k, v in transport.client_config().items() if k != "error_cb"}
    conf.update({"group.id": group, "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(transport.topic, timeout=15)
        found = meta.topics.get(transport.topic)
        if found is None or found.error is not None or not found.partitions:
            why = found.error if found is not None else "not found"
            raise TransportError(f"topic {transport.topic!r}: {why}")
        wanted = [TopicPartition(transport.topic, p) for p in sorted(found.partitions)]
        committed = {c.partition: c.offset for c in _committed(consumer, wanted)}
        initial = []
        for tp in wanted:
            if committed.get(tp.partition, -1) < 0:
                low, high = consumer.get_watermark_offsets(tp, timeout=15)
                initial.append(
                    TopicPartition(tp.topic, tp.partition, low if from_earliest else high)
                )
        if initial:
            try:
                consumer.commit(offsets=initial, asynchronous=False)
            except KafkaException as exc:
                log.warning(
                    "mini-broker: cannot commit the starting position of %s: %s", group, exc
                )
                seen = {p: o - 1 for p, o in committed.items() if o >= 0}
                seen.update({tp.partition: tp.offset - 1 for tp in initial})
                return Start.after(seen)
            log.info("mini-broker: group %s starts at %s", group,
                     {tp.partition: tp.offset for tp in initial})  # fmt: skip
    except KafkaException as exc:
        raise TransportError(f"cannot read the position of group {group!r}: {exc}") from None
    finally:
        consumer.close()
    return Start.latest()  # = the group's committed position, on every partition


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
        """user -> alerts dropped because the local queue stayed full for ``QUEUE_WAIT`` s."""
        self._lost = 0
        """Accepted by deliver() but not delivered, since the last flush() (which reports them)."""

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

    def rotate(self, user: str, token: str, timeout: float = 30.0) -> None:
        """Make ``token`` the only Kafka password of ``user`` (their token rotated).

        Only a principal that :meth:`grant` made is touched, the one allowed to READ the user's
        own topic; a reserved name, or an account that merely shares the user's name, is
        refused (ConfigError), as ``grant`` refuses to take one over. TransportError if Kafka
        refuses the change."""
        from alertbench.transports.servers.kafka_cluster import replace_scram_password
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            AdminClient,
            ResourcePatternType,
            ResourceType,
        )

        if user.lower() in RESERVED_PRINCIPALS:
            raise ConfigError(f"{user!r} is a reserved Kafka principal, not a mini-broker user's")
        own_topic = AclBindingFilter(
            ResourceType.TOPIC, user_topic(user), ResourcePatternType.LITERAL,
            f"User:{user}", None, AclOperation.READ, AclPermissionType.ALLOW,
        )  # fmt: skip
        admin = AdminClient(self._admin_config)  # kept alive until its answer is in
        try:
            if not admin.describe_acls(own_topic).result(timeout):
                raise ConfigError(
                    f"Kafka principal {user!r} may not read {user_topic(user)}: it was not made "
                    "by 'minibroker user add --kafka', so its password is not this user's token"
                )
            replace_scram_password(self._admin_config, user, token, timeout=timeout)
        except KafkaException as exc:
            raise TransportError(f"Kafka refused to replace {user!r}'s password: {exc}") from exc

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
            self._lost += 1
            log.warning("mini-broker: delivery to %s failed: %s", msg.topic(), err)

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        """Queue the alert for the user's topic; acknowledged (or not) by the next flush().

        A full local queue is waited on, for the cluster's acknowledgements, at most
        ``QUEUE_WAIT`` seconds (then dropped, counted, and reported by flush()). An alert
        Kafka refuses outright (too large for the topic) raises TransportError: counted by the
        service, not retried."""
        topic = self.ensure_user(user)
        until = time.monotonic() + QUEUE_WAIT
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=payload,
                    key=str(alert.get("diaSourceId", "")).encode(),
                    headers=[(HEADER_FILTERS, ",".join(filters).encode())],
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # The cluster acknowledges more slowly than we produce (no user is waited on:
                # they read from the cluster): wait for room rather than lose the alert.
                if time.monotonic() >= until:
                    self.queue_full[user] += 1
                    self._lost += 1
                    break
                self._producer.poll(0.05)
            except KafkaException as exc:
                self.failed[user] += 1
                error = exc.args[0]
                if isinstance(error, KafkaError) and error.fatal():
                    # The producer can deliver nothing more: flush() reports it, and the
                    # service stops uncommitted instead of counting every later alert.
                    self._lost += 1
                    log.error("mini-broker: the Kafka producer failed: %s", error)
                    break
                raise TransportError(f"Kafka refused an alert for {user}: {exc}") from None
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s for the cluster's acknowledgements; return how many alerts
        delivered since the last flush are not acknowledged: still queued, plus those that
        failed or were dropped (counted once, by this flush)."""
        left = int(self._producer.flush(timeout))
        lost, self._lost = self._lost, 0
        return left + lost

    def close(self) -> None:
        self.flush()


class VtpUserStreams:
    """A VTP broker whose subscribers authenticate with a user token and get only their matches.

    On connection each subscriber is sent a VTP ``authenticate`` request and must answer with a
    ``Meta/Param name="token"``; events are VOEvent 2.0 with cutouts by reference, so that they
    fit the 100 KB frames that stock VTP peers accept.

    Events are VOEvent 2.0 in ``compact`` mode: the triggering source, the object summary and the
    fields a VO user filters on, with the light curve and cutouts by reference. Given an
    ``archive``, each alert sent is kept there first, so that a
    :class:`~alertbench.transports.servers.references.ReferenceServer` over the same archive
    answers the references (the serializer's ``reference_base`` must be that server's URL).
    ``reference`` mode (full history inline) is still over 100 KB for about a third of
    realistic alerts, and Comet drops such frames without a word, so compact is what a stock
    peer can relay.

    Users' own ports (``user_ports``, from the store's :meth:`~alertbench.refimpl.minibroker.
    store.MiniBrokerStore.vtp_ports`): for stock VTP subscribers, Comet's included, which answer
    ``authenticate`` only with their XPath filters and so cannot present a token. Each such
    user gets a broadcast port of their own next to the token port, and the address a
    subscriber connects from is its credential there (Comet's own model, an IP allow-list): one
    connecting from an allowed address gets that user's stream at once, with no authenticate
    exchange; any other is sent a nak and closed (counted in the broker's
    ``subscribers_refused_address``, logged) before it can be sent anything. The token port is
    unchanged. The XPath filters a Comet subscriber holds are not applied: the user's stored
    filters select their stream, as on the token port.

    The ports follow the store: :meth:`refresh` applies what changed (a port opened, moved or
    closed, its subscribers disconnected; an allow-list replaced, and the subscribers it no
    longer allows disconnected), and, given ``revision``, a thread calls it within
    ``reload_interval`` seconds of each change of the store's revision, whether or not alerts
    are flowing. A port that cannot be opened (in use, or the token port itself) is logged and
    kept in :attr:`port_errors`; the other users are served, and it is tried again at the next
    change.
    """

    name = "vtp"

    def __init__(
        self,
        authenticate: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serializer: VoeventSerializer | None = None,
        user_ports: Callable[[], Sequence[VtpPort]] | None = None,
        revision: Callable[[], int] | None = None,
        reload_interval: float = 2.0,
        archive: AlertArchive | None = None,
        **broker_options: Any,
    ) -> None:
        self.serializer = serializer or VoeventSerializer(mode="compact")
        self.archive = archive
        self.archive_errors = 0
        """Alerts sent whose references will not resolve: the archive could not keep them."""
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
        self._user_ports = user_ports
        self._opened: dict[str, tuple[int, int]] = {}  # user -> (port asked for, port bound)
        self._allow: dict[str, tuple[Network, ...]] = {}  # read by the ports' accept threads
        self.port_errors: dict[str, str] = {}
        """user -> why their own port could not be opened (retried at the store's next change)."""
        self._refreshing = threading.Lock()
        self._closing = threading.Event()
        self._reloader: threading.Thread | None = None
        if user_ports is not None:
            seen = revision() if revision is not None else 0  # before: no change slips between
            self.refresh()
            if revision is not None:
                self._reloader = threading.Thread(
                    target=self._follow,
                    args=(revision, reload_interval, seen),
                    daemon=True,
                    name="vtp-user-ports",
                )
                self._reloader.start()

    def _check(self, params: dict[str, str]) -> str | None:
        try:
            return self._authenticate(params.get("token", "")).name
        except Exception:
            return None

    @property
    def url(self) -> str:
        return f"vtp://{self.broker.host}:{self.broker.broadcast_port}"

    # -- users' own ports (address allow-lists) -------------------------------------------------

    def user_ports(self) -> dict[str, int]:
        """user -> the port of their own being served (the one chosen, for port 0)."""
        return {user: bound for user, (_, bound) in self._opened.items()}

    def _admits(self, user: str) -> Callable[[IpAddress], str | None]:
        def admit(address: IpAddress) -> str | None:
            return user if allows(self._allow.get(user, ()), address) else None

        return admit

    def refresh(self) -> None:
        """Make the users' own ports what the store says now (see the class docstring)."""
        if self._user_ports is None:
            return
        with self._refreshing:
            wanted = {grant.user: grant for grant in self._user_ports()}
            for user in [u for u in self._opened if u not in wanted]:
                _, bound = self._opened[user]
                self.broker.unlisten(bound, f"user {user}'s VTP port was removed")
                del self._opened[user]  # once closed: user_ports() never lists a closing port
                self._allow.pop(user, None)
                log.info("mini-broker: closed user %s's VTP port %d", user, bound)
            for user in [u for u in self.port_errors if u not in wanted]:
                del self.port_errors[user]
            for grant in wanted.values():
                self._apply(grant)

    def _apply(self, grant: VtpPort) -> None:
        user, opened = grant.user, self._opened.get(grant.user)
        if opened is not None and opened[0] == grant.port:
            if self._allow.get(user) != grant.allow:
                self._allow[user] = grant.allow
                dropped = self.broker.recheck(opened[1])
                log.info(
                    "mini-broker: user %s's VTP port %d now allows %s (%d subscribers dropped)",
                    user, opened[1], _shown(grant.allow), dropped,
                )  # fmt: skip
            return
        if opened is not None:  # moved: the old port closes, with its subscribers
            self.broker.unlisten(opened[1], f"user {user}'s VTP port moved")
            del self._opened[user]
        self._allow[user] = grant.allow
        if grant.port and grant.port == self.broker.broadcast_port:
            self._port_error(user, f"port {grant.port} is the token port")
            return
        try:
            bound = self.broker.listen(grant.port, self._admits(user))
        except OSError as exc:
            self._port_error(user, f"cannot open port {grant.port}: {exc}")
            return
        self._opened[user] = (grant.port, bound)
        self.port_errors.pop(user, None)
        log.info(
            "mini-broker: user %s subscribes over VTP at vtp://%s:%d from %s (no token)",
            user, self.broker.host, bound, _shown(grant.allow),
        )  # fmt: skip

    def _port_error(self, user: str, why: str) -> None:
        self._allow.pop(user, None)
        self.port_errors[user] = why
        log.error("mini-broker: user %s's own VTP port is not served: %s", user, why)

    def _follow(self, revision: Callable[[], int], interval: float, seen: int) -> None:
        """Refresh whenever the store's revision changes from ``seen``, until :meth:`close`."""
        while not self._closing.wait(interval):
            try:
                now = revision()
                if now != seen:
                    self.refresh()
                    seen = now
            except Exception:  # a locked or vanished store: logged, tried again next time
                log.exception("mini-broker: could not reload the users' VTP ports")

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        if not self.broker.subscribers_of(user):
            self.no_subscriber[user] += 1  # VTP has no replay: nobody listening, nothing kept
            return
        if self.archive is not None:
            self._keep(alert, payload)
        self.broker.deliver(self._voevent(alert), user)
        self.delivered[user] += 1

    def _keep(self, alert: dict[str, Any], payload: bytes) -> None:
        """Before the event goes out, so its references resolve by the time it arrives. An
        archive that fails (a full disk) does not stop the stream: the event still goes, its
        references answer 404, and the failure is counted and logged."""
        assert self.archive is not None
        try:
            self.archive.put(alert["diaSourceId"], payload)
        except StoreError as exc:
            self.archive_errors += 1
            log.warning("mini-broker: alert %s sent unarchived: %s", alert["diaSourceId"], exc)

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
        """Nothing to wait for: deliver() queued each event for every connected subscriber of
        the user before it returned (what "reached" means for VTP, which keeps nothing)."""
        return 0

    def close(self) -> None:
        self._closing.set()
        if self._reloader is not None:
            self._reloader.join(timeout=5)
        self.broker.stop()


def _shown(allow: Sequence[Network]) -> str:
    return ", ".join(str(network) for network in allow)
