"""The VOEvent 3 model's JSON and Protobuf bindings (the Avro one is :mod:`.voevent3`'s own).

Each takes the event as the Avro binding's encoder does (the dict :meth:`Voevent3Serializer.
to_event` makes) and gives back what the Avro binding's decoder gives (``who.date`` a UTC
datetime, enums as their symbols, ``what.payload`` the alert as the Avro codec decodes it), so
the three are tested against each other value for value. Both walk the model of
:mod:`.voevent3_model` and nothing else; the payload goes through the Rubin alert's own codec
of the same family (:mod:`.jsonalert`, :mod:`.protobuf`), never converted field by field here.

* JSON: one object in the model's field order, ``what.payload`` the alert's JSON document as the
  JSON codec writes it (with its ``"$schema"``), spliced in without re-encoding. Decoding is
  typed (msgspec types generated from the model): a wrong type, a missing or unknown member is
  a :class:`DecodeError`.
* Protobuf: Confluent's Protobuf framing, ids 4,000,000 + the payload's Rubin id. The envelope
  is built by the protobuf library; the payload's bytes come from the native Protobuf encoder
  and are appended as the ``what`` field a second time (Protobuf merges repeated occurrences of
  a message field), so the 130 KB alert is never built as Python objects.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
from typing import Any, Literal

import msgspec
from alertbench.refimpl.alert.schema import AlertSchema, load_schema
from alertbench.refimpl.codecs.jsonalert import JsonSerializer
from alertbench.refimpl.codecs.protobuf import ProtobufSerializer, index_path
from alertbench.refimpl.codecs.protogen import generate_proto, proto_file_name
from alertbench.refimpl.codecs.voevent3_model import (
    ENTITIES,
    ENUMS,
    NAMESPACE,
    ROOT,
    Entity,
    Field,
    proto_file,
    proto_text,
)
from alertbench.refimpl.codecs.wire import (
    HEADER,
    VOEVENT3_PROTOBUF_ID_BASE,
    frame,
    message_indexes,
    read_message_indexes,
    unframe,
)

from alertbench.errors import DecodeError, EncodeError
from alertbench.resources import cache_dir

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _micros(value: Any) -> int:
    if isinstance(value, dt.datetime):
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(value)


def _datetime(micros: int) -> dt.datetime:
    try:
        return EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"timestamp {micros} is outside years 1-9999") from None


# -- JSON ----------------------------------------------------------------------------------------


def _json_number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _msgspec_type(field: Field, types: dict[str, Any]) -> Any:
    kind: Any
    if field.type == "payload":
        kind = msgspec.Raw
    elif field.type == "string":
        kind = str
    elif field.type in ("double", "float"):
        kind = float | Literal["NaN", "Infinity", "-Infinity"]
    elif field.type == "timestamp":
        kind = dt.datetime
    elif field.type in ENUMS:
        kind = Literal[ENUMS[field.type]]  # type: ignore[valid-type]
    else:
        kind = types[field.type]
    if field.list:
        return list[kind]  # type: ignore[valid-type]
    if field.optional:
        return kind | None
    return kind


@functools.cache
def _json_types() -> Any:
    """msgspec Struct types for the model, leaves first; every member required, none other."""
    types: dict[str, Any] = {}
    pending = list(reversed(list(ENTITIES.values())))
    while pending:
        for entity in list(pending):
            needed = {f.type for f in entity.fields if f.type in ENTITIES}
            if needed <= types.keys():
                fields = [(f.name, _msgspec_type(f, types)) for f in entity.fields]
                types[entity.name] = msgspec.defstruct(
                    entity.name, fields, forbid_unknown_fields=True
                )
                pending.remove(entity)
    return types[ROOT.name]


class JsonBinding:
    media_type = "application/vnd.ivoa.voevent3+json"

    def __init__(self, alert_schema: AlertSchema) -> None:
        self.payload_codec = JsonSerializer(alert_schema.version)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_json_types())

    def dumps(self, event: dict[str, Any]) -> bytes:
        try:
            return self._encoder.encode(self._to_json(ROOT, event))
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise EncodeError(f"event does not fit the model: {exc}", codec="voevent3") from exc

    def _to_json(self, entity: Entity, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in entity.fields:
            value = record.get(field.name, field.default)
            if value is None:
                out[field.name] = [] if field.list else None
            elif field.list:
                out[field.name] = [self._value(field, v) for v in value]
            else:
                out[field.name] = self._value(field, value)
        return out

    def _value(self, field: Field, value: Any) -> Any:
        if field.type == "payload":
            return msgspec.Raw(self.payload_codec.dumps(value))
        if field.type in ("double", "float"):
            return _json_number(float(value))
        if field.type == "timestamp":
            return _datetime(_micros(value))
        if field.type in ENTITIES:
            return self._to_json(ENTITIES[field.type], value)
        return value

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            root = self._decoder.decode(data)
            return self._from_json(ROOT, root)
        except (msgspec.DecodeError, ValueError) as exc:
            raise DecodeError(
                f"not a VOEvent 3 JSON event: {exc}", codec="voevent3", raw=bytes(data)
            ) from exc

    def _from_json(self, entity: Entity, struct: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in entity.fields:
            value = getattr(struct, field.name)
            if value is None:
                out[field.name] = None
            elif field.list:
                out[field.name] = [self._read(field, v) for v in value]
            else:
                out[field.name] = self._read(field, value)
        return out

    def _read(self, field: Field, value: Any) -> Any:
        if field.type == "payload":
            return self.payload_codec.loads(bytes(value))
        if field.type in ("double", "float"):
            return _NON_FINITE[value] if isinstance(value, str) else value
        if field.type == "timestamp":
            if value.tzinfo is None or value.utcoffset() != dt.timedelta(0):
                raise ValueError(f"{field.name}: a timestamp must be UTC, got {value}")
            return value.astimezone(dt.UTC)
        if field.type in ENTITIES:
            return self._from_json(ENTITIES[field.type], value)
        return value


# -- Protobuf ------------------------------------------------------------------------------------


@functools.cache
def _proto_classes(version: str) -> Any:
    """The VOEvent message class, from the model's .proto compiled by protoc into a descriptor
    set (cached by content) and loaded into a pool of its own: the Rubin mirror's messages are
    already in the default pool under another file name, and would clash there."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    alert_schema = load_schema(version)
    payload_file = proto_file_name(alert_schema)
    sources = {
        payload_file: generate_proto(alert_schema),
        proto_file(alert_schema): proto_text(alert_schema, payload_file),
    }
    digest = hashlib.sha256("".join(sorted(sources.values())).encode()).hexdigest()[:16]
    folder = cache_dir() / f"voevent3-proto-{digest}"
    descriptors = folder / "descriptors.pb"
    if not descriptors.exists():
        from grpc_tools import protoc

        folder.mkdir(parents=True, exist_ok=True)
        for name, text in sources.items():
            (folder / name).write_text(text)
        partial = folder / "descriptors.pb.partial"
        args = ["protoc", f"-I{folder}", "--include_imports", f"--descriptor_set_out={partial}"]
        if protoc.main([*args, str(folder / proto_file(alert_schema))]) != 0:
            raise RuntimeError(f"protoc failed on the VOEvent 3 model's .proto in {folder}")
        partial.replace(descriptors)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{NAMESPACE}.VOEvent"))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


