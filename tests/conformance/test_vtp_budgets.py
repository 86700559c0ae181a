"""VTP's per-peer budgets and hostile XML (issue 14, items 8, 9 and 13).

Each test is a hostile peer against a real VtpBroker (or a fake broker against our subscriber) on
loopback: a length announced and never sent, a frame trickled a byte at a time, more connections
than the caps, a subscriber that never reads, a DTD in UTF-16. Each checks that the peer is cut
off or refused *and counted*, and that everyone else is still served meanwhile.
"""

from __future__ import annotations

import gc
import select
import socket
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.transports.base import Envelope, get_transport
from alertbench.transports.vtp import VtpBroker, parse_message, read_frame, transport_message

from tests.support.streams import drain

VOEVENT = "application/x-voevent+xml"
ANNOUNCED = 16 * 1024 * 1024 - 1  # the largest frame the default max_frame allows
HOLDERS = 40


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _answer(sock: socket.socket, timeout: float = 10.0) -> tuple[str, str]:
    """The broker's reply on ``sock``: (role, reason)."""
    sock.settimeout(timeout)
    message = parse_message(read_frame(sock, 1 << 20), 1 << 20)
    return message.role, message.result or ""


def _closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the other end closed ``sock`` (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def _events(alerts: list[dict], count: int, mode: str = "reference") -> list[Envelope]:
    codec = VoeventSerializer(mode=mode)
    return [
        Envelope(payload=codec.dumps(alerts[i]), content_type=VOEVENT, alert_id=i)
        for i in range(count)
    ]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- item 8: incremental reads, timeouts, caps ----------------------------------------------------


def test_announced_lengths_cost_no_memory_and_a_normal_author_is_still_acked(alerts) -> None:
    """40 authors announce 16 MiB - 1 and send nothing more: the broker allocated each whole
    frame up front (+640 MB); now it holds only what arrived, and serves a normal author."""
    (event,) = _events(alerts, 1)
    with VtpBroker() as broker:  # the default budgets
        transport = get_transport(broker.url)
        sub = transport.open_subscriber()
        broker.wait_for_subscribers(1)
        gc.collect()
        rss_before = _rss()
        tracemalloc.start()
        holders = []
        try:
            for _ in range(HOLDERS):
                s = socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10)
                s.sendall(struct.pack(">I", ANNOUNCED))
                holders.append(s)
            time.sleep(0.5)  # every author thread has read its length by now
            pub = transport.open_publisher(timeout=10)
            started = time.monotonic()
            pub.publish(event)
            ack_s = time.monotonic() - started
            time.sleep(0.3)
            _, peak = tracemalloc.get_traced_memory()
            rss_growth = _rss() - rss_before
        finally:
            tracemalloc.stop()
        try:
            assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated, {HOLDERS} held"
            assert rss_growth < 32 * 1024 * 1024, f"RSS grew {rss_growth / 2**20:.1f} MiB"
            assert pub.acked == [0] and ack_s < 5.0, (pub.naks, ack_s)
            got = sub.poll(10)
            assert got is not None and got.envelope.payload == event.payload
            counters = broker.counters()
            assert counters["authors"] >= HOLDERS  # all held, none refused: under the cap
            assert counters["authors_refused_full"] == 0
        finally:
            for s in holders:
                s.close()
            sub.close()


@pytest.mark.parametrize(
    ("behaviour", "counter", "reason"),
    [
        ("trickle", "author_frame_timeouts", "did not deliver its frame within 1.5 s"),
        ("silent", "author_idle_timeouts", "author sent nothing for 0.5 s"),
    ],
)
def test_a_slow_author_is_cut_off_with_a_nak_and_counted(
    alerts, behaviour: str, counter: str, reason: str
) -> None:
    """A byte every 0.1 s kept an author thread forever (the 30 s timeout was per read); one
    that sends nothing now goes after ``idle_timeout``, one that trickles after
    ``frame_timeout``; meanwhile others publish."""
    (event,) = _events(alerts, 1)
    with VtpBroker(frame_timeout=1.5, idle_timeout=0.5) as broker:
        transport = get_transport(broker.url)
        sub = transport.open_subscriber()
        broker.wait_for_subscribers(1)
        slow = socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10)
        started = time.monotonic()
        if behaviour == "trickle":
            slow.sendall(struct.pack(">I", 10_000))
            while time.monotonic() - started < 10:
                readable, _, _ = select.select([slow], [], [], 0.1)
                if readable:
                    break  # the broker answered (or closed)
                try:
                    slow.send(b"x")
                except OSError:
                    break
        role, said = _answer(slow)
        cut_after = time.monotonic() - started
        closed = _closed_by_peer(slow)
        slow.close()
        pub = transport.open_publisher(timeout=10)
        pub.publish(event)
        got = sub.poll(10)
        counters = broker.counters()
        sub.close()
    assert role == "nak" and reason in said, said
    assert cut_after < 5.0 and closed
    assert counters[counter] == 1 and counters["authors"] == 0
    assert pub.acked == [0] and got is not None


