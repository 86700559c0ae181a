"""Our Protobuf frames are Confluent's Protobuf wire format, read by confluent-kafka itself.

Confluent's format puts the message indexes (where the message type sits in its .proto file)
between the schema id and the body. These tests hand our bytes to confluent-kafka's own
``ProtobufDeserializer`` (no registry: it reads the frame and parses with the class it is given),
compare our frame with what confluent-kafka's ``ProtobufSerializer`` writes for the same message
(with its in-process ``mock://`` registry, which assigns its own id, so the bytes after the id
are compared), and hold the decoder to a DecodeError for every malformed index array.
"""

from __future__ import annotations

import struct

import pytest
from alertbench.refimpl.alert.schema import available_versions
from alertbench.refimpl.codecs import get_serializer, wire
from alertbench.refimpl.codecs.protobuf import ProtobufSerializer, index_path
from alertbench.refimpl.codecs.protogen import PACKET_END_VALUE
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.common.protobuf import _create_index_array
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as ConfluentReader
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as ConfluentWriter
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given
from hypothesis import strategies as st

from alertbench.errors import DecodeError, FramingError

ENGINES = ("native", "upb")
CTX = SerializationContext("alerts", MessageField.VALUE)


@pytest.fixture(scope="module", params=ENGINES)
def codec(request) -> ProtobufSerializer:
    return get_serializer("protobuf", engine=request.param)


def _message(codec: ProtobufSerializer, alert: dict):
    message = codec._codec.to_message(alert)
    message.packet_end = PACKET_END_VALUE
    return message


def test_confluent_deserializer_reads_our_bytes_as_the_same_message(codec, alerts) -> None:
    reader = ConfluentReader(codec._codec.cls, {})
    for alert in alerts[:40]:
        data = codec.dumps(alert)
        message = reader(data, CTX)
        assert message == _message(codec, alert)
        assert codec._codec.to_dict(message) == codec.loads(data)


def test_our_frame_after_the_id_is_what_confluents_serializer_writes(codec, alerts) -> None:
    registry = SchemaRegistryClient.new_client({"url": "mock://alertbench-a2"})
    writer = ConfluentWriter(codec._codec.cls, registry, {"use.deprecated.format": False})
    for alert in alerts[:10]:
        theirs = writer(_message(codec, alert), CTX)
        ours = codec.dumps(alert)
        assert theirs[0] == ours[0] == 0
        assert ours[1:5] == struct.pack(">I", 2_001_101)  # our id, not the registry's
        assert theirs[5:] == ours[5:]


@pytest.mark.parametrize("version", list(available_versions()))
def test_the_message_indexes_of_every_version_are_confluents(version) -> None:
    codec = get_serializer("protobuf", schema_version=version)
    descriptor = codec._codec.cls.DESCRIPTOR
    assert list(index_path(descriptor)) == _create_index_array(descriptor)
    assert descriptor.name == "alert"
    data = codec._prefix
    assert wire.read_message_indexes(data, codec=codec.name) == (codec.message_indexes, len(data))


def test_v11_1_frame_bytes() -> None:
    """alert is the sixth message of lsst_alert_v11_1.proto (dependencies first): [5]."""
    codec = get_serializer("protobuf", schema_version="11.1")
    assert codec.message_indexes == (5,)
    assert codec._prefix == bytes.fromhex("00 001e88cd 02 0a")
    assert codec.schema_id == 2_001_101


def test_recognizes_still_tells_protobuf_from_the_other_codecs(alerts) -> None:
    data = get_serializer("protobuf").dumps(alerts[0])
    assert ProtobufSerializer.recognizes(data)
    for other in ("avro", "voevent3"):
        assert not ProtobufSerializer.recognizes(get_serializer(other).dumps(alerts[0]))


@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=wire.MAX_MESSAGE_INDEXES))
def test_message_indexes_round_trip_and_match_confluent(indexes) -> None:
    import io

    encoded = wire.message_indexes(indexes)
    buffer = io.BytesIO()
    SchemaId._encode_varints(buffer, indexes)
    assert encoded == buffer.getvalue()
    assert wire.read_message_indexes(b"\0" * 5 + encoded + b"body", codec="protobuf") == (
        tuple(indexes),
        5 + len(encoded),
    )
    assert SchemaId._read_index_array(io.BytesIO(encoded)) == indexes


def test_the_single_zero_byte_means_the_first_message() -> None:
    assert wire.message_indexes([0]) == b"\x00"
    assert wire.read_message_indexes(b"\0" * 5 + b"\x00", codec="protobuf") == ((0,), 6)


@pytest.mark.parametrize("bad", [[], [-1], [2**31], list(range(wire.MAX_MESSAGE_INDEXES + 1))])
def test_writing_impossible_indexes_is_refused(bad) -> None:
    with pytest.raises(ValueError):
        wire.message_indexes(bad)


def _zz(n: int) -> bytes:
    """A zigzag varint, written independently of wire.py."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        out.append(byte | (0x80 if z else 0))
        if not z:
            return bytes(out)


HOSTILE_INDEXES = [
    # (name, index bytes, whether the alert body follows, what the error says)
    ("no index array at all", b"", False, "truncated"),
    ("negative count", _zz(-1), True, "count -1"),
    ("count 2^31", _zz(2**31) + b"\x0a" * 8, True, "count 2147483648"),
    ("count 2^62", _zz(2**62) + b"\x0a" * 8, True, "count"),
    ("count over the bound", _zz(wire.MAX_MESSAGE_INDEXES + 1) + b"\x0a" * 40, True, "count 33"),
    ("count past the end", _zz(3) + _zz(5), False, "count 3 .*1 bytes left"),
    ("index truncated", _zz(2) + _zz(5) + b"\x80", False, "truncated"),
    ("varint over 10 bytes", b"\xff" * 11, True, "longer than 64 bits"),
    ("negative index", _zz(1) + _zz(-5), True, "negative message index -5"),
    ("another message", b"\x00", True, r"indexes \[0\] do not name lsst\.v11_1\.alert"),
    ("nested path", _zz(2) + _zz(5) + _zz(0), True, r"\[5, 0\] do not name"),
]


@pytest.mark.parametrize(
    ("name", "indexes", "with_body", "message"),
    HOSTILE_INDEXES,
    ids=[h[0] for h in HOSTILE_INDEXES],
)
def test_bad_index_arrays_are_decode_errors(
    codec, alerts, name, indexes, with_body, message
) -> None:
    body = codec.dumps(alerts[0])[len(codec._prefix) :]
    data = wire.frame(codec.schema_id, indexes + (body if with_body else b""))
    with pytest.raises(FramingError, match=message) as info:
        codec.loads(data)
    assert isinstance(info.value, DecodeError)
    assert info.value.codec == "protobuf"
    assert info.value.raw == data


def test_the_old_framing_without_indexes_is_refused(codec, alerts) -> None:
    """Header + body, as this codec wrote before it followed Confluent: the body's first tag is
    read as an index count and refused, never decoded as something else."""
    body = codec.dumps(alerts[0])[len(codec._prefix) :]
    with pytest.raises(DecodeError):
        codec.loads(wire.frame(codec.schema_id, body))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("length 2^62 behind a valid frame", _varint(4 << 3 | 2) + _varint(2**62)),
        ("no packet_end behind a valid frame", _varint(4 << 3 | 2) + b"\x00"),
        ("empty body", b""),
    ],
)
def test_hostile_bodies_behind_a_valid_frame_are_decode_errors(codec, name, body) -> None:
    with pytest.raises(DecodeError):
        codec.loads(codec._prefix + body)