class ProtobufBinding:
    media_type = "application/vnd.ivoa.voevent3+protobuf"

    def __init__(self, alert_schema: AlertSchema) -> None:
        self.payload_codec = ProtobufSerializer(alert_schema.version)
        self.cls = _proto_classes(alert_schema.version)
        self.schema_id = VOEVENT3_PROTOBUF_ID_BASE + alert_schema.schema_id
        self.message_indexes = index_path(self.cls.DESCRIPTOR)
        self._prefix = frame(self.schema_id, message_indexes(self.message_indexes))
        self._payload_prefix = frame(
            self.payload_codec.schema_id, message_indexes(self.payload_codec.message_indexes)
        )
        numbers = {f.name: i for i, f in enumerate(ROOT.fields, start=1)}
        what = ENTITIES["What"].fields
        self._what_number = numbers["what"]
        self._payload_number = 1 + [f.name for f in what].index("payload")

    def dumps(self, event: dict[str, Any]) -> bytes:
        message = self.cls()
        try:
            self._fill(ROOT, message, event)
            envelope = message.SerializeToString()
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"event does not fit the model: {exc}", codec="voevent3") from exc
        framed = self.payload_codec.dumps(event["what"]["payload"])
        body = framed[self.payload_codec.body_offset(framed) :]
        what = _length_delimited(self._payload_number, body)
        return self._prefix + envelope + _length_delimited(self._what_number, what)

    def _fill(self, entity: Entity, message: Any, record: dict[str, Any]) -> None:
        for field in entity.fields:
            value = record.get(field.name, field.default)
            if value is None or field.type == "payload":
                continue
            if field.list:
                target = getattr(message, field.name)
                for item in value:
                    if field.type in ENTITIES:
                        self._fill(ENTITIES[field.type], target.add(), item)
                    else:
                        target.append(self._scalar(field, item))
            elif field.type in ENTITIES:
                sub = getattr(message, field.name)
                sub.SetInParent()
                self._fill(ENTITIES[field.type], sub, value)
            else:
                setattr(message, field.name, self._scalar(field, value))

    @staticmethod
    def _scalar(field: Field, value: Any) -> Any:
        if field.type == "timestamp":
            return _micros(value)
        if field.type in ENUMS:
            return 1 + ENUMS[field.type].index(value)
        return value

    def loads(self, data: bytes) -> dict[str, Any]:
        from google.protobuf.message import DecodeError as ProtoDecodeError

        unframe(data, codec="voevent3", expected_id=self.schema_id)
        indexes, offset = read_message_indexes(data, HEADER.size, codec="voevent3")
        if indexes != self.message_indexes:
            raise DecodeError(
                f"message indexes {list(indexes)} do not name {NAMESPACE}.VOEvent",
                codec="voevent3",
                raw=bytes(data),
            )
        message = self.cls()
        try:
            message.ParseFromString(bytes(memoryview(data)[offset:]))
            return self._read(ROOT, message)
        except (ProtoDecodeError, ValueError) as exc:
            raise DecodeError(
                f"not a VOEvent 3 Protobuf event: {exc}", codec="voevent3", raw=bytes(data)
            ) from exc

    def _read(self, entity: Entity, message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in entity.fields:
            value = getattr(message, field.name)
            if field.list:
                if field.type in ENTITIES:
                    out[field.name] = [self._read(ENTITIES[field.type], v) for v in value]
                else:
                    out[field.name] = [self._value(field, v) for v in value]
            elif field.type == "payload":
                if not message.HasField(field.name):
                    raise ValueError("what.payload is missing")
                out[field.name] = self.payload_codec.loads(
                    self._payload_prefix + value.SerializeToString()
                )
            elif field.type in ENTITIES:
                if message.HasField(field.name):
                    out[field.name] = self._read(ENTITIES[field.type], value)
                elif field.optional:
                    out[field.name] = None
                else:
                    raise ValueError(f"{entity.name}.{field.name} is missing")
            elif field.optional and not message.HasField(field.name):
                out[field.name] = None
            else:
                out[field.name] = self._value(field, value)
        return out

    @staticmethod
    def _value(field: Field, value: Any) -> Any:
        if field.type == "timestamp":
            return _datetime(value)
        if field.type in ENUMS:
            symbols = ENUMS[field.type]
            if not 1 <= value <= len(symbols):
                raise ValueError(f"{field.name}: {value} is not a {field.type}")
            return symbols[value - 1]
        return value