def test_over_cap_connections_are_refused_while_a_subscriber_keeps_getting_events(
    alerts,
) -> None:
    """There was no cap on either port; now the connection past ``max_authors`` or
    ``max_subscribers`` is told the broker is full and closed at once, and counted."""
    first, second, third = _events(alerts, 3)
    with VtpBroker(max_authors=3, max_subscribers=1, idle_timeout=30) as broker:
        transport = get_transport(broker.url)
        sub = transport.open_subscriber()
        broker.wait_for_subscribers(1)
        pub = transport.open_publisher(timeout=10)
        idle = [
            socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10)
            for _ in range(2)
        ]
        pub.publish(first)  # the third slot: served
        got_first = sub.poll(10)
        idle.append(socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10))
        deadline = time.monotonic() + 5
        while broker.counters()["authors"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)

        started = time.monotonic()
        extra_author = socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10)
        author_answer = _answer(extra_author, timeout=5)
        author_closed = _closed_by_peer(extra_author)
        author_refused_s = time.monotonic() - started
        extra_author.close()
        refused_publisher = transport.open_publisher(timeout=10)
        refused_publisher.publish(second)  # an author with a whole frame is told why too

        extra_sub = socket.create_connection(("127.0.0.1", broker.broadcast_port), timeout=10)
        sub_answer = _answer(extra_sub, timeout=5)
        sub_closed = _closed_by_peer(extra_sub)
        extra_sub.close()
        assert broker.connected_subscribers() == 1

        for s in idle:
            s.close()
        deadline = time.monotonic() + 5
        while broker.counters()["authors"] and time.monotonic() < deadline:
            time.sleep(0.01)
        pub.publish(third)
        got_third = sub.poll(10)
        counters = broker.counters()
        sub.close()
    assert author_answer[0] == "nak" and "broker is full" in author_answer[1], author_answer
    assert author_closed and author_refused_s < 2.0
    assert refused_publisher.naks and "broker is full" in refused_publisher.naks[0][1]
    assert sub_answer[0] == "nak" and "broker is full" in sub_answer[1], sub_answer
    assert sub_closed
    assert counters["authors_refused_full"] == 2 and counters["subscribers_refused_full"] == 1
    assert got_first is not None and got_first.envelope.payload == first.payload
    assert got_third is not None and got_third.envelope.payload == third.payload
    assert pub.acked == [0, 2]


# -- item 9: a subscriber that never reads ----------------------------------------------------


@pytest.mark.parametrize(
    "budget",
    [{"subscriber_buffer": 20}, {"outbox_bytes": 400_000}],
    ids=["events", "bytes"],
)
def test_a_subscriber_that_never_reads_is_dropped_and_authors_never_wait(
    alerts, budget: dict
) -> None:
    """A full outbox blocked the author in put() for ack_timeout, holding the fan-out lock, so
    every author and subscriber stalled; now the stuck subscriber is dropped at once."""
    events = _events(alerts, 60)
    with VtpBroker(**budget) as broker:
        transport = get_transport(broker.url)
        normal = transport.open_subscriber()
        stuck = socket.create_connection(("127.0.0.1", broker.broadcast_port), timeout=10)
        broker.wait_for_subscribers(2)
        pub = transport.open_publisher(timeout=40)
        latencies = []
        for event in events:
            started = time.monotonic()
            pub.publish(event)
            latencies.append(time.monotonic() - started)
        got = list(drain(normal, len(events), timeout=20))
        stuck_closed = _closed_by_peer(stuck, timeout=5)
        still_connected = broker.connected_subscribers()
        stuck.close()
        normal.close()
        assert max(latencies) < 2.0, f"slowest ack took {max(latencies):.1f} s"
        assert pub.acked == list(range(len(events)))
        assert [r.envelope.payload for r in got] == [e.payload for e in events]
        assert stuck_closed and still_connected == 1  # the normal one stays
        counters = broker.counters()
    assert counters["slow_subscribers_dropped"] == 1
    assert any("outbox full" in reason for reason in broker.dropped), list(broker.dropped)


