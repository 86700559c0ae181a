"""The native Protobuf encoder against the reference (the generated classes + upb's serializer).

The native engine writes the wire format from the dict with nothing but the compiled Avro
schema, so these tests hold it to byte identity with ``message.SerializeToString()`` of the
message the Python codec builds, on simulated alerts, on generated alerts of every shipped
schema version and on the edge values where proto3 is subtle (implicit presence of zeros, -0.0,
negative int32, empty wrapped lists, big spliced cutouts); and to an EncodeError naming the field
path for records that do not fit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.codecs import get_serializer
from alertbench.refimpl.codecs.protogen import PACKET_END_VALUE
from alertbench.refimpl.codecs.wire import HEADER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertbench.errors import EncodeError
from tests.support.strategies import alert_strategy


@pytest.fixture(scope="module")
def native():
    return get_serializer("protobuf", engine="native")


@pytest.fixture(scope="module")
def upb():
    return get_serializer("protobuf", engine="upb")


def _reference_body(codec, alert: dict) -> bytes:
    """What today's Python path serialises, straight from the generated class."""
    message = codec._codec.to_message(alert)
    message.packet_end = PACKET_END_VALUE
    body: bytes = message.SerializeToString()
    return body


def _assert_identical(native, upb, alert: dict) -> bytes:
    data = native.dumps(alert)
    assert data == upb.dumps(alert)
    assert data[len(native._prefix) :] == _reference_body(upb, alert)
    return data


def test_simulated_alerts_are_byte_identical_to_serialize_to_string(native, upb, alerts) -> None:
    for alert in alerts:
        data = _assert_identical(native, upb, alert)
        assert native.loads(data) == upb.loads(data)


def test_pool_alerts_as_the_harness_makes_them_are_byte_identical(native, upb) -> None:
    """alert_pool's dicts (not normalised through fastavro) are what the benchmarks encode."""
    for alert in alert_pool(20, 11):
        _assert_identical(native, upb, alert)


def test_the_body_follows_the_frame_and_ends_with_the_sentinel(native, alerts) -> None:
    data = native.dumps(alerts[0])
    assert data.startswith(native._prefix)
    assert len(native._prefix) > HEADER.size  # the message indexes are there
    # packet_end: tag of field 536870911, wire type 5, then "RUBI" little-endian.
    assert data.endswith(bytes.fromhex("fdffffff0f") + PACKET_END_VALUE.to_bytes(4, "little"))


@pytest.mark.parametrize("version", list(available_versions()))
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_alerts_of_every_version_are_byte_identical(version, data) -> None:
    native = get_serializer("protobuf", schema_version=version, engine="native")
    upb = get_serializer("protobuf", schema_version=version, engine="upb")
    alert = data.draw(alert_strategy(load_schema(version)))
    encoded = _assert_identical(native, upb, alert)
    assert native.loads(encoded) == upb.loads(encoded)


def _with(alert: dict, path: str, value: Any) -> dict:
    """A deep-enough copy of ``alert`` with ``path`` ("diaSource.ra", "prvDiaSources.0.x") set."""
    out = dict(alert)
    node: Any = out
    *parents, last = path.split(".")
    for key in parents:
        child = node[int(key)] if isinstance(node, list) else node[key]
        child = list(child) if isinstance(child, list) else dict(child)
        if isinstance(node, list):
            node[int(key)] = child
        else:
            node[key] = child
        node = child
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def _without(alert: dict, key: str) -> dict:
    return {k: v for k, v in alert.items() if k != key}


class _Record(Mapping[str, Any]):
    """A read-only Mapping that is not a dict: the reference calls ``.get`` on it."""

    def __init__(self, data: dict) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


