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
    content_type: str

    def dumps(self, alert: Alert) -> bytes: ...

    def loads(self, data: bytes) -> Alert: ...


SERIALIZERS: dict[str, str] = {
    "avro": "alertbench.refimpl.codecs.avro:AvroSerializer",
    "protobuf": "alertbench.refimpl.codecs.protobuf:ProtobufSerializer",
    "voevent": "alertbench.refimpl.codecs.voevent:VoeventSerializer",
    "voevent3": "alertbench.refimpl.codecs.voevent3:Voevent3Serializer",
}


CONTENT_TYPES: dict[str, str] = {
    "application/vnd.rubin.alert+avro": "avro",
    "application/vnd.rubin.alert+protobuf": "protobuf",
    "application/x-voevent+xml": "voevent",
    "application/vnd.ivoa.voevent3+avro": "voevent3",
}
"""Media type (without parameters) -> serializer name, for consumers that read the header."""


def get_serializer(name: str, **options: Any) -> Serializer:
    """The serializer registered as ``name``, constructed with ``options``."""
    cls = resolve(SERIALIZERS, name, "serializer named", UnknownSerializerError)
    serializer: Serializer = cls(**options)
    return serializer


def serializer_name_for(content_type: str) -> str:
    """The registered serializer for a message's content type (parameters are ignored)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        return CONTENT_TYPES[media_type]
    except KeyError:
        raise UnknownSerializerError(
            f"no serializer for content type {content_type!r} "
            f"(known: {', '.join(sorted(CONTENT_TYPES))})"
        ) from None
