"""Encoding: fastavro's value handling (union branch choice, defaults, promotions) and errors that
name the field path."""

from __future__ import annotations

import collections
import copy
import datetime
import json

import fastavro
import numpy as np
import pytest

from tests.unit.native.conftest import _native, fa_decode, fa_encode

AvroEncodeError = _native.AvroEncodeError


def make(fields, name="T"):
    d = {"type": "record", "name": name, "fields": fields}
    return _native.Schema(json.dumps(d)), fastavro.parse_schema(d)


def same(s, parsed, rec):
    ref = fa_encode(parsed, rec)
    assert s.encode(rec) == ref
    return ref


def test_error_names_the_field_path(alerts, alert_schema):
    a = copy.deepcopy(alerts[0])
    a["diaSource"]["ra"] = "12.5"
    with pytest.raises(AvroEncodeError, match=r"^diaSource\.ra: expected double, got str$"):
        alert_schema.encode(a)
    a = copy.deepcopy(alerts[0])
    a["prvDiaSources"][1]["psfFlux"] = "x"
    with pytest.raises(
        AvroEncodeError, match=r"^prvDiaSources\[1\]\.psfFlux: expected float or null, got str$"
    ):
        alert_schema.encode(a)
    a = copy.deepcopy(alerts[0])
    del a["diaSource"]["ra"]
    with pytest.raises(AvroEncodeError, match=r"^diaSource\.ra: missing"):
        alert_schema.encode(a)
    a = copy.deepcopy(alerts[0])
    a["diaSource"]["detector"] = 2**40
    with pytest.raises(
        AvroEncodeError, match=r"^diaSource\.detector: int value .* out of 32-bit range"
    ):
        alert_schema.encode(a)
    with pytest.raises(AvroEncodeError, match="expected record"):
        alert_schema.encode([1, 2])
    a = copy.deepcopy(alerts[0])
    a["cutoutScience"] = "not bytes"
    with pytest.raises(AvroEncodeError, match=r"^cutoutScience: expected bytes or null, got str"):
        alert_schema.encode(a)


def test_union_promotions_match_fastavro():
    s, p = make(
        [
            {"name": "f", "type": ["null", "float"]},
            {"name": "d", "type": ["null", "double"]},
            {"name": "l", "type": ["null", "long"]},
            {"name": "i", "type": ["null", "int"]},
            {"name": "b", "type": ["null", "boolean"]},
            {"name": "fd", "type": ["float", "double"]},
            {"name": "il", "type": ["int", "long", "string"]},
            {"name": "sn", "type": ["string", "null"]},
        ]
    )
    for rec in [
        {"f": 1, "d": 2, "l": 3, "i": 4, "b": True, "fd": 1.5, "il": 2**40, "sn": None},
        {"f": None, "d": None, "l": None, "i": None, "b": None, "fd": 3, "il": 5, "sn": "x"},
        {
            "f": 2.0**200,
            "d": -0.0,
            "l": -(2**63),
            "i": -(2**31),
            "b": False,
            "fd": 0.1,
            "il": "s",
            "sn": "",
        },
    ]:
        same(s, p, rec)
    # fastavro refuses these in unions: bool for float/int, ints beyond the branch range
    for bad in [{"f": True}, {"i": 2**31}, {"l": 2**63}, {"b": 1}, {"il": 1.5}]:
        rec = {
            "f": None,
            "d": None,
            "l": None,
            "i": None,
            "b": None,
            "fd": 1.0,
            "il": 1,
            "sn": None,
        } | bad
        with pytest.raises(ValueError):
            fa_encode(p, rec)
        with pytest.raises(AvroEncodeError):
            s.encode(rec)


def test_numpy_scalars():
    s, p = make(
        [
            {"name": "f", "type": "float"},
            {"name": "uf", "type": ["null", "float"]},
            {"name": "d", "type": ["null", "double"]},
            {"name": "l", "type": ["null", "long"]},
            {"name": "i", "type": "int"},
            {"name": "b", "type": "boolean"},
            {"name": "arr", "type": {"type": "array", "items": "double"}},
        ]
    )
    rec = {
        "f": np.float32(1.1),
        "uf": np.float64(2.2),
        "d": np.float32(3.3),
        "l": np.int64(2**62),
        "i": np.int32(-5),
        "b": np.bool_(True),
        "arr": np.arange(4, dtype=np.float64),
    }
    ref = same(s, p, rec)
    assert s.decode(ref)["l"] == 2**62