EDGES: list[tuple[str, str, Any]] = [
    # proto3 implicit presence: a non-optional zero is left out, bitwise (so -0.0 is written).
    ("zero double", "diaSource.ra", 0.0),
    ("negative zero double", "diaSource.ra", -0.0),
    ("negative zero float", "diaSource.x", -0.0),
    ("zero int32", "diaSource.detector", 0),
    ("zero int64 at the root", "diaSourceId", 0),
    # optional fields: a zero is written, None is absent.
    ("zero optional float", "diaSource.raErr", 0.0),
    ("zero optional long", "diaSource.diaObjectId", 0),
    ("false optional bool", "diaSource.centroid_flag", False),
    ("None for a non-optional field", "diaSource.ra", None),
    ("None for a required record", "diaSource", None),
    ("empty optional string", "target_name", ""),
    ("non-ASCII string", "target_name", "\u00e9t\u00e9 \U0001f52d"),
    ("valid UTF-8 bytes for a string", "target_name", b"caf\xc3\xa9"),
    ("negative int32 (ten-byte varint)", "diaSource.detector", -1),
    ("int32 minimum", "diaSource.detector", -(2**31)),
    ("int64 minimum", "diaSourceId", -(2**63)),
    ("int64 maximum", "diaSource.diaObjectId", 2**63 - 1),
    ("NaN float", "diaSource.raErr", math.nan),
    ("infinite double", "diaSource.dec", -math.inf),
    ("double beyond float32 range in a float (inf)", "diaSource.raErr", 1e39),
    ("float32 subnormal", "diaSource.x", 1e-40),
    ("int for a float", "diaSource.x", 3),
    ("bool for a double", "diaSource.ra", True),
    ("int for a bool", "diaSource.centroid_flag", 2),
    ("numpy float32", "diaSource.x", np.float32(1.25)),
    ("numpy float64", "diaSource.ra", np.float64(2.5)),
    ("numpy int64", "diaSource.diaObjectId", np.int64(-7)),
    ("numpy int32 for an int32", "diaSource.detector", np.int32(-3)),
    ("numpy bool", "diaSource.centroid_flag", np.bool_(True)),
    ("empty wrapped list", "prvDiaSources", []),
    ("None wrapped list", "prvDiaSources", None),
    ("tuple list", "prvDiaForcedSources", ()),
    ("empty cutout", "cutoutScience", b""),
    ("cutout of 3 MB (spliced)", "cutoutDifference", bytes(range(256)) * 12_288),
    ("cutout just under the splice size", "cutoutTemplate", b"\x01" * 2047),
    ("a record as a non-dict Mapping", "diaObject", "MAPPING"),
]


@pytest.mark.parametrize(("name", "path", "value"), EDGES, ids=[e[0] for e in EDGES])
def test_edge_values_are_byte_identical(native, upb, alerts, name, path, value) -> None:
    base = next(a for a in alerts if a["prvDiaSources"] and a["diaObject"])
    if value == "MAPPING":
        value = _Record(base["diaObject"])
    _assert_identical(native, upb, _with(base, path, value))


def test_missing_keys_and_extra_keys_are_byte_identical(native, upb, alerts) -> None:
    base = next(a for a in alerts if a["prvDiaSources"])
    _assert_identical(native, upb, _without(base, "diaObject"))
    _assert_identical(native, upb, _without(base, "cutoutScience"))
    _assert_identical(native, upb, {**base, "notInTheSchema": object()})
    source = {k: v for k, v in base["diaSource"].items() if k != "ra"}
    _assert_identical(native, upb, {**base, "diaSource": source})
    # Keys out of schema order: the ordered fast path must fall back to look-ups.
    reordered = dict(reversed(list(base["diaSource"].items())))
    _assert_identical(native, upb, {**base, "diaSource": reordered})


def test_a_list_from_a_generator_is_byte_identical(native, upb, alerts) -> None:
    base = next(a for a in alerts if a["prvDiaSources"])
    expected = upb.dumps(base)
    assert native.dumps({**base, "prvDiaSources": (s for s in base["prvDiaSources"])}) == expected