def test_a_subscriber_socket_that_takes_nothing_is_cut_off_by_the_write_timeout(alerts) -> None:
    """With acknowledgements not in the way (max_outstanding), the session writer blocked in
    sendall for as long as the subscriber did not read; now ``write_timeout`` ends it."""
    events = _events(alerts, 12, mode="embed")  # ~200 KB each: more than the socket buffers
    with VtpBroker(max_outstanding=1000, write_timeout=1.0) as broker:
        transport = get_transport(broker.url)
        normal = transport.open_subscriber()
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", broker.broadcast_port))
        broker.wait_for_subscribers(2)
        pub = transport.open_publisher(timeout=10)
        latencies = []
        for event in events:
            started = time.monotonic()
            pub.publish(event)
            latencies.append(time.monotonic() - started)
        got = list(drain(normal, len(events), timeout=20))
        deadline = time.monotonic() + 10
        while broker.counters()["subscriber_write_timeouts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        counters = broker.counters()
        stuck.close()
        normal.close()
    assert max(latencies) < 2.0, f"slowest ack took {max(latencies):.1f} s"
    assert [r.envelope.payload for r in got] == [e.payload for e in events]
    assert counters["subscriber_write_timeouts"] == 1 and counters["subscribers"] == 1
    assert any("write timed out" in reason for reason in broker.dropped), list(broker.dropped)


# -- item 13: DTDs in any encoding, and exceptions from the parser or the validator ---------------


def _with_dtd(good: bytes, encoding: str, bom: bytes = b"", entity_ref: bool = True) -> bytes:
    """``good`` re-declared in ``encoding`` with an internal DTD (and an entity reference)."""
    body = good.decode("utf-8").split("?>", 1)[1]
    if entity_ref:
        body = body.replace("<Who>", "<Who><Description>&e;</Description>", 1)
    name = "UTF-16" if encoding.startswith("utf-16") else "UTF-8"
    text = (
        f'<?xml version="1.0" encoding="{name}"?>'
        '<!DOCTYPE voe:VOEvent [<!ENTITY e "from the DTD">]>' + body
    )
    return bom + text.encode(encoding)


def test_a_dtd_in_any_encoding_is_refused_with_a_nak_and_never_forwarded(alerts) -> None:
    """A UTF-16 VOEvent with an internal DTD passed the byte search for ``<!DOCTYPE``: it was
    acked and forwarded verbatim, and with an entity reference the XSD validator raised in the
    author thread (no nak). Now the DTD is found as the parser reads it, in any encoding."""
    good, clean = (e.payload for e in _events(alerts, 2))
    hostile = {
        "utf-8": _with_dtd(good, "utf-8"),
        "utf-16-le-bom": _with_dtd(good, "utf-16-le", b"\xff\xfe"),
        "utf-16-be-bom": _with_dtd(good, "utf-16-be", b"\xfe\xff"),
        "utf-16-le-bom-no-reference": _with_dtd(good, "utf-16-le", b"\xff\xfe", False),
        "utf-16-be-bom-no-reference": _with_dtd(good, "utf-16-be", b"\xfe\xff", False),
    }
    undeclared = good.replace(b"<Who>", b"<Who><Description>&e;</Description>", 1)
    with VtpBroker() as broker:
        transport = get_transport(broker.url)
        sub = transport.open_subscriber()
        broker.wait_for_subscribers(1)
        answers = {}
        for name, data in [*hostile.items(), ("undeclared-entity", undeclared)]:
            with socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10) as s:
                s.sendall(_frame(data))
                try:
                    answers[name] = _answer(s)
                except (OSError, ValueError) as exc:
                    answers[name] = ("no answer", repr(exc))
        pub = transport.open_publisher(timeout=10)
        pub.publish(Envelope(payload=clean, content_type=VOEVENT, alert_id=1))
        got = list(drain(sub, 2, timeout=3))  # only the clean event may come
        sub.close()
    for name in hostile:
        role, reason = answers[name]
        assert role == "nak", (name, role, reason)
        assert reason.startswith("DTDs and entity declarations are not allowed"), (name, reason)
        assert "<!DOCTYPE VOEvent>" in reason or "<!DOCTYPE voe:VOEvent>" in reason, reason
    role, reason = answers["undeclared-entity"]
    assert role == "nak" and "Entity 'e' not defined" in reason, reason
    assert pub.acked == [1]  # the broker kept serving
    assert [r.envelope.payload for r in got] == [clean]  # and forwarded nothing else


def test_a_validator_that_raises_is_a_nak_not_a_dead_author_thread(alerts, monkeypatch) -> None:
    """Every exception of the parser or the validator becomes a nak with its reason."""
    from alertbench.transports import vtp
    from lxml import etree

    def crash(root: object) -> str | None:
        raise etree.XMLSchemaValidateError("Internal error in XML Schema validation.")

    first, second = (e.payload for e in _events(alerts, 2))
    with VtpBroker() as broker:
        monkeypatch.setattr(vtp, "xsd_error", crash)
        with socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10) as s:
            s.sendall(_frame(first))
            try:
                answer = _answer(s)
            except OSError as exc:
                answer = ("no answer", repr(exc))
        monkeypatch.undo()
        with socket.create_connection(("127.0.0.1", broker.receive_port), timeout=10) as s:
            s.sendall(_frame(second))
            after = _answer(s)
        assert answer[0] == "nak", answer
        assert "XMLSchemaValidateError" in answer[1] and "Internal error" in answer[1], answer
        assert after == ("ack", "")
        counters = broker.counters()
    assert counters["refused"] == 1 and counters["accepted"] == 1


