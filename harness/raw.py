"""Raw-library baselines: what each transport's own library moves with nothing of ours around it.

A transport's capacity means little alone: 900 alerts/s is good for a library that can do 1,000
and poor for one that can do 9,000. Each baseline here moves the same pre-encoded payloads with
the same shape as an engine run in pre-encoded mode (one publisher in this process, N
subscribers each in a process of its own, started and subscribed before the clock starts) and
the same figure: alerts over the time from the first send to the last receipt at any
subscriber. What is left out is what the transport adds: envelopes and headers, per-alert
bookkeeping, acknowledgements, retention, dedupe, budgets.

- ``socket``: length-prefixed frames, one ``sendmsg`` per frame and subscriber, ``recv_into``
  one preallocated buffer (the floor for tcp and for VTP, which is framed TCP);
- ``pyzmq-pubsub`` and ``pyzmq-pushpull``: one ``send`` per alert, pyzmq's defaults
  (zero-copy above its copy threshold), high-water marks that hold the run;
- ``grpcio``: one server-streaming call per subscriber with bytes passed through (no protobuf
  message), each alert one stream message, no acknowledgements;
- ``confluent-kafka``: a producer with the Kafka transport's own settings (acks=all,
  idempotent, lz4, linger, batch size) and no headers; each subscriber a consumer of its own
  group reading with ``consume()`` in batches.

Every loop is bounded: each subscriber stops at its count or after ``timeout`` s, and the
publisher waits at most that long for subscribers to be ready.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from alertbench.errors import ConfigError, TransportError

_SPAWN = multiprocessing.get_context("spawn")
_FRAME = struct.Struct(">I")
READY_S = 60.0
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class RawResult:
    """One baseline run: the same figure an engine run reports as ``alerts_per_second``."""

    library: str
    subscribers: int
    alerts_sent: int
    alerts_received: int
    """Distinct alerts received (fan-out: by every subscriber; shared: by the subscribers
    together), counted the way the engine counts them."""
    seconds: float
    alerts_per_second: float
    publisher_cpu_seconds: float
    subscriber_cpu_seconds: list[float]
    received_per_subscriber: list[int]


# -- the shape every baseline shares ----------------------------------------------------------


def _cpu() -> float:
    return time.process_time()


def _report(out: Any, count: int, last_ns: int, cpu0: float) -> None:
    out.put({"count": count, "last_ns": last_ns, "cpu_seconds": _cpu() - cpu0})


class _Subscribers:
    """N subscriber processes running ``target(index, ready, out, *args)``; each puts one
    report ``{count, last_ns, cpu_seconds}`` (or ``{error}``) on ``out``."""

    def __init__(self, target: Callable[..., None], n: int, *args: Any) -> None:
        self.out: Any = _SPAWN.Queue()
        self.ready = [_SPAWN.Event() for _ in range(n)]
        self.procs = [
            _SPAWN.Process(
                target=_entry,
                args=(target, k, self.ready[k], self.out, *args),
                daemon=True,
                name=f"alertbench-raw-{k}",
            )
            for k in range(n)
        ]
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        for k, event in enumerate(self.ready):
            if not event.wait(max(deadline - time.monotonic(), 0.01)):
                raise TransportError(f"raw subscriber {k} was not ready within {timeout:g} s")

    def reports(self, timeout: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        for _ in self.procs:
            try:
                got.append(self.out.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                raise TransportError(
                    f"{len(self.procs) - len(got)} raw subscriber(s) did not report "
                    f"within {timeout:g} s"
                ) from None
        errors = [r["error"] for r in got if "error" in r]
        if errors:
            raise TransportError("; ".join(errors))
        return got

    def close(self) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def _result(
    library: str, n: int, fanout: bool, t0: int, cpu: float, reports: list[dict[str, Any]]
) -> RawResult:
    counts = [r["count"] for r in reports]
    received = min(counts) if fanout else min(sum(counts), n)
    last = max(r["last_ns"] for r in reports)
    seconds = max((last - t0) / 1e9, 1e-9)
    return RawResult(
        library=library, subscribers=len(reports), alerts_sent=n, alerts_received=received,
        seconds=seconds, alerts_per_second=received / seconds, publisher_cpu_seconds=cpu,
        subscriber_cpu_seconds=[r["cpu_seconds"] for r in reports], received_per_subscriber=counts,
    )  # fmt: skip


def _entry(body: Callable[..., None], index: int, ready: Any, out: Any, *args: Any) -> None:
    """A subscriber process: ``body``'s failure becomes a report, so the publisher never
    waits on a subscriber that is gone."""
    try:
        body(index, ready, out, *args)
    except Exception as exc:  # reported to the parent, which raises it
        out.put({"error": f"raw subscriber {index}: {type(exc).__name__}: {exc}"})


# -- a raw socket -----------------------------------------------------------------------------


def _socket_subscriber(index: int, ready: Any, out: Any, port: int, n: int, timeout: float) -> None:
    cpu0 = _cpu()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    ready.set()
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    have = start = count = 0
    last = 0
    while count < n:
        if start and have == len(buf):
            view[: have - start] = view[start:have]  # keep the partial frame, drop the rest
            have -= start
            start = 0
        got = sock.recv_into(view[have:])
        if not got:
            break
        have += got
        while have - start >= 4:
            (size,) = _FRAME.unpack_from(buf, start)
            if have - start - 4 < size:
                if size + 4 > len(buf):
                    raise TransportError(f"frame of {size:,} bytes over the buffer")
                break
            start += 4 + size
            count += 1
            last = time.time_ns()
        if start == have:
            start = have = 0
    sock.close()
    _report(out, count, last, cpu0)


def raw_socket(
    payloads: Sequence[bytes], n: int, subscribers: int, timeout: float = 120.0
) -> RawResult:
    """Length-prefixed frames over TCP to each subscriber (fan-out)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=subscribers)
    server.settimeout(READY_S)
    port = server.getsockname()[1]
    subs = _Subscribers(_socket_subscriber, subscribers, port, n, timeout)
    conns: list[socket.socket] = []
    try:
        conns = [server.accept()[0] for _ in range(subscribers)]
        subs.wait_ready()
        headers = [_FRAME.pack(len(p)) for p in payloads]
        cpu0, t0 = _cpu(), time.time_ns()
        for i in range(n):
            k = i % len(payloads)
            for conn in conns:
                parts = [headers[k], payloads[k]]
                sent = conn.sendmsg(parts)
                total = 4 + len(payloads[k])
                if sent < total:  # a partial send: the rest, in order
                    conn.sendall(b"".join(parts)[sent:])
        cpu = _cpu() - cpu0
        return _result("socket", n, True, t0, cpu, subs.reports(timeout))
    finally:
        for conn in conns:
            conn.close()
        server.close()
        subs.close()