def test_timestamps_from_datetimes_and_ints_agree(native, upb, alerts) -> None:
    schema = load_schema()
    if "mpc_orbits" not in {f["name"] for f in schema.resolved["fields"]}:
        pytest.fail("schema has no mpc_orbits record to carry a timestamp")
    base = next(a for a in alerts if a["prvDiaSources"])
    orbit = {"fitting_datetime": dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)}
    # An aware datetime in another zone is the same instant.
    shifted = {
        "fitting_datetime": dt.datetime(
            2031, 5, 6, 9, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))
        )
    }
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    micros = {
        "fitting_datetime": (orbit["fitting_datetime"] - epoch) // dt.timedelta(microseconds=1)
    }
    data = _assert_identical(native, upb, {**base, "mpc_orbits": orbit})
    assert native.dumps({**base, "mpc_orbits": shifted}) == data
    assert native.dumps({**base, "mpc_orbits": micros}) == data
    before_epoch = {"fitting_datetime": dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC)}
    _assert_identical(native, upb, {**base, "mpc_orbits": before_epoch})


HOSTILE: list[tuple[str, Any, str]] = [
    ("str for a double", ("diaSource.ra", "1.0"), r"diaSource\.ra: expected double"),
    ("str for a float", ("diaSource.x", "x"), r"diaSource\.x: expected float"),
    ("str in a nested list", ("prvDiaSources.0.psfFlux", "x"), r"prvDiaSources\[0\]\.psfFlux"),
    ("float for an int64", ("diaSourceId", 1.5), r"diaSourceId: expected int64"),
    ("bool for an int64", ("diaSourceId", True), r"diaSourceId: expected int64, got bool"),
    ("int32 overflow", ("diaSource.detector", 2**31), r"diaSource\.detector: .*out of range"),
    ("int64 overflow", ("diaSourceId", 2**63), r"diaSourceId: .*out of range"),
    ("float for a bool", ("diaSource.centroid_flag", 1.0), r"centroid_flag: expected boolean"),
    ("int too big for a double", ("diaSource.ra", 2**1100), r"diaSource\.ra: expected double"),
    ("str for bytes", ("cutoutScience", "not bytes"), r"cutoutScience: expected bytes"),
    ("invalid UTF-8 bytes", ("target_name", b"\xff"), r"target_name: .*not UTF-8"),
    ("lone surrogate", ("target_name", "\ud800"), r"target_name: string cannot be encoded"),
    ("str for a list", ("prvDiaSources", "abc"), r"prvDiaSources: expected a list"),
    ("dict for a list", ("prvDiaSources", {}), r"prvDiaSources: expected a list"),
    ("None in a list", ("prvDiaSources.0", None), r"prvDiaSources\[0\]: expected record"),
    ("int for a record", ("diaSource", 5), r"diaSource: expected record .*diaSource"),
    ("list for a record", ("diaObject", []), r"diaObject: expected record"),
    ("int in a list of records", ("prvDiaSources.0", 3), r"prvDiaSources\[0\]: expected record"),
    ("an object for an int", ("diaSourceId", object()), r"diaSourceId: expected int64"),
]


STRICTER = {"dict for a list"}
"""The reference does ``list(value)`` and so encodes ``{}`` as an empty list."""


