"""The conformance suite: one class of tests, one subclass per registered transport kind.

A transport is done when it passes this suite, not when it has tests of its own. Every test reads
the transport's declared capabilities and holds it to them: replay must replay (from the
earliest, an offset, a time, after a position), fan-out must give every subscriber everything,
the slow-subscriber policy must be what happens, a durable transport must survive a server
restart, and a content type it does not carry must be refused before anything is sent.

The subclasses are generated from the registry (:func:`suite_classes`), so a transport added to
``TRANSPORTS`` is held to the suite with no other file changed. Each test gets a fresh local
stream from the transport's own recipe (``local_stream``); what many streams can share (one
Kafka cluster) is started once per class.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from alertbench.refimpl.codecs.base import get_serializer, serializer_classes
from alertbench.transports.base import (
    ANY_CONTENT_TYPE,
    SLOW_SUBSCRIBER_POLICIES,
    BaseTransport,
    Capabilities,
    Envelope,
    LocalStream,
    Publisher,
    Received,
    Start,
    Subscriber,
    TransportError,
    get_transport,
    kinds,
    local_stream,
    transport_class,
)

from alertbench.errors import ConfigError, ServerError
from tests.support.servers import unavailable

PREFERRED_CODEC = "avro"
CODEC_OPTIONS: dict[str, dict[str, Any]] = {"voevent": {"mode": "reference", "validate": False}}
LARGE_CODEC_OPTIONS: dict[str, dict[str, Any]] = {"voevent": {"mode": "embed", "validate": False}}
"""VOEvents carry a large cutout only embedded; by reference they stay small."""
LARGE = 5 * 1024 * 1024
SLOW_N = 120
SLOW_SIZE = 256 * 1024
STALL_S = 1.5


@functools.cache
def _alerts() -> list[dict[str, Any]]:
    from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig

    config = SimulationConfig(seed=7, alerts_per_visit_mean=20, alerts_per_visit_sigma=0.0)
    return list(AlertSimulator(config).visit(3).alerts())


def _with_id(alert: dict[str, Any], alert_id: int) -> dict[str, Any]:
    return dict(
        alert, diaSourceId=alert_id, diaSource=dict(alert["diaSource"], diaSourceId=alert_id)
    )


@functools.cache
def _encoded(codec_name: str, alert_id: int, distinct: bool) -> bytes:
    codec = _codec(codec_name)
    alerts = _alerts()
    alert = alerts[alert_id % len(alerts)]
    return codec.dumps(_with_id(alert, alert_id) if distinct else alert)


@functools.cache
def _codec(name: str, large: bool = False) -> Any:
    return get_serializer(name, **(LARGE_CODEC_OPTIONS if large else CODEC_OPTIONS).get(name, {}))


class Source:
    """What the suite publishes: Rubin alerts in a serialization the transport carries.

    A transport that carries any content type gets Avro alerts cycled from a small pool; one
    that carries only some types gets one distinct alert per id in a carried type (a VTP broker
    refuses bytes it has already seen).
    """

    def __init__(self, capabilities: Capabilities) -> None:
        self.any_type = ANY_CONTENT_TYPE in capabilities.content_types
        media_type_of = {name: cls.media_type for name, cls in serializer_classes().items()}
        names = [PREFERRED_CODEC, *media_type_of]
        carried = [n for n in names if capabilities.carries(media_type_of[n])]
        if not carried:
            pytest.fail(f"no registered serializer makes {capabilities.content_types}")
        self.codec_name = carried[0]
        self.content_type = media_type_of[self.codec_name]

    def payload(self, alert_id: int) -> bytes:
        return _encoded(self.codec_name, alert_id, not self.any_type)

    def envelope(self, alert_id: int) -> Envelope:
        return Envelope(
            payload=self.payload(alert_id),
            content_type=self.content_type,
            alert_id=alert_id,
            sequence=alert_id,
            t_intended_ns=time.time_ns(),
        )

    def large(self, alert_id: int, size: int) -> Envelope:
        """An envelope of at least ``size`` bytes (an alert with a cutout that large)."""
        filler = bytes([alert_id % 256]) * size
        if self.any_type:
            payload = filler
        else:
            alert = dict(_with_id(_alerts()[0], alert_id), cutoutScience=filler)
            payload = _codec(self.codec_name, large=True).dumps(alert)
        return Envelope(payload, self.content_type, alert_id, sequence=alert_id)

    def blob(self, alert_id: int, blob: bytes) -> Envelope:
        """A slow-subscriber test's envelope: a big shared blob where any bytes go."""
        if not self.any_type:
            return self.envelope(alert_id)
        return Envelope(blob, self.content_type, alert_id, sequence=alert_id)


