"""Decode what a subscriber receives, by the content type each message carries.

A message that is not valid for its declared content type (or declares none we know) is reported
with where it came from (for Kafka, topic/partition@offset) and skipped: one bad packet must not
stop a broker's stream, and it must be findable afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from alertbench.refimpl.codecs.base import Alert, Serializer, get_serializer, serializer_name_for
from alertbench.transports.base import Received, Subscriber

from alertbench.errors import AlertbenchError

log = logging.getLogger(__name__)


@dataclass
class Rejected:
    origin: str
    alert_id: int
    content_type: str
    reason: str


@dataclass
class AlertReader:
    """Wraps a subscriber; yields (alert, received) and keeps the rejects."""

    subscriber: Subscriber
    rejected: list[Rejected] = field(default_factory=list)
    _serializers: dict[str, Serializer] = field(default_factory=dict)

    def _serializer(self, content_type: str) -> Serializer:
        name = serializer_name_for(content_type)
        if name not in self._serializers:
            self._serializers[name] = get_serializer(name)
        return self._serializers[name]

    def read(self, count: int, idle_timeout: float = 10.0) -> Iterator[tuple[Alert, Received]]:
        """Up to ``count`` decoded alerts; stops after ``idle_timeout`` s with nothing new."""
        got = 0
        while got < count:
            received = self.subscriber.poll(idle_timeout)
            if received is None:
                return
            env = received.envelope
            try:
                alert = self._serializer(env.content_type).loads(env.payload)
            except AlertbenchError as exc:
                reject = Rejected(received.origin, env.alert_id, env.content_type, str(exc))
                self.rejected.append(reject)
                log.warning(
                    "skipped message at %s (alert id %s): %s", received.origin, env.alert_id, exc
                )
                continue
            got += 1
            yield alert, received