# -- raw pyzmq --------------------------------------------------------------------------------


def _zmq_subscriber(
    index: int, ready: Any, out: Any, pattern: str, n: int, timeout: float, total: Any
) -> None:
    import zmq

    cpu0 = _cpu()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB if pattern == "pubsub" else zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    if pattern == "pubsub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    out.put({"port": port, "index": index})
    count = 0
    last = 0
    deadline = time.monotonic() + timeout
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while time.monotonic() < deadline:
        if pattern == "pushpull" and total.value >= n:
            break
        if pattern == "pubsub" and count >= n:
            break
        if not poller.poll(100):
            continue
        msg = sock.recv(copy=False)
        if len(msg) == 0:  # the publisher's hello: this subscription is in place
            ready.set()
            continue
        count += 1
        last = time.time_ns()
        if pattern == "pushpull":
            with total.get_lock():
                total.value += 1
    sock.close()
    ctx.term()
    _report(out, count, last, cpu0)


def raw_pyzmq(
    payloads: Sequence[bytes], n: int, subscribers: int, pattern: str = "pubsub",
    timeout: float = 120.0,
) -> RawResult:  # fmt: skip
    """PUB/SUB (fan-out) or PUSH/PULL (shared); the publisher connects to each subscriber's
    port, so every pipe exists before the first send, and says hello (an empty message) until
    each subscriber has heard it (a SUB's subscription takes a moment to reach the PUB)."""
    import zmq

    if pattern not in ("pubsub", "pushpull"):
        raise ConfigError(f"pattern is pubsub or pushpull, not {pattern!r}")
    total = _SPAWN.Value("q", 0)
    subs = _Subscribers(_zmq_subscriber, subscribers, pattern, n, timeout, total)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB if pattern == "pubsub" else zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        for _ in range(subscribers):
            port = subs.out.get(timeout=READY_S)
            if "error" in port:
                raise TransportError(port["error"])
            sock.connect(f"tcp://127.0.0.1:{port['port']}")
        deadline = time.monotonic() + READY_S
        while not all(e.is_set() for e in subs.ready):
            if time.monotonic() > deadline:
                raise TransportError("raw zmq subscribers did not hear the publisher")
            if pattern == "pubsub":
                sock.send(b"")
            else:  # PUSH round-robins: one hello per subscriber not yet ready
                for event in subs.ready:
                    if not event.is_set():
                        sock.send(b"")
            time.sleep(0.02)
        cpu0, t0 = _cpu(), time.time_ns()
        for i in range(n):
            sock.send(payloads[i % len(payloads)])
        cpu = _cpu() - cpu0
        return _result(f"pyzmq-{pattern}", n, pattern == "pubsub", t0, cpu, subs.reports(timeout))
    finally:
        sock.close()
        ctx.term()
        subs.close()


# -- raw grpcio -------------------------------------------------------------------------------

_METHOD = "/alertbench.raw.Stream/Alerts"


