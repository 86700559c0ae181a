"""Hypothesis strategies that build alerts from the Avro schema itself (any field, any shape)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alertbench.refimpl.alert.records import FieldSpec, field_specs
from alertbench.refimpl.alert.schema import AlertSchema
from hypothesis import strategies as st

# Strings XML 1.0 can carry in attributes and text unchanged: no control characters (their
# normalisation is listed in schemas/voevent-mapping.md), no surrogates; non-empty, because an
# empty Table cell reads back as null in VOEvent.
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
DOUBLE = st.floats(allow_nan=False, allow_infinity=False)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TIMESTAMP = st.datetimes(
    min_value=dt.datetime(1970, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.just(dt.UTC),
)


def _value(spec: FieldSpec, depth: int) -> st.SearchStrategy[Any]:
    kind, inner = spec.kind, spec.inner
    if isinstance(inner, dict) and inner.get("logicalType", "").startswith("timestamp-"):
        base: st.SearchStrategy[Any] = TIMESTAMP
    elif kind == "int":
        base = INT32
    elif kind == "long":
        base = INT64
    elif kind == "float":
        base = FLOAT32
    elif kind == "double":
        base = DOUBLE
    elif kind == "boolean":
        base = st.booleans()
    elif kind == "string":
        base = TEXT
    elif kind == "bytes":
        base = st.binary(max_size=64)
    elif kind == "record":
        base = record_strategy(inner, depth + 1)
    elif kind == "array":
        base = st.lists(record_strategy(spec.item, depth + 1), max_size=3)
    else:
        raise NotImplementedError(kind)
    return st.one_of(st.none(), base) if spec.nullable else base


def record_strategy(record: dict[str, Any], depth: int = 0) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({spec.name: _value(spec, depth) for spec in field_specs(record)})


def alert_strategy(schema: AlertSchema) -> st.SearchStrategy[dict]:
    """Alerts valid against ``schema``; the triggering diaSource is always there."""
    return record_strategy(schema.resolved)