# -- the subscriber side: a hostile broker ---------------------------------------------------


class _FakeBroker:
    """A listening socket that hands each connection our subscriber makes to a script."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def accept(self, timeout: float = 10.0) -> socket.socket:
        self.server.settimeout(timeout)
        conn, _ = self.server.accept()
        conn.settimeout(10)
        return conn

    def close(self) -> None:
        self.server.close()


def _voevent(ivorn: str) -> bytes:
    return (
        f'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0" '
        f'role="test" ivorn="{ivorn}"/>'
    ).encode()


def test_our_subscriber_reads_a_hostile_broker_incrementally_and_within_a_deadline() -> None:
    """A broker announcing 16 MiB - 1 made our subscriber allocate all of it at once, and a
    trickle held it forever; now it holds only what came, drops the connection after
    ``frame_timeout`` and reconnects."""
    fake = _FakeBroker()
    transport = get_transport(f"vtp://127.0.0.1:{fake.port}", frame_timeout=1.0)
    tracemalloc.start()
    try:
        sub = transport.open_subscriber(connect_timeout=0)
        conn = fake.accept()
        conn.sendall(struct.pack(">I", ANNOUNCED))
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 10:
            try:
                conn.send(b"x")
                # A cut shows up as end of file, or as a reset when our unread bytes were
                # still in its buffer: either way the subscriber dropped us.
                if select.select([conn], [], [], 0.1)[0] and not conn.recv(1):
                    cut = True
                    break
            except OSError:
                cut = True
                break
        cut_after = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    conn.close()
    again = fake.accept()  # it reconnects
    again.sendall(_frame(_voevent("ivo://x/y#7")))
    ack = _answer(again)
    got = sub.poll(5)
    sub.close()
    again.close()
    fake.close()
    assert cut and cut_after < 5.0
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MiB allocated for a frame not sent"
    assert any("after its first byte" in e for e in sub.errors), sub.errors
    assert ack[0] == "ack" and got is not None and got.envelope.alert_id == 7


def test_our_subscriber_survives_ivorns_that_are_no_alert_id() -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises, as does int() of 5,000 digits: such
    an IVORN from a broker killed our subscriber's thread."""
    fake = _FakeBroker()
    transport = get_transport(f"vtp://127.0.0.1:{fake.port}")
    sub = transport.open_subscriber(connect_timeout=0)
    conn = fake.accept()
    ivorns = ["ivo://x/y#²", "ivo://x/y#" + "9" * 5000, "ivo://x/y#8"]
    answers = []
    for ivorn in ivorns:
        conn.sendall(_frame(_voevent(ivorn)))
        answers.append(_answer(conn)[0])
    got = [sub.poll(5) for _ in ivorns]
    sub.close()
    conn.close()
    fake.close()
    assert answers == ["ack", "ack", "ack"]
    assert [r.envelope.alert_id if r else None for r in got] == [-1, -1, 8]


def test_broker_budget_options_are_declared_and_checked() -> None:
    """The budgets are options of the transport (with their defaults) and keywords of the
    broker, checked the same way; open_broker() serves a URL with them."""
    from alertbench.errors import ConfigError

    declared = get_transport("vtp://127.0.0.1:1?receive=2").capabilities.options
    for name in (
        "frame_timeout",
        "idle_timeout",
        "write_timeout",
        "max_authors",
        "max_subscribers",
        "subscriber_buffer",
        "outbox_bytes",
    ):
        assert name in declared and declared[name].default and declared[name].minimum
    with pytest.raises(ConfigError, match="max_authors"):
        VtpBroker(max_authors=0)
    transport = get_transport("vtp://127.0.0.1:0?max_subscribers=1&frame_timeout=2")
    with transport.open_broker() as broker:  # type: ignore[attr-defined]
        assert broker.max_subscribers == 1 and broker.frame_timeout == 2.0
        assert broker.max_authors == declared["max_authors"].default


def test_transport_message_never_fails_on_a_reason_quoting_odd_bytes() -> None:
    """A nak's reason may quote what a peer sent; characters XML cannot hold are replaced."""
    data = transport_message("nak", "", "ivo://x/y", result="bad byte \x00 and \x1b here")
    assert parse_message(data, 1 << 20).result == "bad byte ? and ? here"
