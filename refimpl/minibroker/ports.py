"""The mini-broker core's ports: what it reads from and what it delivers to, declared here.

The core (filters, store, service) does no I/O of its own and imports nothing of the transports or
the harness: it is handed an :class:`AlertInput` to read encoded alerts from and
:class:`UserOutput` objects to deliver matches to. The Kafka input and the Kafka/VTP outputs live
in ``alertbench.harness.minibroker_io``, which implements these protocols, so the same core runs
over Kafka in production, over a list in a test, and over any transport a harness adapts.

Delivery is at-least-once when the input can commit (:class:`CommittingInput`): the core commits
only after a batch was delivered to every output and every output's :meth:`UserOutput.flush`
reported nothing left, so an input that resumes from its last commit after a crash redelivers
what may have been in flight (duplicates, never gaps). See the service's module docstring.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


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


@runtime_checkable
class CommittingInput(AlertInput, Protocol):
    """An input that can resume: what it was told to commit is not read again after a restart.

    Optional: the core checks for it (``isinstance``) and commits after each batch only once the
    batch reached every output; an input without it (a list in a test) is read at most once.
    """

    def commit(self) -> object:
        """Mark every message :meth:`poll` has returned so far as done, durably (it returns
        once the commit is stored), so a restart resumes after them; raise an
        ``AlertbenchError`` if it could not be stored. The return value is ignored."""


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
        """Wait, at most ``timeout`` seconds, until what was delivered has reached its
        destination; return how many delivered alerts have not (still pending, or lost since
        the previous flush: failed or dropped after ``deliver`` returned).

        The core commits its input only when every output returns 0, so an output must count
        here every accepted alert it cannot vouch for; what "reached" means is the output's to
        say (acknowledged by a Kafka cluster; queued for a VTP user's connected subscribers)."""

    def close(self) -> None: ...