class Collector:
    """Drains a subscriber in a thread (so a blocking transport never deadlocks the test)."""

    def __init__(self, subscriber: Subscriber, count: int, idle: float = 10.0) -> None:
        self.subscriber = subscriber
        self.count = count
        self.idle = idle
        self.items: list[Received] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while len(self.items) < self.count:
            item = self.subscriber.poll(self.idle)
            if item is None:
                return
            self.items.append(item)

    def join(self, timeout: float = 60.0) -> list[Received]:
        self._thread.join(timeout)
        return self.items

    @property
    def ids(self) -> list[int]:
        return [r.envelope.alert_id for r in self.items]


class Publishing:
    """Publishes envelopes in a thread, counting, so a test can see whether it is held back."""

    def __init__(self, publisher: Publisher, envelopes: list[Envelope]) -> None:
        self.publisher = publisher
        self.envelopes = envelopes
        self.count = 0
        self.error: BaseException | None = None
        self.left = -1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for envelope in self.envelopes:
                self.publisher.publish(envelope)
                self.count += 1
            self.left = self.publisher.flush(60)
        except BaseException as exc:  # reported by the test, with the count reached
            self.error = exc

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _publish(publisher: Publisher, source: Source, count: int, first_id: int = 0) -> list[int]:
    ids = []
    for alert_id in range(first_id, first_id + count):
        publisher.publish(source.envelope(alert_id))
        ids.append(alert_id)
    assert publisher.flush(30) == 0
    return ids


def _check_counters(counters: dict[str, int]) -> None:
    assert isinstance(counters, dict)
    for name, value in counters.items():
        assert isinstance(name, str) and isinstance(value, int) and value >= 0, (name, value)


