"""Hypothesis strategies producing valid Python records for an Avro schema (fastavro-parsed)."""

from __future__ import annotations

import datetime

import fastavro
from hypothesis import strategies as st

UTC = datetime.UTC
# datetime's range, in microseconds since the epoch
TS_MIN = -62135596800000000
TS_MAX = 253402300799999999


def record_strategy(definition, max_list: int = 3):
    named: dict = {}
    parsed = fastavro.parse_schema(definition, named_schemas=named)
    return parsed, _strategy(parsed, named, max_list)


def _strategy(schema, named, max_list):
    if isinstance(schema, list):
        return st.one_of([_strategy(s, named, max_list) for s in schema])
    if isinstance(schema, str):
        prim = _primitive(schema)
        if prim is not None:
            return prim
        return st.deferred(lambda: _strategy(named[schema], named, max_list))
    t = schema["type"]
    lt = schema.get("logicalType")
    if t == "long" and lt in ("timestamp-micros", "timestamp-millis"):
        lo, hi = (
            (TS_MIN, TS_MAX) if lt == "timestamp-micros" else (TS_MIN // 1000 + 1, TS_MAX // 1000)
        )
        aware = st.datetimes(
            min_value=datetime.datetime(1, 1, 2),
            max_value=datetime.datetime(9999, 12, 30),
            timezones=st.just(UTC),
        )
        return st.one_of(st.integers(lo, hi), aware)
    if t == "record" or t == "error":
        required, optional = {}, {}
        for f in schema["fields"]:
            s = _strategy(f["type"], named, max_list)
            (optional if "default" in f else required)[f["name"]] = s
        return st.fixed_dictionaries(required, optional=optional)
    if t == "array":
        return st.lists(_strategy(schema["items"], named, max_list), max_size=max_list)
    if t == "map":
        return st.dictionaries(
            st.text(max_size=8), _strategy(schema["values"], named, max_list), max_size=max_list
        )
    if t == "enum":
        return st.sampled_from(schema["symbols"])
    if t == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    prim = _primitive(t)
    assert prim is not None, schema
    return prim


def _primitive(name):
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        # floats beyond f32 range round to inf like fastavro; ints are promoted like fastavro
        "float": st.one_of(
            st.floats(allow_nan=False),
            st.floats(width=32, allow_nan=False),
            st.integers(-(2**60), 2**60),
        ),
        "double": st.one_of(st.floats(allow_nan=False), st.integers(-(2**53), 2**53)),
        "string": st.text(max_size=12),
        "bytes": st.binary(max_size=40),
    }.get(name)