@pytest.mark.parametrize(("name", "change", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_records_that_do_not_fit_are_encode_errors_naming_the_field(
    native, upb, alerts, name, change, message
) -> None:
    base = next(a for a in alerts if a["prvDiaSources"] and a["diaObject"])
    alert = _with(base, *change)
    with pytest.raises(EncodeError, match=message) as info:
        native.dumps(alert)
    assert info.value.codec == "protobuf"
    assert "Protobuf mirror" in str(info.value)
    # The reference refuses these too (the native engine is not looser), except where the
    # native one is documented to be stricter.
    if name not in STRICTER:
        with pytest.raises(EncodeError):
            upb.dumps(alert)


@pytest.mark.parametrize(
    ("what", "value", "message"),
    [
        ("naive datetime", dt.datetime(2031, 1, 1), r"mpc_orbits\.fitting_datetime: .*aware"),
        ("float", 1.5, r"mpc_orbits\.fitting_datetime: expected timestamp"),
        ("str", "2031-01-01", r"mpc_orbits\.fitting_datetime: expected timestamp"),
        (
            "year 9999, the largest datetime (fits in int64)",
            dt.datetime(9999, 12, 31, tzinfo=dt.UTC) + dt.timedelta(0),
            None,
        ),
    ],
)
def test_timestamps_that_do_not_fit(native, alerts, what, value, message) -> None:
    base = alerts[0]
    alert = {**base, "mpc_orbits": {"fitting_datetime": value}}
    if message is None:  # 9999-12-31 is ~2.5e17 µs: fits in int64, and round-trips
        assert native.loads(native.dumps(alert))["mpc_orbits"]["fitting_datetime"] == value
        return
    with pytest.raises(EncodeError, match=message):
        native.dumps(alert)


def test_an_alert_that_is_not_a_mapping_is_an_encode_error(native) -> None:
    for bad in (None, 5, "alert", [1, 2]):
        with pytest.raises(EncodeError, match="Protobuf mirror"):
            native.dumps(bad)  # type: ignore[arg-type]


def test_a_value_that_mutates_its_record_while_encoded_is_survived(native, alerts) -> None:
    """Python code run by a conversion (``__float__``) may empty the dict being walked: the
    encoder holds what it reads and finishes or refuses, without crashing."""
    base = next(a for a in alerts if a["prvDiaSources"])
    source = dict(base["diaSource"])

    class Clearing:
        def __float__(self) -> float:
            source.clear()
            return 1.0

    source["ra"] = Clearing()
    try:
        data = native.dumps({**base, "diaSource": source})
    except EncodeError:
        return
    assert native.loads(data)["diaSourceId"] == base["diaSourceId"]


# ---------------------------------------------------------------- shapes no shipped schema has
#
# Every shipped Rubin schema has arrays of records only; the mirror's rules also cover arrays of
# scalars (packed for numbers, one element per tag for strings and bytes; wrapped when
# nullable). A small schema with every such shape is generated and compiled through the same
# protogen/protoc path as the alert mirror, and the native encoder held to upb on it.

SHAPES_SCHEMA = {
    "type": "record",
    "name": "alert",
    "namespace": "lsst.v99_0",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "doubles", "type": {"type": "array", "items": "double"}},
        {"name": "floats", "type": {"type": "array", "items": "float"}},
        {"name": "ints", "type": {"type": "array", "items": "int"}},
        {"name": "longs", "type": {"type": "array", "items": "long"}},
        {"name": "flags", "type": {"type": "array", "items": "boolean"}},
        {"name": "names", "type": {"type": "array", "items": "string"}},
        {"name": "blobs", "type": {"type": "array", "items": "bytes"}},
        {"name": "maybeDoubles", "type": ["null", {"type": "array", "items": "double"}]},
        {"name": "maybeInts", "type": ["null", {"type": "array", "items": "int"}]},
        {"name": "maybeNames", "type": ["null", {"type": "array", "items": "string"}]},
        {"name": "label", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "flag", "type": "boolean"},
    ],
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    import json

    from alertbench.refimpl import _native
    from alertbench.refimpl.alert.schema import AlertSchema, resolve_names
    from alertbench.refimpl.codecs.protobuf import _RecordCodec
    from alertbench.refimpl.codecs.protoc import build
    from alertbench.refimpl.codecs.protogen import generate_proto

    schema = AlertSchema(
        version="99.0",
        major=99,
        minor=0,
        schema_id=9900,
        definition=SHAPES_SCHEMA,
        resolved=resolve_names(SHAPES_SCHEMA),
        parsed=None,
        lsst=None,
    )
    source = tmp_path_factory.mktemp("proto") / "lsst_alert_v99_0.proto"
    source.write_text(generate_proto(schema))
    module = build(source)[0]
    return _RecordCodec(schema.resolved, module), _native.Schema(json.dumps(SHAPES_SCHEMA))


INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOAT32 = st.floats(width=32)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
SHAPES = st.fixed_dictionaries(
    {
        "id": INT64,
        "doubles": st.lists(st.floats(), max_size=4),
        "floats": st.lists(FLOAT32, max_size=4),
        "ints": st.lists(INT32, max_size=4),
        "longs": st.lists(INT64, max_size=4),
        "flags": st.lists(st.booleans(), max_size=4),
        "names": st.lists(TEXT, max_size=4),
        "blobs": st.lists(st.binary(max_size=8), max_size=4),
        "maybeDoubles": st.none() | st.lists(st.floats(allow_nan=False), max_size=4),
        "maybeInts": st.none() | st.lists(INT32, max_size=4),
        "maybeNames": st.none() | st.lists(TEXT, max_size=4),
        "label": TEXT,
        "blob": st.binary(max_size=8),
        "flag": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(record=SHAPES)
def test_scalar_arrays_packed_and_wrapped_are_byte_identical(shapes, record) -> None:
    codec, schema = shapes
    assert schema.encode_protobuf(record) == _reference_body_of(codec, record)


def test_scalar_arrays_round_trip_through_the_native_decoder(shapes) -> None:
    codec, schema = shapes
    record = {
        "id": 7,
        "doubles": [0.0, -1.5, 2.25],
        "floats": [0.5, -0.0],
        "ints": [-1, 0, 2**31 - 1],
        "longs": [-(2**63), 300],
        "flags": [True, False, True],
        "names": ["", "a", "\u00e9"],
        "blobs": [b"", b"\x00\xff"],
        "maybeDoubles": [],
        "maybeInts": None,
        "maybeNames": ["x"],
        "label": "",
        "blob": b"",
        "flag": False,
    }
    data = schema.encode_protobuf(record)
    assert data == _reference_body_of(codec, record)
    assert schema.decode_protobuf(data) == record


def _reference_body_of(codec, record: dict) -> bytes:
    message = codec.to_message(record)
    message.packet_end = PACKET_END_VALUE
    body: bytes = message.SerializeToString()
    return body


def test_a_cyclic_record_of_a_recursive_schema_is_refused_not_a_crash() -> None:
    import json

    from alertbench.refimpl import _native

    schema = _native.Schema(
        json.dumps(
            {
                "type": "record",
                "name": "node",
                "fields": [
                    {"name": "value", "type": "long"},
                    {"name": "next", "type": ["null", "node"]},
                ],
            }
        )
    )
    chain: dict = {"value": 1, "next": None}
    for i in range(50):  # a finite chain encodes, nested 50 deep
        chain = {"value": i, "next": chain}
    assert schema.decode_protobuf(schema.encode_protobuf(chain))["next"]["value"] == 48
    cyclic: dict = {"value": 1}
    cyclic["next"] = cyclic
    with pytest.raises(_native.AvroEncodeError, match="deeper than the limit"):
        schema.encode_protobuf(cyclic)


@pytest.mark.parametrize(
    ("avro_type", "value", "message"),
    [
        ({"type": "map", "values": "long"}, {"a": 1}, "map has no Protobuf mirror"),
        (
            ["null", "long", "string"],
            1,
            r"a union of \[null, long, string\] has no Protobuf mirror",
        ),
        (
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            "C",
            "'C' is not a symbol of enum E",
        ),
        ({"type": "fixed", "name": "F", "size": 4}, b"abc", "fixed F needs 4 bytes, got 3"),
    ],
)
def test_types_without_a_mirror_or_values_outside_them_are_refused(
    avro_type, value, message
) -> None:
    import json

    from alertbench.refimpl import _native

    schema = _native.Schema(
        json.dumps({"type": "record", "name": "r", "fields": [{"name": "f", "type": avro_type}]})
    )
    with pytest.raises(_native.AvroEncodeError, match=f"^f: {message}"):
        schema.encode_protobuf({"f": value})
