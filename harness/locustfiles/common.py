"""The locust user shared by every locustfile: publish alerts, receive them, report both.

Each locust user owns one stream over its transport (its own publisher and subscriber, and its
own server, port or topic where the transport needs one: the transport's own local-stream
recipe, :func:`alertbench.transports.base.local_stream`), so users are independent and locust's
distributed mode needs nothing shared. A locustfile names its transport kind and nothing else.
Two request events are fired:

* ``publish``: the time ``publish()`` took, with the encoded alert's size;
* ``receive``: end-to-end latency, from the moment the alert was handed to the transport to the
  moment the subscriber had it decoded, with a decode failure reported as a failure.

Locust keeps response times as milliseconds and rounds them in its percentile tables, so
sub-millisecond loopback latencies read as 0-1 ms there; ``alertbench run``/``matrix`` record
microseconds in HdrHistogram for the published figures. Locust runs users as greenlets: every
blocking call here is bounded (``poll(0)`` then a cooperative sleep), so one user never stalls
the others.

Settings come from the environment, so the same file runs locally, headless and distributed:
``ALERTBENCH_SERIALIZER`` (avro), ``ALERTBENCH_RATE`` (alerts/s per user, 50),
``ALERTBENCH_POOL`` (distinct simulated alerts, 50), and locust's ``--host`` for transports that
need a server address (Kafka: ``kafka://127.0.0.1:9092``).
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import ExitStack
from typing import Any

import gevent
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.transports.base import Envelope, local_stream
from locust import User, constant_throughput, task

from alertbench.errors import ConfigError

SERIALIZER = os.environ.get("ALERTBENCH_SERIALIZER", "avro")
RATE = float(os.environ.get("ALERTBENCH_RATE", "50"))
POOL = int(os.environ.get("ALERTBENCH_POOL", "50"))


@functools.cache
def encoded_pool() -> tuple[list[bytes], str]:
    """Simulated and encoded once per locust process, shared by its users."""
    serializer = get_serializer(SERIALIZER)
    return [serializer.dumps(a) for a in alert_pool(POOL, seed=1)], serializer.content_type


class AlertStreamUser(User):
    abstract = True
    transport_kind = ""
    wait_time = constant_throughput(RATE)

    def stream_options(self) -> dict[str, Any]:
        """Keywords for the transport's local-stream recipe (Kafka: the cluster to use)."""
        return {}

    def on_start(self) -> None:
        self.payloads, self.content_type = encoded_pool()
        self.serializer = get_serializer(SERIALIZER)
        self._stack = ExitStack()
        self.stream = self._stack.enter_context(
            local_stream(self.transport_kind, **self.stream_options())
        )
        self.url = self.stream.url
        transport = self.stream.transport()
        self.subscriber = transport.open_subscriber()
        self.publisher = transport.open_publisher()
        self.sequence = 0
        self._running = True
        self.stream.wait_for_subscribers(self.publisher, 1, timeout=15)
        self._receiver = gevent.spawn(self._receive)

    def _fire(self, name: str, started_ns: int, length: int, exc: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=self.transport_kind,
            name=name,
            response_time=(time.time_ns() - started_ns) / 1e6,
            response_length=length,
            exception=exc,
            context={"url": self.url},
        )

    @task
    def publish(self) -> None:
        self.sequence += 1
        payload = self.payloads[self.sequence % len(self.payloads)]
        now = time.time_ns()
        envelope = Envelope(
            payload,
            self.content_type,
            self.sequence,
            t_intended_ns=now,
            t_sent_ns=now,
            sequence=self.sequence,
        )
        error: BaseException | None = None
        try:
            self.publisher.publish(envelope)
        except Exception as exc:
            error = exc
        self._fire("publish", now, len(payload), error)

    def _receive(self) -> None:
        while self._running:
            received = self.subscriber.poll(0)
            if received is None:
                gevent.sleep(0.002)
                continue
            error: BaseException | None = None
            try:
                self.serializer.loads(received.envelope.payload)
            except Exception as exc:
                error = exc
            sent = received.envelope.t_sent_ns or received.t_received_ns
            self._fire("receive", sent, len(received.envelope.payload), error)

    def on_stop(self) -> None:
        self._running = False
        self.publisher.flush(5)
        gevent.sleep(0.2)  # let the last alerts in flight arrive
        self._receiver.kill()
        self.publisher.close()
        self.subscriber.close()
        self._stack.close()  # stops this user's server, if the transport has one


def kafka_bootstrap(host: str | None) -> str:
    """The bootstrap servers of the running cluster locust's ``--host`` names."""
    if not host or not host.startswith("kafka://"):
        raise ConfigError("the Kafka locustfile needs --host kafka://HOST:PORT (a running cluster)")
    return host.split("://", 1)[1].split("/", 1)[0]


__all__ = ["AlertStreamUser", "kafka_bootstrap"]
