"""The gRPC server's stream budgets (issue 14, item 10): idle or hostile streams cannot starve it.

Before, 40 idle Subscribe (or Publish) streams took all 32 workers and a new subscriber got
nothing and no error. Now gRPC's ``maximum_concurrent_rpcs`` caps the streams below the number
of workers, each connection has a budget of its own, an idle Publish stream is closed, and a
refused subscriber says so and tries again. Every stream here is on loopback, counted, and
closed by the test; every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from alertbench.transports import grpc as grpc_transport
from alertbench.transports.base import Envelope, Start, get_transport
from alertbench.transports.grpc import AlertStreamServer, pb, pb_grpc

from alertbench.errors import ConfigError, TransportError
from tests.support.streams import drain

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""A channel with this has a connection of its own; without, a process's channels to one server
share one (gRPC's global subchannel pool)."""


def _env(i: int) -> Envelope:
    return Envelope(b"x" * 200, "application/octet-stream", i, sequence=i)


def _wait_for(what: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()) and time.monotonic() < deadline:
        time.sleep(step)
    return value


class IdleStreams:
    """``n`` streams that send and read nothing, on ``connections`` connections (round robin)."""

    def __init__(self, port: int, n: int, connections: int, kind: str = "subscribe") -> None:
        self.release = threading.Event()
        self.channels = [
            grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)
            for _ in range(connections)
        ]
        stubs = [pb_grpc.AlertStreamStub(c) for c in self.channels]
        self.calls: list[Any] = []
        for i in range(n):
            stub = stubs[i % connections]
            if kind == "subscribe":
                self.calls.append(stub.Subscribe(pb.SubscribeRequest()))
            else:
                self.calls.append(stub.Publish(self._nothing()))

    def _nothing(self) -> Iterator[Any]:
        self.release.wait(120)
        return
        yield

    def refused(self) -> list[Any]:
        return [
            c for c in self.calls if c.done() and c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ]

    def close(self) -> None:
        if self.release.is_set():
            return
        self.release.set()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


@contextmanager
def idle_streams(port: int, n: int, connections: int, kind: str = "subscribe") -> Iterator[Any]:
    streams = IdleStreams(port, n, connections, kind)
    try:
        yield streams
    finally:
        streams.close()


@pytest.mark.parametrize("kind", ["subscribe", "publish"])
@pytest.mark.parametrize("connections", [48, 1], ids=["own-connections", "one-connection"])
def test_a_pair_gets_alerts_through_while_48_idle_streams_are_open(kind, connections) -> None:
    """The finding itself, with the default settings: 48 idle streams (each on a connection of
    its own, or all on one) and a normal publisher and subscriber still exchange alerts."""
    with AlertStreamServer() as server, idle_streams(server.port, 48, connections, kind):
        time.sleep(0.5)  # the idle streams are in place (on the old server: every worker held)
        transport = get_transport(server.url)
        sub = transport.open_subscriber(Start.earliest())
        pub = transport.open_publisher()
        try:
            for i in range(20):
                pub.publish(_env(i))
            unacknowledged = pub.flush(10)
            got = [r.envelope.alert_id for r in drain(sub, 20, timeout=10)]
        finally:
            pub.close()
            sub.close()
        assert unacknowledged == 0
        assert got == list(range(20))
        assert sub.errors == []
        counters = server.counters()
    if connections == 1:  # one connection's budget: 8 held, the other 40 refused
        assert counters["refused_per_connection"] == 48 - server.max_streams_per_connection
    else:
        assert counters["refused"] == 0
        assert counters["peak_streams"] >= 48 + 2


def test_200_idle_streams_a_new_subscriber_is_served_or_told() -> None:
    """200 idle streams against the default cap (128): those over it are refused by gRPC with
    RESOURCE_EXHAUSTED, in bounded time; a new subscriber is either served or reports the
    refusal and keeps trying, and is served once the idle streams go."""
    with AlertStreamServer() as server:
        transport = get_transport(server.url)  # the defaults, back-off included
        pub = transport.open_publisher()  # holds one of the 128 before the flood
        with idle_streams(server.port, 200, connections=25) as idle:
            sub = transport.open_subscriber(Start.earliest())
            try:
                pub.publish(_env(0))
                assert pub.flush(10) == 0
                first = sub.poll(3.0)
                assert first is not None or any("RESOURCE_EXHAUSTED" in e for e in sub.errors), (
                    "the new subscriber got nothing and no error"
                )
                # Every idle stream was either admitted or refused, within bounded time.
                ours = 1 if first is None else 2  # the publisher, and the subscriber if served
                settled = _wait_for(
                    lambda: len(idle.refused()) + server.counters()["streams"] - ours >= 200, 20
                )
                assert settled, (len(idle.refused()), server.counters())
                counters = server.counters()
                assert counters["streams"] <= server.max_streams
                assert counters["refused_max_streams"] >= 200 - server.max_streams
                assert all(c.details() == "Concurrent RPC limit exceeded!" for c in idle.refused())
                if first is None:
                    assert sub.counters()["refused"] >= 1
            finally:
                idle.close()
            # The idle streams are gone: the subscriber (retrying with back-off) is served.
            if first is None:
                first = sub.poll(10)
            pub.publish(_env(1))
            assert pub.flush(10) == 0
            second = sub.poll(10)
            sub.close()
        pub.close()
    assert first is not None and first.envelope.alert_id == 0
    assert second is not None and second.envelope.alert_id == 1


