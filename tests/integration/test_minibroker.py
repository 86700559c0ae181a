"""The mini-broker end to end: real (secured) Kafka in, VOEvent over VTP and per-user Kafka out."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from alertbench.harness.minibroker_io import (
    KafkaUserTopics,
    SubscriberInput,
    VtpUserStreams,
    user_topic,
)
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.refimpl.minibroker import (
    AccessDenied,
    LimitExceeded,
    MiniBroker,
    MiniBrokerStore,
    StoreError,
)
from alertbench.refimpl.minibroker.archive import AlertArchive
from alertbench.refimpl.minibroker.filters import FilterError
from alertbench.transports.base import Envelope, Start, TransportError
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import (
    PRODUCER_USER,
    KafkaCluster,
    client_auth,
    probe,
)
from alertbench.transports.servers.references import ReferenceServer
from alertbench.transports.vtp import VtpTransport
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from lxml import etree

from alertbench.errors import ConfigError
from alertbench.xmlsafe import voevent_xsd
from tests.support.servers import require_tools
from tests.support.streams import drain

ALICE_FILTER = "diaSource.snr > 9 and count(prvDiaSources) >= 3"
BOB_FILTER = "max(prvDiaSources.psfFlux) > 2 * diaSource.psfFlux or diaSource.snr > 30"


def alice_wants(a: dict) -> bool:  # ALICE_FILTER in plain Python
    s = a["diaSource"]
    return s["snr"] is not None and s["snr"] > 9 and len(a["prvDiaSources"] or []) >= 3


def bob_wants(a: dict) -> bool:  # BOB_FILTER in plain Python
    s = a["diaSource"]
    prv = [p["psfFlux"] for p in a["prvDiaSources"] or [] if p["psfFlux"] is not None]
    rising = bool(prv) and s["psfFlux"] is not None and max(prv) > 2 * s["psfFlux"]
    return rising or (s["snr"] is not None and s["snr"] > 30)


def by_visit(alerts: list[dict], ids) -> dict[int, set[int]]:
    visit = {a["diaSourceId"]: a["diaSource"]["visit"] for a in alerts}
    out: dict[int, set[int]] = {}
    for i in ids:
        out.setdefault(visit[i], set()).add(i)
    return out


def check_selection(alerts: list[dict], wants, limit: int, got: list[int]) -> None:
    """Exactly the matching alerts, at most ``limit`` per visit, each once.

    The full stream has several partitions (as Rubin's does), so which of a visit's matches fill
    a capped allowance depends on arrival order; when the cap is not reached the set is exact.
    """
    assert len(got) == len(set(got)), "an alert was delivered twice"
    matching = by_visit(alerts, [a["diaSourceId"] for a in alerts if wants(a)])
    received = by_visit(alerts, got)
    for visit, ids in matching.items():
        chosen = received.get(visit, set())
        assert chosen <= ids, f"visit {visit}: delivered alerts the filter does not select"
        assert len(chosen) == min(len(ids), limit)


def fetch_references(packet: bytes, base: str, originals: dict[int, dict]) -> None:
    """Every Reference of a delivered VOEvent under ``base``: the FITS cutouts open in astropy
    with the alert's own bytes, the light curve is a VOTable with the alert's rows."""
    root = etree.fromstring(packet)
    uris = [r.get("uri") for r in root.iter("Reference") if r.get("uri", "").startswith(base)]
    assert len(uris) == 4, uris  # three cutouts and the light curve
    for uri in uris:
        ident, name = uri.removeprefix(base + "/").split("/")
        alert = originals[int(ident)]
        with urllib.request.urlopen(uri, timeout=10) as response:
            media, body = response.headers["Content-Type"], response.read()
        if name.endswith(".fits"):
            assert media == "image/fits" and body == alert[name.removesuffix(".fits")]
            with fits.open(io.BytesIO(body)) as hdus:
                assert any(h.data is not None and h.data.ndim == 2 for h in hdus)
        else:
            assert media == "application/x-votable+xml"
            tables = {t.name: len(t.array) for t in parse_votable(io.BytesIO(body)).iter_tables()}
            assert tables["prvDiaSources"] == len(alert["prvDiaSources"] or [])


# -- the store: tokens, limits, isolation ---------------------------------------------------------


def test_store_tokens_scope_every_request_to_their_user(tmp_path: Path) -> None:
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    alice = store.add_user("alice", max_filters=2)
    bob = store.add_user("bob")
    store.add_filter(alice, "bright", "diaSource.snr > 20")
    store.add_filter(bob, "secret", "diaSource.snr > 50")
    assert [f.name for f in store.list_filters(alice)] == ["bright"]
    assert [f.expression for f in store.list_filters(bob)] == ["diaSource.snr > 50"]
    with pytest.raises(StoreError, match="you have no filter named 'secret'"):
        store.remove_filter(alice, "secret")  # alice cannot touch bob's filter
    assert [f.name for f in store.list_filters(bob)] == ["secret"]
    with pytest.raises(AccessDenied, match="unknown token"):
        store.list_filters(alice + "x")
    with pytest.raises(AccessDenied, match="a token is required"):
        store.add_filter("", "x", "diaSource.snr > 1")
    store.add_filter(alice, "second", "diaSource.snr > 30")
    with pytest.raises(LimitExceeded, match="already has 2 filters"):
        store.add_filter(alice, "third", "diaSource.snr > 40")
    with pytest.raises(StoreError, match="already exists"):
        store.add_user("alice")
    with pytest.raises(StoreError, match="user name"):
        store.add_user("Robert'); DROP TABLE users;--")
    with pytest.raises(FilterError, match="unknown field"):
        store.add_filter(bob, "typo", "diaSource.snrr > 1")
    new_token = store.rotate_token("alice")
    with pytest.raises(AccessDenied):
        store.list_filters(alice)
    store.close()
    reopened = MiniBrokerStore(tmp_path / "mb.sqlite")  # persistent
    assert [f.name for f in reopened.list_filters(new_token)] == ["bright", "second"]
    assert b"diaSource.snr > 20" in (tmp_path / "mb.sqlite").read_bytes()
    assert new_token.encode() not in (tmp_path / "mb.sqlite").read_bytes()  # only its hash


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured() -> KafkaCluster:
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=1, auth=True, readers=("minibroker",)).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def two_visits(simulator) -> list[dict]:
    return list(simulator.visit(5).alerts()) + list(simulator.visit(6).alerts())


def _kafka(cluster: KafkaCluster, topic: str, user: str, password: str | None = None):
    url = f"kafka://{cluster.bootstrap_servers}/{topic}"
    return KafkaTransport(url, user=user, password=password or cluster.users[user])


def _wait(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_user_cannot_take_over_an_existing_kafka_principal(secured) -> None:
    """Issue 14, item 7: a mini-broker user named after an existing principal overwrote its
    SCRAM password and got its rights."""
    admin = {"user": "admin", "password": secured.users["admin"]}
    topics = KafkaUserTopics(f"kafka://{secured.bootstrap_servers}", **admin)
    for reserved in (PRODUCER_USER, "admin", "Minibroker"):
        with pytest.raises(ConfigError, match="reserved"):
            topics.grant(reserved, "a-token")
    topics.grant("carol", "carols-token")  # a new principal: fine, once
    with pytest.raises(ConfigError, match="already exists"):
        topics.grant("carol", "someone-elses-token")
    # Refused before anything changed: carol's first password still logs in.
    sub = _kafka(secured, user_topic("carol"), "carol", "carols-token").open_subscriber(
        Start.earliest(), group="carol-check"
    )
    assert sub.poll(2.0) is None  # her topic is empty; no authentication or ACL error
    sub.close()


def _login_error(cluster: KafkaCluster, user: str, password: str) -> str | None:
    """None if ``user`` logs in to Kafka with ``password`` and joins a group on their topic;
    else why not (the broker's refusal)."""
    try:
        sub = _kafka(cluster, user_topic(user), user, password).open_subscriber(
            Start.earliest(), group=f"{user}-login"
        )
    except TransportError as exc:
        return str(exc)
    try:
        sub.poll(0.5)
    except TransportError as exc:
        return str(exc)
    finally:
        sub.close()
    return None


def _logs_in_soon(cluster: KafkaCluster, user: str, password: str, timeout: float = 20.0) -> None:
    """A new SCRAM credential reaches the broker through the metadata log: allow it a moment."""
    deadline = time.monotonic() + timeout
    while (error := _login_error(cluster, user, password)) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} cannot log in to Kafka: {error}")
        time.sleep(0.5)


def test_rotating_a_token_replaces_the_users_kafka_password(secured, tmp_path, capsys) -> None:
    """Issue 14, item 17: ``rotate_token`` changed only the store, so the token it replaced,
    the user's Kafka (SCRAM) password, still opened their topic. Rotation now replaces the
    SCRAM credential, through the operator's command, before the new token is committed."""
    from alertbench.harness.cli import main

    db = tmp_path / "mb.sqlite"
    kafka = [
        "--kafka", f"kafka://{secured.bootstrap_servers}",
        "--kafka-user", "admin", "--kafka-password", secured.users["admin"], "--db", str(db),
    ]  # fmt: skip
    assert main(["minibroker", "user", "add", "dave", *kafka]) == 0
    old = capsys.readouterr().out.split()[-1]
    _logs_in_soon(secured, "dave", old)

    assert main(["minibroker", "user", "rotate", "dave", *kafka]) == 0, capsys.readouterr().err
    new = capsys.readouterr().out.split()[-1]
    assert new != old
    _logs_in_soon(secured, "dave", new)
    refused = _login_error(secured, "dave", old)
    assert refused is not None and "authentication" in refused.lower(), refused
    with MiniBrokerStore(db) as store:  # and the store took the same token
        assert store.authenticate(new).name == "dave"
        with pytest.raises(AccessDenied):
            store.authenticate(old)


def test_rotation_never_replaces_the_password_of_an_account_it_did_not_make(
    secured, tmp_path, capsys
) -> None:
    """A store user who shares a name with a Kafka account that ``user add --kafka`` did not
    make (item 7's take-over, by rotation): refused, and nothing changes on either side."""
    from alertbench.harness.cli import main
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(secured.admin_config())
    upsert = UserScramCredentialUpsertion(
        "ops-team", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"ops-password"
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(30)
    db = tmp_path / "mb.sqlite"
    with MiniBrokerStore(db) as store:
        token = store.add_user("ops-team")  # never given Kafka access
    kafka = [
        "--kafka", f"kafka://{secured.bootstrap_servers}",
        "--kafka-user", "admin", "--kafka-password", secured.users["admin"], "--db", str(db),
    ]  # fmt: skip
    assert main(["minibroker", "user", "rotate", "ops-team", *kafka]) == 2
    assert "not made by 'minibroker user add --kafka'" in capsys.readouterr().err
    with MiniBrokerStore(db) as store:  # rolled back: the old token still works
        assert store.authenticate(token).name == "ops-team"
    ops = client_auth("ops-team", "ops-password")  # and the account keeps its own password
    deadline = time.monotonic() + 20
    while probe(secured.bootstrap_servers, timeout=3, **ops) < 1:
        assert time.monotonic() < deadline, "ops-team's own password no longer logs in"
        time.sleep(0.5)


def test_alerts_flow_from_kafka_through_user_filters_to_vtp_and_kafka(
    secured, two_visits, tmp_path
) -> None:
    codec = AvroSerializer()
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    alice = store.add_user("alice")  # default allowance: 20 alerts per visit
    bob = store.add_user("bob", alerts_per_visit=1000)
    store.add_filter(alice, "bright-with-history", ALICE_FILTER)
    store.add_filter(bob, "fading-or-very-bright", BOB_FILTER)
    matches_alice = sum(alice_wants(a) for a in two_visits)
    matches_bob = sum(bob_wants(a) for a in two_visits)
    assert matches_alice > 40  # the cap of 20 per visit is exercised in both visits
    assert 0 < matches_bob < len(two_visits)

    # The full stream, as Rubin's producer writes it, with a corrupt message in the middle.
    admin = {"user": "admin", "password": secured.users["admin"]}
    outputs_kafka = KafkaUserTopics(f"kafka://{secured.bootstrap_servers}", **admin)
    outputs_kafka.grant("alice", alice)
    outputs_kafka.grant("bob", bob)
    producer = _kafka(secured, secured.alert_topic, PRODUCER_USER).open_publisher()
    for i, alert in enumerate(two_visits):
        producer.publish(Envelope(codec.dumps(alert), codec.content_type, alert["diaSourceId"]))
        if i == 100:
            producer.publish(Envelope(b"\x00not an alert", codec.content_type, -1))
    assert producer.flush(30) == 0

    # The references of what VTP sends resolve: an archive and a real HTTP server over it.
    archive = AlertArchive(tmp_path / "mb.sqlite.archive", codec.loads)
    references = ReferenceServer(archive).start()
    originals = {a["diaSourceId"]: a for a in two_visits}
    vtp = VtpUserStreams(
        store.authenticate,
        serializer=VoeventSerializer(mode="compact", reference_base=references.url),
        archive=archive,
    )
    subscribers = {
        name: VtpTransport(f"{vtp.url}?token={token}").open_subscriber()
        for name, token in (("alice", alice), ("bob", bob))
    }
    intruder = VtpTransport(f"{vtp.url}?token=not-a-token").open_subscriber(reconnect=False)
    tokenless = VtpTransport(vtp.url).open_subscriber(reconnect=False)
    _wait(lambda: vtp.broker.subscribers_of("alice") == 1 and vtp.broker.subscribers_of("bob") == 1)

    broker = MiniBroker(store, [vtp, outputs_kafka], codec)
    source = _kafka(secured, secured.alert_topic, "minibroker").open_subscriber(
        Start.earliest(), group="minibroker-service"
    )
    total = len(two_visits) + 1
    worker = threading.Thread(
        target=broker.run,
        kwargs={"source": SubscriberInput(source), "max_alerts": total, "duration": 120},
    )
    worker.start()

    # While it runs: a hostile filter is refused at registration and the service carries on.
    with pytest.raises(FilterError, match="names starting with '_'"):
        store.add_filter(bob, "evil", "diaSource.__class__.__init__.__globals__ == 1")
    worker.join(150)
    assert not worker.is_alive()
    source.close()
    stats = broker.stats
    assert stats.alerts == len(two_visits) and len(stats.undecodable) == 1
    assert "alerts@" in stats.undecodable[0] or "alerts/" in stats.undecodable[0]
    assert stats.delivered["alice"] == 40 and stats.truncated["alice"] == matches_alice - 40
    assert stats.truncated["bob"] == 0

    # VOEvent 2.0 over VTP: each user gets exactly their selection, schema-valid.
    voevent = VoeventSerializer(mode="compact")
    for name, wants, limit, count in (
        ("alice", alice_wants, 20, 40),
        ("bob", bob_wants, 1000, matches_bob),
    ):
        got = list(drain(subscribers[name], count, timeout=10))
        assert subscribers[name].poll(0.3) is None  # and nothing more
        check_selection(two_visits, wants, limit, [r.envelope.alert_id for r in got])
        root = voevent.parse(got[0].envelope.payload)
        assert voevent_xsd().validate(root)
        # Compact: every event fits the 100,000-byte frames stock VTP peers accept.
        assert max(len(r.envelope.payload) for r in got) < 100_000
        # ...and every reference in every delivered event fetches what the alert carried.
        for received in got:
            fetch_references(received.envelope.payload, references.url, originals)
        subscribers[name].close()
    assert intruder.poll(0.5) is None and tokenless.poll(0.1) is None
    assert any("authentication refused" in e for e in intruder.errors)
    intruder.close()
    tokenless.close()
    vtp.close()
    assert vtp.archive_errors == 0
    references.stop()
    archive.close()

    # Avro over Kafka: each user reads their own topic with their token, byte-identical alerts.
    for name, token, wants, limit, count in (
        ("alice", alice, alice_wants, 20, 40),
        ("bob", bob, bob_wants, 1000, matches_bob),
    ):
        sub = _kafka(secured, user_topic(name), name, token).open_subscriber(
            Start.earliest(), group=f"{name}-reader"
        )
        got = list(drain(sub, count, timeout=10))
        assert sub.poll(0.5) is None
        sub.close()
        check_selection(two_visits, wants, limit, [r.envelope.alert_id for r in got])
        assert all(r.envelope.payload == codec.dumps(originals[r.envelope.alert_id]) for r in got)

    # ...and cannot read another user's topic, nor the full stream.
    for topic in (user_topic("bob"), secured.alert_topic):
        with pytest.raises(TransportError, match=r"(?i)authoriz"):
            sub = _kafka(secured, topic, "alice", alice).open_subscriber(
                Start.earliest(), group="alice-snoop"
            )
            for _ in range(20):
                sub.poll(0.5)


# -- columnar decode ---------------------------------------------------------------------------


def test_columnar_decode_and_dicts_select_the_same_alerts(alerts, tmp_path) -> None:
    codec = AvroSerializer()
    payloads = [codec.dumps(a) for a in alerts]
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    token = store.add_user("carol", alerts_per_visit=1000)
    store.add_filter(token, "a", ALICE_FILTER)
    store.add_filter(token, "b", BOB_FILTER)

    class Collect:
        name = "collect"

        def __init__(self) -> None:
            self.got: list[tuple[int, int]] = []

        def deliver(self, user, alert, payload, filters) -> None:
            assert len(alert) > 5 and payload  # outputs get complete alerts
            self.got.append((alert["diaSourceId"], len(alert["prvDiaSources"] or [])))

        def flush(self, timeout: float = 10.0) -> int:
            return 0

        def close(self) -> None:
            pass

    results = []
    for columnar in (True, False):
        output = Collect()
        broker = MiniBroker(store, [output], codec)
        broker.reload(force=True)
        if columnar:
            broker.process(payloads)
        else:
            broker.process_alerts(alerts, payloads)
        results.append(output.got)
    expected = [
        (a["diaSourceId"], len(a["prvDiaSources"] or []))
        for a in alerts
        if alice_wants(a) or bob_wants(a)
    ]
    assert results[0] == results[1] == expected


def test_an_output_that_fails_an_alert_stops_nothing_else(alerts, tmp_path) -> None:
    from alertbench.errors import EncodeError

    codec = AvroSerializer()
    payloads = [codec.dumps(a) for a in alerts]
    store = MiniBrokerStore(tmp_path / "mb.sqlite")
    token = store.add_user("erin", alerts_per_visit=1000)
    store.add_filter(token, "all", "diaSource.snr > 0")
    poison = alerts[3]["diaSourceId"]

    class Picky:
        name = "picky"

        def __init__(self) -> None:
            self.got: list[int] = []

        def deliver(self, user, alert, payload, filters) -> None:
            if alert["diaSourceId"] == poison:
                raise EncodeError("too large for this output", codec="voevent")
            self.got.append(alert["diaSourceId"])

        def flush(self, timeout: float = 10.0) -> int:
            return 0

        def close(self) -> None:
            pass

    picky, other = Picky(), Picky()
    other.name = "other"
    broker = MiniBroker(store, [picky, other], codec)
    broker.process(payloads)
    assert len(picky.got) == len(alerts) - 1 and poison not in picky.got
    assert broker.stats.output_errors == {"picky:erin": 1, "other:erin": 1}
    broker.process_alerts(alerts, payloads)  # and it keeps serving
    assert len(picky.got) == 2 * (len(alerts) - 1)


@pytest.mark.kafka
def test_the_serve_command_runs_the_service_over_kafka(kafka_cluster, alerts, tmp_path) -> None:
    import subprocess
    import sys

    from alertbench.transports.servers.kafka_cluster import free_port

    codec = AvroSerializer()
    topic = f"serve-{time.time_ns()}"
    transport = KafkaTransport(f"kafka://{kafka_cluster.bootstrap_servers}/{topic}")
    transport.ensure_topic()
    publisher = transport.open_publisher()
    for alert in alerts:
        publisher.publish(Envelope(codec.dumps(alert), codec.content_type, alert["diaSourceId"]))
    assert publisher.flush(30) == 0
    db = tmp_path / "mb.sqlite"
    store = MiniBrokerStore(db)
    token = store.add_user("frank", alerts_per_visit=5)
    store.add_filter(token, "bright", ALICE_FILTER)
    store.close()
    exe = str(Path(sys.executable).with_name("alertbench"))
    done = subprocess.run(
        [
            exe, "minibroker", "serve", "--kafka", f"kafka://{kafka_cluster.bootstrap_servers}/{topic}",
            "--from-earliest", "--max-alerts", str(len(alerts)), "--duration", "90",
            "--vtp-port", str(free_port()), "--http-port", "0", "--db", str(db),
        ],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["delivered"] == {"frank": 5} and stats["alerts"] == len(alerts)
    assert stats["truncated"]["frank"] == sum(alice_wants(a) for a in alerts) - 5
    sub = KafkaTransport(
        f"kafka://{kafka_cluster.bootstrap_servers}/{user_topic('frank')}"
    ).open_subscriber(Start.earliest())
    got = [r.envelope.alert_id for r in drain(sub, 5, timeout=10)]
    sub.close()
    assert len(got) == 5 and all(alice_wants(a) for a in alerts if a["diaSourceId"] in got)
