"""One exception root for the whole project, split by phase.

Callers catch :class:`AlertbenchError` to survive any failure of ours, or a phase class
(:class:`EncodeError`, :class:`DecodeError`) to react to one kind. Decode errors keep the raw
bytes that failed, so a consumer can log or dead-letter the exact packet instead of guessing.
"""

from __future__ import annotations


class AlertbenchError(Exception):
    """Root of every error raised on purpose by alertbench."""


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
