"""The Serializer seam: one interface, one registry, chosen by name.

A serializer turns an alert (a ``dict`` valid against the Rubin schema) into ``bytes`` and back,
and names its content type so that the type can ride on every message and a consumer never has to
guess. Registry entries are lazy ``"module:Class"`` strings: nothing is imported until chosen, and
a typo gets a "did you mean".
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from alertbench.errors import UnknownSerializerError
from alertbench.registry import resolve

Alert = dict[str, Any]


@runtime_checkable
class Serializer(Protocol):
    """What every codec provides. ``dumps`` raises only :class:`alertbench.errors.EncodeError`
    and ``loads`` only :class:`alertbench.errors.DecodeError` (which keeps the raw bytes)."""

    name: str
    media_type: str
    """The content type without parameters; a consumer reading the header picks the codec."""
    content_type: str

    def dumps(self, alert: Alert) -> bytes: ...

    def loads(self, data: bytes) -> Alert: ...


SERIALIZERS: dict[str, str] = {
    "avro": "alertbench.refimpl.codecs.avro:AvroSerializer",
    "protobuf": "alertbench.refimpl.codecs.protobuf:ProtobufSerializer",
    "voevent": "alertbench.refimpl.codecs.voevent:VoeventSerializer",
    "voevent3": "alertbench.refimpl.codecs.voevent3:Voevent3Serializer",
    "json": "alertbench.refimpl.codecs.jsonalert:JsonSerializer",
}


def get_serializer(name: str, **options: Any) -> Serializer:
    """The serializer registered as ``name``, constructed with ``options``."""
    cls = resolve(SERIALIZERS, name, "serializer named", UnknownSerializerError)
    serializer: Serializer = cls(**options)
    return serializer


def serializer_classes() -> dict[str, Any]:
    """Every registered serializer class by name (imports them: for consumers and tools that
    must recognise any format, never on the hot path of one codec)."""
    return {
        name: resolve(SERIALIZERS, name, "serializer named", UnknownSerializerError)
        for name in SERIALIZERS
    }


def serializer_name_for(content_type: str) -> str:
    """The registered serializer for a message's content type (parameters are ignored)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    known = {cls.media_type: name for name, cls in serializer_classes().items()}
    try:
        return known[media_type]
    except KeyError:
        raise UnknownSerializerError(
            f"no serializer for content type {content_type!r} (known: {', '.join(sorted(known))})"
        ) from None


def serializer_for_message(data: bytes) -> str:
    """The registered serializer that recognises one message from its first bytes."""
    for name, cls in serializer_classes().items():
        if cls.recognizes(data):
            return name
    raise UnknownSerializerError(
        "not an alert message: no registered serializer recognises its first bytes "
        f"({bytes(data[:8])!r}...)"
    )