def test_defaults_and_missing_fields():
    s, p = make(
        [
            {"name": "a", "type": "string", "default": "ICRS"},
            {"name": "b", "type": ["null", "long"], "default": None},
            {"name": "c", "type": {"type": "array", "items": "string"}, "default": []},
            {"name": "d", "type": ["null", "string"]},
            {"name": "e", "type": ["long", "null"], "default": 5},
            {"name": "m", "type": {"type": "map", "values": "long"}, "default": {"z": 1, "a": 2}},
        ]
    )
    ref = same(s, p, {})
    assert s.decode(ref) == {
        "a": "ICRS",
        "b": None,
        "c": [],
        "d": None,
        "e": 5,
        "m": {"z": 1, "a": 2},
    }
    same(s, p, {"a": "x", "extra": object()})  # extra keys are ignored, like fastavro
    s2, p2 = make([{"name": "x", "type": "long"}])
    with pytest.raises(ValueError):
        fa_encode(p2, {})
    with pytest.raises(AvroEncodeError, match=r"^x: missing"):
        s2.encode({})


def test_key_order_and_mapping_types(alerts, alert_schema, alert_bodies):
    a = alerts[3]
    rev = dict(reversed(list(a.items())))
    rev["diaSource"] = dict(reversed(list(a["diaSource"].items())))
    assert alert_schema.encode(rev) == alert_bodies[3]
    od = collections.OrderedDict(a)
    assert alert_schema.encode(od) == alert_bodies[3]
    # keys that are equal but not the same objects as the schema's
    fresh = json.loads(json.dumps({k: v for k, v in a.items() if not isinstance(v, bytes)}))
    for k in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
        fresh[k] = a[k]
    assert alert_schema.encode(fresh) == alert_schema.encode(a)


def test_arrays_from_tuples_and_iterables():
    s, p = make([{"name": "a", "type": {"type": "array", "items": "long"}}])
    assert s.encode({"a": (1, 2, 3)}) == same(s, p, {"a": [1, 2, 3]})
    assert s.encode({"a": range(3)}) == fa_encode(p, {"a": [0, 1, 2]})
    with pytest.raises(AvroEncodeError, match="expected array"):
        s.encode({"a": "abc"})


def test_tuple_notation_and_record_unions():
    a = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "long"}]}
    b = {
        "type": "record",
        "name": "B",
        "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": "long"}],
    }
    s, p = make([{"name": "u", "type": ["null", a, b]}])
    same(s, p, {"u": {"x": 1}})
    same(s, p, {"u": {"x": 1, "y": 2}})  # most matching fields wins
    same(s, p, {"u": ("A", {"x": 1, "y": 2})})
    same(s, p, {"u": {"x": 1, "y": 2, "-type": "A"}})


def test_bytes_like_and_fixed():
    s, p = make(
        [
            {"name": "b", "type": "bytes"},
            {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}},
            {"name": "big", "type": ["null", "bytes"]},
        ]
    )
    rec = {"b": bytearray(b"ab"), "f": b"abcd", "big": bytes(range(256)) * 40}
    ref = same(s, p, rec)
    assert s.encode({"b": memoryview(b"ab"), "f": b"abcd", "big": rec["big"]}) == ref
    assert s.decode(ref) == fa_decode(p, ref)
    with pytest.raises(AvroEncodeError, match="needs 4 bytes"):
        s.encode({"b": b"", "f": b"abc", "big": None})


def test_enum_and_timestamps():
    s, p = make(
        [
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["a", "b"]}},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "tm", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
            {"name": "lt", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        ]
    )
    utc = datetime.UTC
    for rec in [
        {
            "e": "b",
            "t": datetime.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=utc),
            "tm": 12345,
            "lt": datetime.datetime(1969, 12, 31, 23, 59, 59, 1),
        },
        {
            "e": "a",
            "t": -5,
            "tm": datetime.datetime(2, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
            "lt": 0,
        },
        {
            "e": "a",
            "t": datetime.datetime(2030, 6, 1),
            "tm": None,
            "lt": 7,
        },  # naive: local time like fastavro
    ]:
        ref = same(s, p, rec)
        assert s.decode(ref) == fa_decode(p, ref)
    with pytest.raises(AvroEncodeError, match="not a symbol"):
        s.encode({"e": "c", "t": 0, "tm": None, "lt": 0})


def test_unsupported_schemas_raise_value_error():
    for bad in [
        "not json",
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Unknown"}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}, {"name": "a", "type": "long"}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4}}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": {"type": "string", "logicalType": "uuid"}}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "long", "default": "x"}]}',
        '[["null"]]',
    ]:
        with pytest.raises(ValueError):
            _native.Schema(bad)


def test_namespaces_resolve_like_fastavro():
    d = {
        "type": "record",
        "name": "Outer",
        "namespace": "ns.one",
        "fields": [
            {
                "name": "a",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "x", "type": "long"}],
                },
            },
            {"name": "b", "type": "Inner"},
            {"name": "c", "type": "ns.one.Inner"},
            {
                "name": "d",
                "type": {
                    "type": "record",
                    "name": "other.Deep",
                    "fields": [
                        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["p"]}}
                    ],
                },
            },
            {"name": "f", "type": "other.E"},
        ],
    }
    s = _native.Schema(json.dumps(d))
    p = fastavro.parse_schema(d)
    rec = {"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}, "d": {"e": "p"}, "f": "p"}
    assert s.encode(rec) == fa_encode(p, rec)
