"""The mini-broker core's ports: what it reads from and what it delivers to, declared here.

The core (filters, store, service) does no I/O of its own and imports nothing of the transports or
the harness: it is handed an :class:`AlertInput` to read encoded alerts from and
:class:`UserOutput` objects to deliver matches to. The Kafka input and the Kafka/VTP outputs live
in ``alertbench.harness.minibroker_io``, which implements these protocols, so the same core runs
over Kafka in production, over a list in a test, and over any transport a harness adapts.
"""

from __future__ import annotations

from typing import Any, Protocol


class InboundMessage(Protocol):
    """One encoded alert as the input hands it over."""

    @property
    def payload(self) -> bytes:
        """The encoded alert (Confluent-framed Avro, as Rubin publishes it)."""

    @property
    def origin(self) -> str:
        """Where it came from, for logs and the undecodable count (e.g. ``alerts/3@1234``)."""

    @property
    def position(self) -> object:
        """Where the input could resume from after this message (opaque to the core)."""


class AlertInput(Protocol):
    """The stream of alerts the mini-broker filters, in visit order."""

    def poll(self, timeout: float = 1.0) -> InboundMessage | None:
        """The next message, or None if none arrived within ``timeout`` seconds."""


class UserOutput(Protocol):
    """Where one user's matches go (a Kafka topic of their own, a VTP stream, a test's list)."""

    name: str
    """Short label used in counters (``output_errors['<name>:<user>']``)."""

    def deliver(self, user: str, alert: dict[str, Any], payload: bytes, filters: list[str]) -> None:
        """Send one matching alert to ``user``; must not block on a slow receiver.

        ``payload`` is the alert's original encoding, ``filters`` the names of the user's filters
        that selected it. Raise an ``AlertbenchError`` for one alert that cannot be delivered:
        the service counts it and goes on with the other outputs, users and alerts.
        """

    def flush(self, timeout: float = 10.0) -> int:
        """Wait until what was delivered has left; returns how many are still pending."""

    def close(self) -> None: ...