def test_a_refused_subscriber_reports_it_and_retries_with_backoff() -> None:
    with AlertStreamServer(max_streams=2) as server:
        transport = get_transport(server.url, refused_backoff=0.2, refused_backoff_max=0.4)
        pub = transport.open_publisher()
        with idle_streams(server.port, 1, connections=1) as idle:  # the cap is now full
            time.sleep(0.3)
            sub = transport.open_subscriber(Start.earliest())
            assert _wait_for(lambda: sub.refused >= 1, 5)
            time.sleep(1.2)
            counted = sub.counters()
            refusals = counted["refused"]
            assert any(e.startswith("RESOURCE_EXHAUSTED: ") for e in sub.errors), sub.errors
            assert counted["disconnects"] == 0
            assert server.counters()["refused_max_streams"] >= refusals
            # Back-off 0.1-0.2 s, then 0.2-0.4 s (the cap), so at most ~7 tries in 1.5 s (a
            # client retrying in a tight loop would have made hundreds).
            assert 2 <= refusals <= 9, refusals
            idle.close()
            pub.publish(_env(7))
            assert pub.flush(10) == 0
            got = sub.poll(10)
            sub.close()
        pub.close()
    assert got is not None and got.envelope.alert_id == 7


def test_a_connection_over_its_budget_is_refused_with_the_reason() -> None:
    with AlertStreamServer(max_streams_per_connection=2) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_CONNECTION)
        stub = pb_grpc.AlertStreamStub(channel)
        held = [stub.Subscribe(pb.SubscribeRequest()) for _ in range(2)]
        assert _wait_for(lambda: server.counters()["streams"] == 2, 5)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Subscribe(pb.SubscribeRequest(), timeout=5))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_connection" in info.value.details()
        assert server.counters()["refused_per_connection"] == 1
        assert server.refused == 1
        # Subscribers of this process are not held to that connection's budget: each has its own.
        transport = get_transport(server.url)
        subs = [transport.open_subscriber(Start.earliest()) for _ in range(3)]
        pub = transport.open_publisher()
        pub.publish(_env(3))
        assert pub.flush(10) == 0
        got = [s.poll(10) for s in subs]
        for s in subs:
            s.close()
        pub.close()
        for call in held:
            call.cancel()
        channel.close()
        assert _wait_for(lambda: server.counters()["streams"] == 0, 5), server.counters()
    assert [g.envelope.alert_id if g else None for g in got] == [3, 3, 3]
    assert all(not s.errors for s in subs)


def test_idle_publish_streams_are_closed_after_the_timeout() -> None:
    with AlertStreamServer(max_streams=3, publish_idle_timeout=0.5) as server:
        with idle_streams(server.port, 3, connections=3, kind="publish") as idle:
            started = time.monotonic()
            assert _wait_for(lambda: all(c.done() for c in idle.calls), 10)
            took = time.monotonic() - started
            codes = {c.code() for c in idle.calls}
            details = {c.details() for c in idle.calls}
            trailers = [tuple(c.trailing_metadata() or ()) for c in idle.calls]
        counters = server.counters()
        # The cap was full of idle publishers; they are gone, so a subscriber is served.
        transport = get_transport(server.url)
        pub = transport.open_publisher()
        sub = transport.open_subscriber(Start.earliest())
        pub.publish(_env(5))
        assert pub.flush(10) == 0
        got = sub.poll(10)
        sub.close()
        pub.close()
    assert took < 5, took
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert all("idle" in d and "publish_idle_timeout" in d for d in details), details
    assert all(grpc_transport.IDLE_CLOSED in t for t in trailers), trailers
    assert counters["idle_closed"] == 3 and counters["streams"] == 0, counters
    assert got is not None and got.envelope.alert_id == 5


