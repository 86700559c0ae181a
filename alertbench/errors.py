"""Every error alertbench raises on purpose: one root, split by phase.

Callers catch :class:`AlertbenchError` to survive any failure of ours, or one phase to react to
one kind: configuration (a bad option or argument, a user's mistake: the CLI prints it as one
line and exits 2), schema, encode/decode (decode errors keep the raw bytes, so a consumer can log
or dead-letter the exact packet), transport (a peer, a frame, a connection), server (a launcher
such as Kafka's), filter and store (the mini-broker). Each module raises these; none defines its
own root.
"""

from __future__ import annotations


class AlertbenchError(Exception):
    """Root of every error raised on purpose by alertbench."""


class ConfigError(AlertbenchError, ValueError):
    """A user's configuration is wrong: an unknown option, a value out of range, a bad URL.

    The message names the option and, where one is close, what was probably meant.
    """


class UnknownNameError(ConfigError, KeyError):
    """No entry of a registry (transport scheme, serializer) has that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SchemaError(AlertbenchError):
    """An alert schema version was asked for that the installed lsst-alert-packet does not ship."""


class SerializationError(AlertbenchError):
    """A codec failed. ``codec`` names it; ``raw`` holds the bytes involved, if any."""

    def __init__(self, message: str, *, codec: str, raw: bytes | None = None) -> None:
        super().__init__(f"[{codec}] {message}")
        self.codec = codec
        self.raw = raw


class EncodeError(SerializationError):
    """An alert could not be encoded (it does not match the schema, or the codec refused it)."""


class DecodeError(SerializationError):
    """Bytes could not be turned back into an alert. No partial alert is ever returned."""


class FramingError(DecodeError):
    """The envelope around the payload is wrong: bad magic byte, unknown schema id, too short."""


class UnsafeXmlError(AlertbenchError, ValueError):
    """Untrusted bytes are not acceptable XML (too large, a DTD, malformed): the message says
    why."""


class UnknownSerializerError(UnknownNameError):
    """No serializer is registered under that name or content type."""


class TransportError(AlertbenchError):
    """A transport failed: could not connect, was refused, timed out, or got bad input."""


class UnknownTransportError(UnknownNameError, TransportError):
    """No transport is registered for that URL scheme."""


class FrameError(TransportError):
    """A peer sent bytes that are not a valid frame: the connection is dropped, with this reason."""


class ServerError(AlertbenchError):
    """A server the project starts (Kafka, Comet, a registry) could not be started or reached."""


class FilterError(AlertbenchError):
    """A filter was refused at registration: what is wrong, and where in the text."""

    def __init__(self, message: str, text: str = "", start: int = -1, end: int = -1) -> None:
        self.reason = message
        self.text = text
        self.start = start
        self.end = end
        super().__init__(self._render())

    def _render(self) -> str:
        if self.start < 0 or not self.text or "\n" in self.text:
            if self.start >= 0 and self.text:
                return f"{self.reason} (at character {self.start + 1}: {self.fragment!r})"
            return self.reason
        width = max(1, self.end - self.start)
        return f"{self.reason}\n  {self.text}\n  {' ' * self.start}{'^' * width}"

    @property
    def fragment(self) -> str:
        """The offending part of the expression."""
        return self.text[self.start : self.end] if self.start >= 0 else ""


class StoreError(AlertbenchError):
    """A request to the mini-broker's store was refused; the message says why."""


class AccessDenied(StoreError):
    """The token is unknown (or was rotated)."""


class LimitExceeded(StoreError):
    """The user already has as many filters as allowed."""
