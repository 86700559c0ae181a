"""Reading a subscriber in tests: a bounded drain."""

from __future__ import annotations

from collections.abc import Iterator

from alertbench.transports.base import Received, Subscriber


def drain(subscriber: Subscriber, count: int, timeout: float) -> Iterator[Received]:
    """Up to ``count`` envelopes, stopping early after ``timeout`` seconds without one."""
    got = 0
    while got < count:
        item = subscriber.poll(timeout)
        if item is None:
            return
        got += 1
        yield item