def test_a_publisher_goes_on_after_its_idle_stream_is_closed() -> None:
    """A quiet publisher is not an error: its next publish opens a new stream, and nothing is
    lost or sent twice."""
    with AlertStreamServer(publish_idle_timeout=0.3) as server:
        transport = get_transport(server.url)
        pub = transport.open_publisher()
        for i in range(3):
            pub.publish(_env(i))
        assert pub.flush(10) == 0
        assert _wait_for(lambda: server.counters()["idle_closed"] == 1, 5)
        for i in range(3, 6):
            pub.publish(_env(i))
        assert pub.flush(10) == 0
        sub = transport.open_subscriber(Start.earliest())
        got = [r.envelope.alert_id for r in drain(sub, 6, timeout=5)]
        extra = sub.poll(0.3)
        sub.close()
        counters = pub.counters()
        pub.close()
    assert got == list(range(6)) and extra is None
    assert counters["reopened"] == 1 and counters["acknowledged"] == 6


_FROZEN_CLIENT = """
import sys, time, grpc
from alertbench.transports.grpc import pb, pb_grpc
channel = grpc.insecure_channel(sys.argv[1])
call = pb_grpc.AlertStreamStub(channel).Subscribe(pb.SubscribeRequest())
print("subscribed", flush=True)
time.sleep(120)
"""


def test_the_server_notices_a_peer_that_stopped_answering() -> None:
    """Keepalive: a client that froze (SIGSTOP: its socket stays open, but nothing answers the
    server's pings) loses its stream, and the worker it held, after keepalive + timeout."""
    with AlertStreamServer(keepalive=0.5, keepalive_timeout=0.5) as server:
        client = subprocess.Popen(
            [sys.executable, "-c", _FROZEN_CLIENT, f"127.0.0.1:{server.port}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdout is not None and client.stdout.readline().strip() == "subscribed"
            assert _wait_for(lambda: server.connected_subscribers() == 1, 10)
            os.kill(client.pid, signal.SIGSTOP)
            gone = _wait_for(lambda: server.connected_subscribers() == 0, 15)
            streams = server.counters()["streams"]
        finally:
            client.kill()
            client.wait(10)
    assert gone, "the frozen client's stream is still held"
    assert streams == 0


_FROZEN_SERVER = """
import time
from alertbench.transports.grpc import AlertStreamServer
server = AlertStreamServer()
print(server.start(), flush=True)
time.sleep(120)
"""


def test_a_subscriber_notices_a_server_that_stopped_answering() -> None:
    """Keepalive, the other way: a subscriber of a frozen server (its socket open, nothing
    answering) reports the loss after keepalive + keepalive_timeout instead of waiting forever."""
    server = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        transport = get_transport(f"grpc://127.0.0.1:{port}", keepalive=5, keepalive_timeout=1)
        sub = transport.open_subscriber()
        time.sleep(0.3)
        os.kill(server.pid, signal.SIGSTOP)
        noticed = _wait_for(lambda: sub.errors, 20)
        sub.close()
    finally:
        server.kill()
        server.wait(10)
    assert noticed and noticed[0].startswith("UNAVAILABLE"), noticed


def test_budgets_are_checked_and_declared() -> None:
    with pytest.raises(ConfigError, match="must be more than max_streams"):
        AlertStreamServer(max_streams=32, workers=32)
    with pytest.raises(ConfigError, match="publish_idle_timeout"):
        AlertStreamServer(publish_idle_timeout=0)
    server = AlertStreamServer(max_streams=10)
    assert server.workers > server.max_streams  # an admitted stream always has its thread
    server.stop(0)
    declared = get_transport("grpc://127.0.0.1:1").capabilities.options
    for name in ("keepalive", "keepalive_timeout", "refused_backoff", "refused_backoff_max"):
        assert name in declared and declared[name].doc
    with pytest.raises(ConfigError, match="at least 5"):
        get_transport("grpc://127.0.0.1:1?keepalive=1")


def test_a_refused_publisher_raises() -> None:
    with AlertStreamServer(max_streams=1) as server, idle_streams(server.port, 1, 1):
        time.sleep(0.3)
        pub = get_transport(server.url).open_publisher()
        with pytest.raises(TransportError, match="Concurrent RPC limit exceeded"):
            for i in range(50):
                pub.publish(_env(i))
                time.sleep(0.05)
            pub.flush(5)
        pub.close()
