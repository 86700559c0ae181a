"""Every Rubin alert schema shipped by lsst-alert-packet (3.0 ... 11.1) and the project's VOEvent 3
schema: random valid records encode byte-identically to fastavro and decode to equal values;
the sample alerts shipped with each version too."""

from __future__ import annotations

import json
import math

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.native.columns_ref import check_columns
from tests.unit.native.conftest import (
    _native,
    fa_decode,
    fa_encode,
    load_lsst_definition,
    lsst_versions,
)
from tests.unit.native.strategies import record_strategy

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

VERSIONS = lsst_versions()
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def test_all_versions_found():
    names = [v for v, _ in VERSIONS]
    assert "3.0" in names and "11.1" in names and len(names) >= 15


def _check(schema, parsed, record):
    ref = fa_encode(parsed, record)
    assert schema.encode(record) == ref
    expected = fa_decode(parsed, ref)
    got = schema.decode(ref)
    assert got == expected
    assert schema.encode(got) == ref
    return ref, expected


def _property_test(definition):
    named: dict = {}
    parsed = fastavro.parse_schema(definition, named_schemas=named)
    _, strategy = record_strategy(definition)
    schema = _native.Schema(json.dumps(definition))

    @SETTINGS
    @given(st.lists(strategy, min_size=1, max_size=3))
    def run(records):
        bodies, decoded = zip(*(_check(schema, parsed, r) for r in records), strict=False)
        check_columns(schema.decode_columns(list(bodies)), parsed, named, list(decoded))

    run()


@pytest.mark.parametrize("version,path", VERSIONS, ids=[v for v, _ in VERSIONS])
def test_random_records_match_fastavro(version, path):
    _property_test(load_lsst_definition(path))


def test_random_voevent3_records_match_fastavro(voevent_definition):
    _property_test(voevent_definition)


@pytest.mark.parametrize("version,path", VERSIONS, ids=[v for v, _ in VERSIONS])
def test_shipped_sample_data(version, path):
    definition = load_lsst_definition(path)
    parsed = fastavro.parse_schema(definition)
    schema = _native.Schema(json.dumps(definition))
    sample = path.parent / "sample_data"
    checked = 0
    avro = sample / "fakeAlert.avro"
    if avro.exists():
        with open(avro, "rb") as f:
            for record in fastavro.reader(f):
                _check(schema, parsed, record)
                checked += 1
    js = sample / "alert.json"
    if js.exists():
        record = json.loads(js.read_text())
        try:
            fa_encode(parsed, record)
        except Exception:  # not a valid record for fastavro either
            pass
        else:
            _check(schema, parsed, record)  # fields left out: written from their defaults
            checked += 1
    # Every shipped version has sample data today; losing it is a failure to look at, not a
    # skip that would quietly drop a version from this check.
    assert checked, f"schema {version}: lsst-alert-packet ships no readable sample data"


def test_float_rounding_specials():
    definition = {
        "type": "record",
        "name": "F",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "u", "type": ["null", "float"]},
            {"name": "d", "type": "double"},
        ],
    }
    parsed = fastavro.parse_schema(definition)
    schema = _native.Schema(json.dumps(definition))
    for x in [
        0.0,
        -0.0,
        1e-46,
        1e-45,
        3.4028235e38,
        3.4028236e38,
        1e39,
        -1e39,
        math.inf,
        -math.inf,
        math.nan,
        0.1,
        1 / 3,
        16777217.0,
        2.0**-149,
        2.0**-150,
        5e-324,
    ]:
        rec = {"f": x, "u": x, "d": x}
        assert schema.encode(rec) == fa_encode(parsed, rec), x
        got = schema.decode(schema.encode(rec))
        exp = fa_decode(parsed, fa_encode(parsed, rec))
        assert repr(got) == repr(exp)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(), st.floats(width=32), st.integers(-(2**70), 2**70)))
def test_float_values_any(x):
    definition = {
        "type": "record",
        "name": "F",
        "fields": [{"name": "f", "type": "float"}, {"name": "d", "type": "double"}],
    }
    parsed = fastavro.parse_schema(definition)
    schema = _native.Schema(json.dumps(definition))
    rec = {"f": x, "d": x}
    try:
        ref = fa_encode(parsed, rec)
    except (OverflowError, ValueError):
        with pytest.raises(ValueError):
            schema.encode(rec)
        return
    assert schema.encode(rec) == ref
