"""``memory://NAME``: an in-process broker per NAME, the reference every transport is read against.

It has every capability a transport here can declare except durability, in the fewest lines,
so that what a capability means is read here first: a log of envelopes numbered from 0, kept up
to ``retention`` of them; each subscriber is a cursor into it (fan-out), starting from the
latest, the earliest retained, a sequence number, a time or right after a position it received
(replay); each publish is acknowledged once it is in the log (per-message). An envelope is
evicted only when every live subscriber has read it, so a slow subscriber makes ``publish``
wait (backpressure) for up to ``publish_timeout`` seconds, then fail loudly. Nothing is copied:
the envelope published is the one received, so a benchmark over memory:// measures the harness.

A broker lives while a transport, publisher or subscriber of its NAME does; publisher and
subscribers must share the process (``interprocess=False``: the matrix cannot split them).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from alertbench.transports.base import (
    BaseTransport,
    Capabilities,
    CountsSubscribers,
    Envelope,
    LocalStream,
    Option,
    Received,
    Start,
)

from alertbench.errors import ConfigError, TransportError

_BROKERS: weakref.WeakValueDictionary[str, _Broker] = weakref.WeakValueDictionary()
_BROKERS_LOCK = threading.Lock()


class _Broker:
    """The log of one NAME and the cursors of its live subscribers, under one condition."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.log: collections.deque[tuple[int, Envelope]] = collections.deque()
        self.next = 0
        self.cursors: dict[int, int] = {}
        self.waiting = 0
        self.cond = threading.Condition()

    def first(self) -> int:
        return self.log[0][0] if self.log else self.next

    def append(self, envelope: Envelope, timeout: float, url: str) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.log) >= self.retention:
                oldest = self.log[0][0]
                if all(cursor > oldest for cursor in self.cursors.values()):
                    self.log.popleft()  # everyone has read it
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(
                        f"{url}: a subscriber has not read alert sequence {oldest} for "
                        f"{timeout:g} s and the retention ({self.retention}) is full"
                    )
                self.waiting += 1
                self.cond.wait(left)
                self.waiting -= 1
            sequence = self.next
            self.log.append((sequence, envelope))
            self.next += 1
            self.cond.notify_all()
            return sequence

    def start_at(self, start: Start, url: str) -> int:
        """The first sequence number a subscriber starting at ``start`` reads."""
        first = self.first()
        if start.kind == "latest":
            return self.next
        if start.kind == "earliest":
            return first
        if start.kind == "time":
            return next((s for s, e in self.log if e.t_sent_ns >= start.value), self.next)
        if start.kind == "offset":
            cursor = start.value
        elif start.kind == "after":
            position = start.position
            if isinstance(position, bool) or not isinstance(position, int):
                raise ConfigError(f"a memory:// position is a sequence number, not {position!r}")
            cursor = position + 1
        else:
            raise ConfigError(f"unknown start {start.kind!r}")
        if cursor < first:
            raise TransportError(f"{url}: sequence {cursor} is no longer retained (oldest {first})")
        return cursor


class MemoryTransport(BaseTransport):
    capabilities = Capabilities(
        replay=True,
        durable=False,
        fanout=True,
        backpressure=True,
        acknowledgement="per-message",
        slow_subscriber="backpressure",
        interprocess=False,
        options={
            "retention": Option(10_000, "envelopes kept for replay", "int", minimum=1),
            "publish_timeout": Option(
                30.0, "seconds a publish waits for a slow subscriber", "float", minimum=0
            ),
        },
    )
    variants: ClassVar[dict[str, dict[str, Any]]] = {"memory": {}}
    url_example = "memory://alerts"
    url_scheme = "memory"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        if self.path:
            raise ConfigError(f"{url}: a memory URL is memory://NAME, with no path")
        retention = self.options["retention"]
        with _BROKERS_LOCK:
            broker = _BROKERS.get(self.netloc)
            if broker is None:
                broker = _BROKERS[self.netloc] = _Broker(retention)
        if broker.retention != retention:
            raise ConfigError(f"{url}: this broker exists with retention={broker.retention}")
        self.broker = broker

    def open_publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def open_subscriber(self, start: Start | None = None) -> MemorySubscriber:
        return MemorySubscriber(self, start or Start.latest())

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False
    ) -> Iterator[LocalStream]:
        """A fresh NAME; ``tight`` retains 8 envelopes, so a slow subscriber blocks soon."""
        url = f"{cls.url_scheme}://{variant}-{uuid.uuid4().hex[:12]}"
        transport = cls(url + ("?retention=8" if tight else ""))  # the broker lives till exit
        yield LocalStream(variant, transport.url)


class MemoryPublisher(CountsSubscribers):
    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.published = 0

    def publish(self, envelope: Envelope) -> None:
        if not envelope.t_sent_ns:
            envelope = dataclasses.replace(envelope, t_sent_ns=time.time_ns())
        t = self.transport
        t.broker.append(envelope, t.options["publish_timeout"], t.url)
        self.published += 1

    def flush(self, timeout: float = 30.0) -> int:
        return 0  # every publish was acknowledged when it entered the log

    def connected_subscribers(self) -> int:
        with self.transport.broker.cond:
            return len(self.transport.broker.cursors)

    def counters(self) -> dict[str, int]:
        return {"published": self.published}

    def close(self) -> None:
        pass


class MemorySubscriber:
    def __init__(self, transport: MemoryTransport, start: Start) -> None:
        self.transport = transport
        self.broker = broker = transport.broker
        self.key = id(self)
        self.received = 0
        with broker.cond:
            broker.cursors[self.key] = broker.start_at(start, transport.url)

    def poll(self, timeout: float = 1.0) -> Received | None:
        broker = self.broker
        deadline = time.monotonic() + timeout
        with broker.cond:
            while True:
                cursor = broker.cursors.get(self.key)
                if cursor is None:
                    return None  # closed
                if cursor < broker.next:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                broker.cond.wait(left)
            sequence, envelope = broker.log[cursor - broker.first()]
            broker.cursors[self.key] = cursor + 1
            if broker.waiting:
                broker.cond.notify_all()
        self.received += 1
        origin = f"{self.transport.url}#{sequence}"
        return Received(envelope, time.time_ns(), origin=origin, position=sequence)

    def counters(self) -> dict[str, int]:
        return {"received": self.received}

    def close(self) -> None:
        with self.broker.cond:
            self.broker.cursors.pop(self.key, None)
            self.broker.cond.notify_all()
