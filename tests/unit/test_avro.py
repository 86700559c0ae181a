"""The Avro codec: Rubin's framing, byte-identical engines, interop with lsst-alert-packet."""

from __future__ import annotations

import io
import json
import struct
from importlib import resources

import fastavro
import pytest
from alertbench.refimpl.codecs.avro import ENGINES, AvroSerializer, read_ocf, write_ocf
from alertbench.refimpl.codecs.base import UnknownSerializerError, get_serializer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertbench.errors import AlertbenchError, DecodeError, EncodeError, FramingError


@pytest.fixture(scope="module", params=ENGINES)
def codec(request) -> AvroSerializer:
    return AvroSerializer(engine=request.param)


def test_round_trip_is_exact(codec, alerts) -> None:
    for alert in alerts:
        assert codec.loads(codec.dumps(alert)) == alert


def test_rubin_framing_big_endian_schema_id(codec, alerts) -> None:
    data = codec.dumps(alerts[0])
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == codec.schema.schema_id == 1101
    assert "schema-id=1101" in codec.content_type


@pytest.mark.parametrize("engine", ["native", "cavro"])
def test_every_engine_writes_the_same_bytes_as_fastavro(engine, alerts) -> None:
    fast, other = AvroSerializer(engine="fastavro"), AvroSerializer(engine=engine)
    for alert in alerts:
        data = other.dumps(alert)
        assert data == fast.dumps(alert)
        assert other.loads(data) == fast.loads(data)


def test_the_native_engine_is_the_default() -> None:
    assert get_serializer("avro").engine == "native"
    assert get_serializer("voevent3")._engine.engine == "native"


def test_lsst_alert_packet_decodes_our_bytes(schema, alerts) -> None:
    codec = AvroSerializer()
    for alert in alerts[:20]:
        data = codec.dumps(alert)
        assert schema.lsst.deserialize(data[5:]) == alert


def _sample_dir():
    return resources.files("lsst.alert.packet") / "schema" / "11" / "1" / "sample_data"


def test_lsst_sample_data_decodes(codec) -> None:
    ocf = (_sample_dir() / "fakeAlert.avro").read_bytes()
    _, records = read_ocf(io.BytesIO(ocf))
    records = list(records)
    assert records
    for record in records:
        assert codec.loads(codec.dumps(record)) == record
    sample = json.loads((_sample_dir() / "alert.json").read_text())
    assert codec.loads(codec.dumps(sample))["diaSourceId"] == sample["diaSourceId"]


def test_older_schema_ids_decode(alerts) -> None:
    old = AvroSerializer(schema_version="7.0")
    from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig

    alert = next(AlertSimulator(SimulationConfig(schema_version="7.0")).visit(0).alerts())
    data = old.dumps(alert)
    assert struct.unpack(">I", data[1:5])[0] == 700
    assert AvroSerializer().loads(data) == alert  # a v11.1 reader still reads v7.0 messages


def test_ocf_archive_round_trip(alerts, tmp_path) -> None:
    path = tmp_path / "visit.avro"
    with path.open("wb") as fp:
        assert write_ocf(fp, iter(alerts)) == len(alerts)
    with path.open("rb") as fp:
        _, records = read_ocf(fp)
        assert list(records) == alerts
    with path.open("rb") as fp:  # and a plain Avro reader needs nothing of ours
        assert sum(1 for _ in fastavro.reader(fp)) == len(alerts)


def test_encode_error_names_the_problem(codec, alerts) -> None:
    bad = dict(alerts[0])
    bad["diaSource"] = dict(bad["diaSource"], ra="not a number")
    with pytest.raises(EncodeError, match=r"schema 11\.1"):
        codec.dumps(bad)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda b: b"", FramingError, "shorter than the 5-byte"),
        (lambda b: b[:4], FramingError, "shorter than the 5-byte"),
        (lambda b: b"\x01" + b[1:], FramingError, "wrong magic byte 0x01"),
        (lambda b: b[:1] + struct.pack(">I", 4242) + b[5:], FramingError, "unknown schema id 4242"),
        (lambda b: b[:1] + struct.pack("<I", 1101) + b[5:], FramingError, "unknown schema id"),
        (lambda b: b[:200], DecodeError, r"not a valid schema 11\.1 alert"),
        (lambda b: b[:-1], DecodeError, r"not a valid schema 11\.1 alert"),
        (lambda b: b[:5] + b"\xff" * 64, DecodeError, r"not a valid schema 11\.1 alert"),
    ],
    ids=[
        "empty",
        "short-header",
        "magic",
        "unknown-id",
        "little-endian-id",
        "truncated",
        "one-byte-short",
        "garbled",
    ],
)
def test_bad_bytes_raise_one_typed_error(codec, alerts, mutate, error, message) -> None:
    data = mutate(codec.dumps(alerts[0]))
    with pytest.raises(error, match=message) as info:
        codec.loads(data)
    assert isinstance(info.value, AlertbenchError)
    assert info.value.raw == data  # the exact bytes are kept for logging / dead-lettering


@pytest.mark.parametrize("engine", ["native", "fastavro"])
def test_trailing_bytes_are_rejected(engine, alerts) -> None:
    codec = AvroSerializer(engine=engine)
    with pytest.raises(DecodeError, match="trailing byte"):
        codec.loads(codec.dumps(alerts[0]) + b"\x00")
    glued = codec.dumps(alerts[0]) + codec.dumps(alerts[1])  # two records: never lose one silently
    with pytest.raises(DecodeError, match="trailing byte"):
        codec.loads(glued)


def test_hostile_bodies_are_decode_errors_in_bounded_memory(alerts) -> None:
    import resource

    codec = AvroSerializer(engine="native")
    data = codec.dumps(alerts[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for cut in range(1, 3001):  # truncated at every byte of the last 3 KB
        with pytest.raises(DecodeError):
            codec.loads(data[:-cut])
    header = data[:5]
    # The first field is a long (diaSourceId), then diaSource (a record of longs/doubles):
    # craft bodies whose first array count is hostile by reusing the header with a tiny body.
    for count in (2**31, 2**62, -1):
        zigzag = (count << 1) ^ (count >> 63)
        varint = bytearray()
        while True:
            byte = zigzag & 0x7F
            zigzag >>= 7
            varint.append(byte | (0x80 if zigzag else 0))
            if not zigzag:
                break
        with pytest.raises(DecodeError):
            codec.loads(header + b"\x02" + bytes(varint) * 4)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (after - before) / 1024 < 200  # MiB: nothing was allocated from a hostile count


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0),
    flip=st.integers(min_value=0),
    value=st.integers(0, 255),
    tail=st.binary(max_size=16),
)
def test_damaged_messages_never_yield_a_partial_alert(
    schema, alerts, cut, flip, value, tail
) -> None:
    """Cut, flipped or with bytes appended (the test before never appended any), a message
    decodes to a whole alert or raises DecodeError; an intact alert with bytes appended is
    refused in test_trailing_bytes_are_rejected."""
    codec = AvroSerializer()
    data = bytearray(codec.dumps(alerts[1]))
    data[5 + flip % (len(data) - 5)] = value
    data = bytes(data[: len(data) - cut % 2000]) + tail
    try:
        decoded = codec.loads(data)
    except DecodeError:
        return
    schema.validate(decoded)  # whatever decodes is a whole, schema-valid alert


def test_registry_is_lazy_and_helpful() -> None:
    assert get_serializer("avro").name == "avro"
    with pytest.raises(UnknownSerializerError, match="did you mean 'avro'"):
        get_serializer("arvo")