def _hostile_peer(port: int, data: bytes) -> None:
    """Connect, send ``data``, linger a moment, leave; a refused connection is fine too."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        time.sleep(0.2)


class TransportSuite:
    """The tests every transport kind passes; subclasses set ``kind`` (see suite_class)."""

    __test__ = False
    kind: ClassVar[str] = ""
    idle_s: ClassVar[float] = 10.0
    """How long a collector waits for the next envelope before it gives up."""

    # -- fixtures -------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def shared(cls) -> Iterator[Any]:
        """What this kind's streams share (a Kafka cluster), started once for the class."""
        transport = transport_class(cls.kind)
        missing = [t for t in transport.local_tools if shutil.which(t) is None]
        if missing:
            unavailable(f"the {cls.kind} local stream needs {', '.join(missing)} on PATH")
        try:
            with transport.shared_resources() as shared:
                yield shared
        except ServerError as exc:
            pytest.fail(f"{cls.kind}: could not start what its streams share: {exc}")

    @pytest.fixture
    def stream(self, shared: Any) -> Iterator[LocalStream]:
        with local_stream(self.kind, shared=shared) as stream:
            yield stream

    @pytest.fixture
    def transport(self, stream: LocalStream) -> BaseTransport:
        transport = stream.transport()
        transport.prepare(partitions=1)
        return transport  # type: ignore[return-value]

    @pytest.fixture
    def source(self, transport: BaseTransport) -> Source:
        return Source(transport.capabilities)

    def _subscriber(self, stream: LocalStream, transport: Any, start: Start | None = None) -> Any:
        if start is None:
            return transport.open_subscriber(**stream.subscriber_options)
        return transport.open_subscriber(start, **stream.subscriber_options)

    # -- declarations ---------------------------------------------------------------------------

    def test_declarations_are_complete(self, transport: BaseTransport) -> None:
        caps = transport.capabilities
        assert self.kind in kinds()
        assert self.kind in type(transport).variants
        assert caps.acknowledgement in ("per-message", "batched", "none")
        assert caps.slow_subscriber in SLOW_SUBSCRIBER_POLICIES, caps.slow_subscriber
        assert caps.content_types, "a transport carries at least one content type"
        for name, option in caps.options.items():
            assert option.doc, f"option {name!r} says nothing about itself"

    def test_options_are_resolved_and_unknown_ones_refused(
        self, stream: LocalStream, transport: BaseTransport
    ) -> None:
        declared = transport.capabilities.options
        resolved = transport.resolved_options()
        assert set(resolved) == set(declared)
        for name, option in declared.items():
            if option.secret and resolved[name] is not None:
                assert resolved[name] == "***"
        if declared:
            name = sorted(declared)[0]
            with pytest.raises(ConfigError, match=f"did you mean '{re.escape(name)}'"):
                get_transport(stream.url, **{name + "x": "1"})
        with pytest.raises(ConfigError, match="has no option 'no_such_option'"):
            get_transport(stream.url, no_such_option="1")

    # -- delivery -------------------------------------------------------------------------------

    def test_completeness_and_order(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        sub = self._subscriber(stream, transport)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        collector = Collector(sub, 200, self.idle_s)
        sent = _publish(pub, source, 200)
        got = collector.join()
        pub_counters, sub_counters = pub.counters(), sub.counters()
        pub.close()
        sub.close()
        assert [r.envelope.alert_id for r in got] == sent  # every alert, in publish order
        for r in got:
            assert r.envelope.payload == source.payload(r.envelope.alert_id)  # byte for byte
            assert r.envelope.content_type == source.content_type
            if r.envelope.t_sent_ns:  # transports that carry it (VTP frames hold the packet only)
                assert r.t_received_ns >= r.envelope.t_sent_ns > 0
        _check_counters(pub_counters)
        _check_counters(sub_counters)
        assert pub_counters.get("published", 200) == 200
        assert sub_counters.get("received", 200) == 200

    def test_large_messages(self, stream: LocalStream, transport: Any, source: Source) -> None:
        big = [source.large(i, LARGE) for i in range(4)]
        sub = self._subscriber(stream, transport)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        collector = Collector(sub, len(big), idle=max(20.0, self.idle_s))
        for envelope in big:
            pub.publish(envelope)
        assert pub.flush(60) == 0
        got = collector.join()
        pub.close()
        sub.close()
        assert [r.envelope.payload for r in got] == [e.payload for e in big]

    def test_three_concurrent_subscribers(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        subs = [self._subscriber(stream, transport) for _ in range(3)]
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 3)
        n = 90
        fanout = transport.capabilities.fanout
        collectors = [Collector(s, n, self.idle_s if fanout else 5.0) for s in subs]
        sent = _publish(pub, source, n)
        results = [c.join() for c in collectors]
        pub.close()
        for s in subs:
            s.close()
        if fanout:
            for got in results:
                assert [r.envelope.alert_id for r in got] == sent
        else:  # load-balanced: together they received each alert exactly once
            union = sorted(r.envelope.alert_id for got in results for r in got)
            assert union == sent
            assert all(got for got in results), "every subscriber got a share"

    def test_subscriber_reconnect(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        replay = transport.capabilities.replay
        sub = self._subscriber(stream, transport, Start.earliest() if replay else None)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        first = Collector(sub, 30, self.idle_s)
        sent_a = _publish(pub, source, 30)
        got_a = first.join()
        assert [r.envelope.alert_id for r in got_a] == sent_a
        sub.close()
        if replay:
            # Publish while nobody listens, then resume right after the last position seen.
            sent_b = _publish(pub, source, 30, first_id=30)
            again = self._subscriber(stream, transport, Start.after(got_a[-1].position))
            got_b = Collector(again, 30, self.idle_s).join()
            assert [r.envelope.alert_id for r in got_b] == sent_b
        else:
            deadline = time.monotonic() + 10
            while stream.connected_subscribers(pub) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not stream.connected_subscribers(pub), "the subscriber's leaving went unseen"
            again = self._subscriber(stream, transport)
            stream.wait_for_subscribers(pub, 1)
            collector = Collector(again, 30, self.idle_s)
            sent_b = _publish(pub, source, 30, first_id=30)
            assert collector.join() and collector.ids == sent_b
        again.close()
        pub.close()

    def test_publisher_restart(self, stream: LocalStream, transport: Any, source: Source) -> None:
        sub = self._subscriber(stream, transport)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        collector = Collector(sub, 40, max(15.0, self.idle_s))
        sent = _publish(pub, source, 20)
        pub.close()
        time.sleep(0.2)
        pub = transport.open_publisher()  # same address: a new process would do the same
        stream.wait_for_subscribers(pub, 1)  # brokerless: the subscriber reconnects on its own
        sent += _publish(pub, source, 20, first_id=20)
        got = collector.join()
        pub.close()
        sub.close()
        assert [r.envelope.alert_id for r in got] == sent

    # -- replay ---------------------------------------------------------------------------------

    def test_replay_as_declared(self, stream: LocalStream, transport: Any, source: Source) -> None:
        starts = [Start.earliest(), Start.offset(3), Start.time(time.time_ns()), Start.after(2)]
        if not transport.capabilities.replay:
            for start in starts:
                with pytest.raises(TransportError, match="no replay"):
                    self._subscriber(stream, transport, start)
            return
        pub = transport.open_publisher()
        sent = _publish(pub, source, 10)  # nobody is subscribed yet
        time.sleep(0.05)  # Kafka's record times are milliseconds
        cut = time.time_ns()
        time.sleep(0.05)
        sent += _publish(pub, source, 10, first_id=10)
        pub.close()

        def read(start: Start, count: int) -> list[Received]:
            sub = self._subscriber(stream, transport, start)
            got = Collector(sub, count, self.idle_s).join()
            sub.close()
            return got

        everything = read(Start.earliest(), 20)
        assert [r.envelope.alert_id for r in everything] == sent
        assert [r.envelope.alert_id for r in read(Start.offset(5), 15)] == sent[5:]
        assert [r.envelope.alert_id for r in read(Start.time(cut), 10)] == sent[10:]
        after = read(Start.after(everything[12].position), 7)
        assert [r.envelope.alert_id for r in after] == sent[13:]
        with pytest.raises(ConfigError):
            Start.after(None)

    # -- content types ---------------------------------------------------------------------------

    def test_content_types_as_declared(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        sub = self._subscriber(stream, transport)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        collector = Collector(sub, 2, self.idle_s)
        odd = "application/x-conformance-test; v=1"
        if source.any_type:
            pub.publish(Envelope(b"\x00odd\xff", odd, 1, sequence=1))
            pub.publish(source.envelope(2))
            expected = [(1, odd), (2, source.content_type)]
        else:
            assert not transport.capabilities.carries(odd)
            with pytest.raises(ConfigError, match="carries only"):
                pub.publish(Envelope(b"\x00odd\xff", odd, 1, sequence=1))
            pub.publish(source.envelope(2))
            pub.publish(source.envelope(3))
            expected = [(2, source.content_type), (3, source.content_type)]
        assert pub.flush(30) == 0
        got = collector.join()
        pub.close()
        sub.close()
        assert [(r.envelope.alert_id, r.envelope.content_type) for r in got] == expected

    # -- hostile peers ---------------------------------------------------------------------------

    def test_hostile_peers_do_not_stop_the_stream(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        sub = self._subscriber(stream, transport)
        pub = transport.open_publisher()
        stream.wait_for_subscribers(pub, 1)
        for port in stream.ports:
            _hostile_peer(port, b"\xff" * 100 + b"GET / HTTP/1.1\r\n\r\nnot this protocol")
            _hostile_peer(port, struct.pack(">I", 64 * 1024 * 1024) + b"x" * 100)
            _hostile_peer(port, struct.pack(">I", 5000) + b"only part of it")
        time.sleep(0.3)
        collector = Collector(sub, 20, self.idle_s)
        sent = _publish(pub, source, 20, first_id=500)
        got = collector.join()
        pub.close()
        sub.close()
        assert [r.envelope.alert_id for r in got] == sent

    # -- a slow subscriber ------------------------------------------------------------------------

    def test_slow_subscriber_gets_the_declared_policy(self, shared: Any) -> None:
        with local_stream(self.kind, shared=shared, tight=True) as tight:
            transport: Any = tight.transport()
            transport.prepare(partitions=1)
            caps = transport.capabilities
            policy = caps.slow_subscriber
            source = Source(caps)
            slow = self._subscriber(tight, transport)
            fast = transport.open_subscriber() if policy == "disconnect" else None
            pub = transport.open_publisher()
            tight.wait_for_subscribers(pub, 2 if fast else 1)
            blob = bytes(SLOW_SIZE)
            envelopes = [source.blob(i, blob) for i in range(SLOW_N)]
            fast_collector = Collector(fast, SLOW_N, self.idle_s) if fast else None
            publishing = Publishing(pub, envelopes)
            time.sleep(STALL_S)  # the slow subscriber reads nothing meanwhile
            reached = publishing.count
            try:
                self._hold_to_policy(policy, slow, pub, publishing, reached, source, fast_collector)
            finally:
                publishing.join(30)
                pub.close()
                slow.close()
                if fast is not None:
                    fast.close()

    def _hold_to_policy(
        self,
        policy: str,
        slow: Any,
        pub: Any,
        publishing: Publishing,
        reached: int,
        source: Source,
        fast: Collector | None,
    ) -> None:
        everything = list(range(SLOW_N))
        if policy == "backpressure":
            assert reached < SLOW_N, "a subscriber that read nothing did not slow the publisher"
            got = Collector(slow, SLOW_N, self.idle_s).join(120)
            assert publishing.join(60) and publishing.error is None, publishing.error
            assert [r.envelope.alert_id for r in got] == everything  # nothing lost
        elif policy == "buffer (broker)":
            assert publishing.join(60) and publishing.error is None, publishing.error
            assert publishing.count == SLOW_N and publishing.left == 0
            got = Collector(slow, SLOW_N, self.idle_s).join(120)
            assert [r.envelope.alert_id for r in got] == everything
        elif policy == "disconnect":
            assert publishing.join(60) and publishing.error is None, publishing.error
            assert publishing.count == SLOW_N  # the publisher went on
            assert fast is not None and fast.join(60) and fast.ids == everything  # others too
            got = Collector(slow, SLOW_N, idle=3.0).join(60)
            assert len(got) < SLOW_N, "the slow subscriber was neither slowed nor cut off"
            assert slow.counters().get("disconnects", 0) >= 1, slow.counters()
        elif policy in ("drop-newest", "drop-oldest"):
            assert publishing.join(60) and publishing.error is None, publishing.error
            got = Collector(slow, SLOW_N, idle=2.0).join(60)
            # A few more, one at a time, so that a loss at the end shows as a gap too.
            trailer = list(range(SLOW_N, SLOW_N + 5))
            for alert_id in trailer:
                pub.publish(source.envelope(alert_id))
                item = slow.poll(self.idle_s)
                seen = item.envelope.alert_id if item is not None else None
                assert seen == alert_id, f"trailer {alert_id}: got {seen} after {len(got)} alerts"
            dropped = slow.counters().get("dropped", -1)
            assert dropped > 0, "nothing was dropped for a subscriber that read nothing"
            assert len(got) + len(trailer) + dropped == SLOW_N + len(trailer)  # all accounted
        else:
            pytest.fail(f"no test for slow-subscriber policy {policy!r}")

    # -- durability ------------------------------------------------------------------------------

    def test_durable_across_a_server_restart(
        self, stream: LocalStream, transport: Any, source: Source
    ) -> None:
        assert stream.restart is not None, "durable, but its local stream cannot restart"
        pub = transport.open_publisher()
        sent = _publish(pub, source, 30)
        pub.close()
        stream.restart()
        sub = self._subscriber(stream, transport, Start.earliest())
        got = Collector(sub, 30, max(30.0, self.idle_s)).join(180)
        sub.close()
        assert [r.envelope.alert_id for r in got] == sent


def suite_class(kind: str, module: str = __name__, **attributes: Any) -> type[TransportSuite]:
    """The suite for one kind, as a test class pytest collects (``Test_zmq_pushpull``)."""
    name = "Test_" + re.sub(r"\W", "_", kind)
    namespace = {"kind": kind, "__test__": True, "__module__": module, **attributes}
    if not transport_class(kind).capabilities.durable:
        # Held only to what it declares: no durability test (rather than a skip) where none is
        # promised.
        namespace["test_durable_across_a_server_restart"] = None
    cls = type(name, (TransportSuite,), namespace)
    cls.__qualname__ = name
    return cls


def suite_classes(
    module: str = __name__, only: list[str] | None = None, **attributes: Any
) -> dict[str, type[TransportSuite]]:
    """One suite class per registered kind (or per kind in ``only``), by class name."""
    classes = [suite_class(k, module, **attributes) for k in (only or kinds())]
    return {cls.__name__: cls for cls in classes}
