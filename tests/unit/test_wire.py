"""The one Confluent framing module: every binary codec frames through it, and its errors name
the codec that was decoding, not the module the framing code lives in."""

from __future__ import annotations

import pytest
from alertbench.refimpl.codecs import wire
from alertbench.refimpl.codecs.base import get_serializer

from alertbench.errors import FramingError

BINARY = ("avro", "protobuf", "voevent3")


def test_frame_is_magic_zero_and_a_big_endian_id() -> None:
    assert wire.frame(1101, b"body") == b"\x00\x00\x00\x04\x4dbody"
    schema_id, body = wire.unframe(b"\x00\x00\x00\x04\x4dbody", codec="avro")
    assert (schema_id, bytes(body)) == (1101, b"body")
    assert wire.schema_id_of(b"\x00\x00\x1e\x88\xcdrest") == 2_001_101
    assert wire.schema_id_of(b"<VOEvent") is None and wire.schema_id_of(b"\x00\x01") is None


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize(
    ("bad", "message"),
    [(b"", "shorter than the 5-byte"), (b"\x07" + b"\x00" * 8, "wrong magic byte 0x07")],
    ids=["short", "magic"],
)
def test_framing_errors_name_the_calling_codec(name: str, bad: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message) as info:
        get_serializer(name).loads(bad)
    assert info.value.codec == name
    assert str(info.value).startswith(f"[{name}] ")
    assert info.value.raw == bad


@pytest.mark.parametrize("name", BINARY)
def test_every_binary_codec_frames_through_the_wire_module(name: str, alerts) -> None:
    codec = get_serializer(name)
    data = codec.dumps(alerts[0])
    schema_id, _ = wire.unframe(data, codec=name)
    assert wire.schema_id_of(data) == schema_id
    assert f"schema-id={schema_id}" in codec.content_type


def test_an_unexpected_schema_id_is_refused_with_both_ids() -> None:
    with pytest.raises(FramingError, match=r"schema id 7 is not this codec's \(9\)") as info:
        wire.unframe(wire.frame(7, b""), codec="protobuf", expected_id=9)
    assert info.value.codec == "protobuf"
