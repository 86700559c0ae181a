"""The native Protobuf decoder against the reference (upb's parser plus the Python conversion).

The native engine reads the wire format with nothing but the compiled Avro schema, so these
tests hold it to what the generated classes decode, on simulated and generated alerts of every
schema version that has a Protobuf mirror, and to a DecodeError on hostile bodies.
"""

from __future__ import annotations

import pytest
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.codecs import get_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertbench.errors import ConfigError, DecodeError
from tests.support.strategies import alert_strategy

HEADER = 5
"""The Confluent-style frame in front of every body: magic byte + 4-byte schema id."""


@pytest.fixture(scope="module")
def native():
    return get_serializer("protobuf", engine="native")


@pytest.fixture(scope="module")
def upb():
    return get_serializer("protobuf", engine="upb")


def test_native_is_the_default() -> None:
    assert get_serializer("protobuf").engine == "native"


def test_an_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="upb"):
        get_serializer("protobuf", engine="upd")


def test_simulated_alerts_decode_as_the_reference_does(native, upb, alerts) -> None:
    for alert in alerts:
        message = upb.dumps(alert)
        assert native.loads(message) == upb.loads(message)


def _versions_with_a_mirror() -> list[str]:
    """Every shipped version (older ones get their .proto generated and compiled on demand);
    a version the mirror cannot express is not silently dropped: the test of it fails."""
    return list(available_versions())


@pytest.mark.parametrize("version", _versions_with_a_mirror())
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_alerts_of_every_version_decode_as_the_reference_does(version, data) -> None:
    schema = load_schema(version)
    native = get_serializer("protobuf", schema_version=version, engine="native")
    upb = get_serializer("protobuf", schema_version=version, engine="upb")
    alert = data.draw(alert_strategy(schema))
    message = upb.dumps(alert)
    assert native.loads(message) == upb.loads(message)


def test_every_cut_in_the_last_3_kb_is_a_decode_error(native, upb, alerts) -> None:
    message = upb.dumps(alerts[0])
    for end in range(max(HEADER + 1, len(message) - 3072), len(message)):
        with pytest.raises(DecodeError):
            native.loads(message[:end])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire_type: int, body: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + body


@pytest.mark.parametrize(
    ("name", "body"),
    [
        # diaSource (field 1) claiming 2^31, 2^62 bytes, or a varint that never ends.
        ("length 2^31", _field(1, 2, _varint(2**31))),
        ("length 2^62", _field(1, 2, _varint(2**62))),
        ("length -1 (ten-byte varint)", _field(1, 2, b"\xff" * 9 + b"\x01")),
        ("varint over 10 bytes", _field(1, 0, b"\xff" * 11)),
        ("group wire type", _field(1, 3, b"")),
        ("wrong wire type for a message", _field(1, 0, b"\x01")),
        ("no packet_end", _field(1, 2, b"\x00")),
        ("wrong packet_end", _field(1, 2, b"\x00") + _field(536_870_911, 5, b"\0\0\0\0")),
    ],
)
def test_hostile_bodies_are_decode_errors(native, name, body) -> None:
    # Behind a valid Confluent frame (id and message indexes), so it is the body decoder that
    # must refuse each one, not the framing.
    with pytest.raises(DecodeError) as refused:
        native.loads(native._prefix + body)
    assert "message index" not in str(refused.value)


def test_invalid_utf8_is_a_decode_error(native, upb, alerts) -> None:
    marker = "\u00e9" * 4
    message = bytearray(upb.dumps({**alerts[0], "target_name": marker}))
    at = message.find(marker.encode())
    assert at > 0
    message[at] = 0xFF
    with pytest.raises(DecodeError, match="UTF-8"):
        native.loads(bytes(message))