def _grpc_subscriber(index: int, ready: Any, out: Any, target: str, n: int, timeout: float) -> None:
    import grpc

    cpu0 = _cpu()
    options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_stream(_METHOD)(b"", timeout=timeout)
        ready.set()
        count = last = 0
        for _ in call:
            count += 1
            last = time.time_ns()
            if count >= n:
                break
        call.cancel()
    _report(out, count, last, cpu0)


class _Log:
    """The publisher's alerts, appended once and read by every stream at its own pace."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.cond = threading.Condition()
        self.streams = 0
        self.closed = False

    def append(self, item: bytes) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def follow(self, n: int) -> Iterator[bytes]:
        with self.cond:
            self.streams += 1
            self.cond.notify_all()
        i = 0
        while i < n and not self.closed:
            with self.cond:
                while len(self.items) <= i and not self.closed:
                    self.cond.wait(0.5)
                upto = len(self.items)
            yield from self.items[i:upto]
            i = upto


def raw_grpcio(
    payloads: Sequence[bytes], n: int, subscribers: int, timeout: float = 120.0
) -> RawResult:
    """A server-streaming call per subscriber, served by a grpcio server in this process."""
    import grpc

    log = _Log()

    def alerts(request: bytes, context: Any) -> Iterator[bytes]:
        return log.follow(n)

    handler = grpc.method_handlers_generic_handler(
        "alertbench.raw.Stream", {"Alerts": grpc.unary_stream_rpc_method_handler(alerts)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=subscribers + 2),
        handlers=[handler],
        options=[("grpc.max_send_message_length", MAX_MESSAGE)],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    subs = _Subscribers(_grpc_subscriber, subscribers, f"127.0.0.1:{port}", n, timeout)
    try:
        subs.wait_ready()
        deadline = time.monotonic() + READY_S
        with log.cond:
            while log.streams < subscribers:
                if not log.cond.wait(max(deadline - time.monotonic(), 0.01)):
                    raise TransportError("raw gRPC subscribers did not open their streams")
        cpu0, t0 = _cpu(), time.time_ns()
        for i in range(n):
            log.append(payloads[i % len(payloads)])
        reports = subs.reports(timeout)
        cpu = _cpu() - cpu0  # the server's threads are this process: its CPU is the publisher's
        return _result("grpcio", n, True, t0, cpu, reports)
    finally:
        log.closed = True
        with log.cond:
            log.cond.notify_all()
        server.stop(1)
        subs.close()


# -- raw confluent-kafka ----------------------------------------------------------------------


def _kafka_subscriber(
    index: int, ready: Any, out: Any, bootstrap: str, topic: str, n: int, timeout: float
) -> None:
    from confluent_kafka import Consumer

    cpu0 = _cpu()
    assigned = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"alertbench-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": MAX_MESSAGE,
            "max.partition.fetch.bytes": MAX_MESSAGE,
        }
    )
    consumer.subscribe([topic], on_assign=lambda c, p: assigned.set())
    deadline = time.monotonic() + timeout
    count = last = 0
    early = 0
    while not assigned.is_set() and time.monotonic() < deadline:
        early += sum(1 for m in consumer.consume(100, 0.1) if m.error() is None)
    ready.set()
    count = early
    while count < n and time.monotonic() < deadline:
        batch = consumer.consume(500, 0.2)
        got = sum(1 for m in batch if m.error() is None)
        if got:
            count += got
            last = time.time_ns()
    consumer.close()
    _report(out, count, last, cpu0)


def raw_kafka(
    payloads: Sequence[bytes], n: int, subscribers: int, bootstrap: str, partitions: int = 3,
    producer_settings: dict[str, Any] | None = None, timeout: float = 180.0,
) -> RawResult:  # fmt: skip
    """A producer to a fresh topic and one consumer group per subscriber (fan-out)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"alertbench-raw-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    done = admin.create_topics([NewTopic(topic, partitions, 1)])
    done[topic].result(60)
    settings = {
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "compression.type": "lz4", "linger.ms": 5, "batch.size": 1_000_000,
        "message.max.bytes": MAX_MESSAGE, "queue.buffering.max.kbytes": 512 * 1024,
        **(producer_settings or {}),
    }  # fmt: skip
    producer = Producer(settings)
    subs = _Subscribers(_kafka_subscriber, subscribers, bootstrap, topic, n, timeout)
    try:
        subs.wait_ready(timeout)
        cpu0, t0 = _cpu(), time.time_ns()
        for i in range(n):
            payload = payloads[i % len(payloads)]
            while True:
                try:
                    producer.produce(topic, payload, key=str(i).encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        left = producer.flush(timeout)
        if left:
            raise TransportError(f"raw Kafka producer: {left} alerts not delivered")
        cpu = _cpu() - cpu0
        return _result("confluent-kafka", n, True, t0, cpu, subs.reports(timeout))
    finally:
        subs.close()
        with contextlib.suppress(Exception):
            admin.delete_topics([topic])[topic].result(30)


BASELINES = ("socket", "pyzmq-pubsub", "pyzmq-pushpull", "grpcio", "confluent-kafka")
