"""The JSON codec: exact round trips for every shipped schema version, documents valid against
the generated JSON Schema, agreement with the Avro path, and hostile input refused with a type."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re

import jsonschema
import pytest
from alertbench.refimpl.alert.records import field_specs
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import (
    get_serializer,
    serializer_for_message,
    serializer_name_for,
)
from alertbench.refimpl.codecs.docs import write_all
from alertbench.refimpl.codecs.jsonalert import (
    MEDIA_TYPE,
    JsonSerializer,
    json_schema,
    schema_file,
    schema_uri,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertbench.errors import DecodeError, EncodeError
from alertbench.resources import schemas_dir
from tests.support.strategies import alert_strategy

VERSIONS = available_versions()
# hypothesis warns that the schema-built strategies have a long repr; it costs nothing here
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@functools.cache
def _validator(version: str | None = None) -> jsonschema.Draft202012Validator:
    schema = json_schema(load_schema(version))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _validate(validator: jsonschema.Draft202012Validator, data: bytes) -> None:
    errors = [e.message[:200] for e in validator.iter_errors(json.loads(data))]
    assert not errors, errors[:3]


@pytest.fixture(scope="module")
def codec() -> JsonSerializer:
    return JsonSerializer()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return _validator()


# -- round trips --------------------------------------------------------------------------------


def test_simulated_alerts_round_trip_exactly_and_validate(codec, validator, alerts) -> None:
    for alert in alerts:
        data = codec.dumps(alert)
        assert codec.loads(data) == alert
    for alert in alerts[:15]:  # jsonschema is pure Python: a sample is enough for the schema
        _validate(validator, codec.dumps(alert))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_shipped_version_round_trips_simulated_alerts(version) -> None:
    sim = AlertSimulator(
        SimulationConfig(
            seed=5, schema_version=version, alerts_per_visit_mean=4, alerts_per_visit_sigma=0.0
        )
    )
    codec = JsonSerializer(schema_version=version)
    validator = _validator(version)
    for alert in sim.visit(1).alerts():
        data = codec.dumps(alert)
        assert codec.loads(data) == alert
        _validate(validator, data)
        # and a consumer configured for the latest schema reads it by its "$schema"
        assert JsonSerializer().loads(data) == alert


STRATEGIES = {version: alert_strategy(load_schema(version)) for version in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_alerts_round_trip_and_validate_in_every_version(version, data) -> None:
    alert = data.draw(STRATEGIES[version], label="alert")
    codec = JsonSerializer(schema_version=version)
    encoded = codec.dumps(alert)
    assert codec.loads(encoded) == alert
    _validate(_validator(version), encoded)


def test_floats_decode_to_what_the_avro_path_gives(codec, alerts) -> None:
    avro = get_serializer("avro", engine="fastavro")
    for alert in alerts[:20]:
        via_avro = avro.loads(avro.dumps(alert))
        assert codec.loads(codec.dumps(via_avro)) == via_avro
    # the text of a float32 field is the shortest repr of the double fastavro returns
    flux = avro.loads(avro.dumps(alerts[0]))["diaSource"]["psfFlux"]
    assert f'"psfFlux":{flux!r}'.encode() in codec.dumps(alerts[0])


def test_a_float32_field_keeps_the_float32_value(codec, alerts) -> None:
    alert = dict(alerts[0], diaSource=dict(alerts[0]["diaSource"], psfFlux=0.1))
    avro = get_serializer("avro", engine="fastavro")
    via_avro = avro.loads(avro.dumps(alert))
    assert via_avro["diaSource"]["psfFlux"] == 0.10000000149011612
    assert codec.loads(codec.dumps(via_avro))["diaSource"]["psfFlux"] == 0.10000000149011612


@pytest.mark.parametrize("value", [2**53 + 1, 2**63 - 1, -(2**63), 1_234_567_890_123_456_789])
def test_64_bit_ids_are_exact_json_numbers(codec, validator, alerts, value) -> None:
    alert = dict(alerts[0], diaSourceId=value)
    alert["diaSource"] = dict(alert["diaSource"], diaSourceId=value, diaObjectId=value)
    data = codec.dumps(alert)
    assert f'"diaSourceId":{value},'.encode() in data  # a number, not a string
    back = codec.loads(data)
    assert back["diaSourceId"] == value and back["diaSource"]["diaObjectId"] == value
    _validate(validator, data)
    assert "2**53" in json_schema()["$defs"]["long"]["description"]


def test_nan_and_infinities_round_trip_as_strings(codec, validator, alerts) -> None:
    alert = dict(alerts[0])
    alert["diaSource"] = dict(alert["diaSource"], psfFlux=math.nan, psfFluxErr=math.inf)
    alert["diaSource"]["ra"] = -math.inf  # a double
    row = dict(alert["prvDiaSources"][0], psfFlux=math.nan, psfFluxErr=None)
    alert["prvDiaSources"] = [row, *alert["prvDiaSources"][1:]]
    data = codec.dumps(alert)
    assert b'"psfFlux":"NaN"' in data and b'"psfFluxErr":"Infinity"' in data
    assert b'"ra":"-Infinity"' in data and b'"psfFluxErr":null' in data
    _validate(validator, data)
    back = codec.loads(data)
    assert math.isnan(back["diaSource"]["psfFlux"]) and back["diaSource"]["psfFluxErr"] == math.inf
    assert back["diaSource"]["ra"] == -math.inf
    assert math.isnan(back["prvDiaSources"][0]["psfFlux"])
    assert back["prvDiaSources"][0]["psfFluxErr"] is None
    assert back["prvDiaSources"][1:] == alerts[0]["prvDiaSources"][1:]
    assert codec.dumps(back) == data
    # a string field holding "NaN" stays a string
    named = dict(alerts[0], target_name="NaN")
    assert codec.loads(codec.dumps(named))["target_name"] == "NaN"


def test_an_alert_that_does_not_fit_raises_an_encode_error(codec, alerts) -> None:
    bad = dict(alerts[0], diaSource=dict(alerts[0]["diaSource"], psfFlux="bright"))
    with pytest.raises(EncodeError):
        codec.dumps(bad)
    with pytest.raises(EncodeError):
        codec.dumps(dict(alerts[0], diaSourceId=object()))


# -- the format on the wire -----------------------------------------------------------------------


def test_content_type_and_recognition(codec, alerts) -> None:
    uri = schema_uri(load_schema())
    assert codec.content_type == f'{MEDIA_TYPE}; schema="{uri}"'
    assert serializer_name_for(codec.content_type) == "json"
    data = codec.dumps(alerts[0])
    assert data.startswith(b'{"$schema":"' + uri.encode() + b'"')
    assert serializer_for_message(data) == "json"
    assert JsonSerializer.recognizes(b"  \n{") and not JsonSerializer.recognizes(b"[1]")
    for other in ("avro", "protobuf", "voevent", "voevent3"):
        assert not JsonSerializer.recognizes(get_serializer(other).dumps(alerts[0]))


def test_a_document_with_schema_not_first_still_decodes(codec, alerts) -> None:
    document = json.loads(codec.dumps(alerts[1]))
    reordered = {k: v for k, v in document.items() if k != "$schema"}
    reordered["$schema"] = document["$schema"]
    assert codec.loads(json.dumps(reordered).encode()) == alerts[1]


def test_committed_json_schemas_are_current_and_valid_json_schema() -> None:
    generated = write_all(check=True)  # raises if any committed generated file is stale
    for version in VERSIONS:
        schema = load_schema(version)
        path = schemas_dir() / "json" / schema_file(schema)
        committed = json.loads(path.read_text())
        assert committed == json_schema(schema), f"{path} is stale: run 'alertbench generate'"
        jsonschema.Draft202012Validator.check_schema(committed)
        assert committed["$id"] == schema_uri(schema)
        assert path in generated


def test_the_schema_refuses_what_the_decoder_refuses(codec, validator, alerts) -> None:
    document = json.loads(codec.dumps(alerts[0]))
    for path, value in [
        (("diaSourceId",), "12"),
        (("diaSourceId",), 2**63),
        (("diaSource", "psfFlux"), 1e39),  # beyond float32
        (("diaSource", "psfFlux"), "nan"),
        (("cutoutScience",), "not base64!"),
    ]:
        bad = json.loads(json.dumps(document))
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not validator.is_valid(bad), path
        if path != ("diaSource", "psfFlux") or value != 1e39:  # Avro float overflow is inf
            with pytest.raises(DecodeError):
                codec.loads(json.dumps(bad).encode())


# -- hostile input ----------------------------------------------------------------------------


def _replace(data: bytes, field: str, text: str) -> bytes:
    """``data`` with the first value of ``field`` (a scalar) replaced by raw JSON ``text``."""
    out, n = re.subn(
        rb'"' + field.encode() + rb'":(-?[0-9.eE+-]+|"[^"]*"|null|true|false)',
        b'"' + field.encode() + b'":' + text.encode(),
        data,
        count=1,
    )
    assert n == 1, field
    return out


HOSTILE_VALUES = {
    "deeply-nested-in-a-field": ("psfFlux", "[" * 100_000 + "]" * 100_000),
    "huge-exponent": ("psfFlux", "1e400"),
    "huge-integer": ("diaSourceId", "1" + "0" * 400),
    "int64-overflow": ("diaSourceId", str(2**63)),
    "int32-overflow": ("detector", str(2**31)),
    "string-for-int": ("diaSourceId", '"1"'),
    "bool-for-int": ("diaSourceId", "true"),
    "number-for-string": ("band", "7"),
    "object-for-float": ("psfFlux", '{"a": 1}'),
    "wrong-nonfinite-spelling": ("psfFlux", '"nan"'),
    "bare-nan-token": ("psfFlux", "NaN"),
    "null-for-required": ("diaSourceId", "null"),
    "bad-base64": ("cutoutScience", '"@@@@"'),
    "bad-timestamp": ("created_at", '"2026-13-40T99:00:00Z"'),
    "float-for-timestamp": ("created_at", "1.5"),
}


def _filled(record: dict) -> dict:
    """A type-correct value for every field of ``record`` (records the simulator leaves null)."""
    out = {}
    for spec in field_specs(record):
        if isinstance(spec.inner, dict) and spec.inner.get("logicalType") == "timestamp-micros":
            out[spec.name] = dt.datetime(2026, 12, 2, 14, 3, 7, 123456, tzinfo=dt.UTC)
        else:
            out[spec.name] = {
                "int": 7,
                "long": 2**60 + 3,
                "float": 1.5,
                "double": 0.1,
                "boolean": True,
                "string": "x",
                "bytes": b"x",
            }.get(spec.kind)
    return out


@pytest.fixture(scope="module")
def with_orbit(alerts) -> dict:
    return dict(alerts[0], mpc_orbits=_filled(load_schema().record("mpc_orbits")))


def test_timestamps_round_trip_as_rfc3339(codec, validator, with_orbit) -> None:
    data = codec.dumps(with_orbit)
    assert b'"created_at":"2026-12-02T14:03:07.123456Z"' in data
    assert codec.loads(data) == with_orbit
    _validate(validator, data)


@pytest.mark.parametrize("case", sorted(HOSTILE_VALUES))
def test_hostile_values_raise_a_decode_error(codec, with_orbit, case) -> None:
    field, text = HOSTILE_VALUES[case]
    data = _replace(codec.dumps(with_orbit), field, text)
    with pytest.raises(DecodeError) as info:
        codec.loads(data)
    assert info.value.raw is not None and len(info.value.raw) <= 1024


def test_hostile_documents_raise_a_decode_error(alerts) -> None:
    codec = JsonSerializer(max_bytes=2_000_000)
    good = codec.dumps(alerts[0])
    uri = schema_uri(load_schema()).encode()
    cases = {
        "empty": b"",
        "not-json": b"\x00\x01\xee" * 40,
        "deeply-nested-document": b"[" * 200_000 + b"]" * 200_000,
        "deeply-nested-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "array": b"[1, 2, 3]",
        "no-schema": b'{"diaSourceId": 1}',
        "unknown-schema": b'{"$schema":"https://example.org/x.json","diaSourceId":1}',
        "only-schema": b'{"$schema":"' + uri + b'"}',
        "missing-field": good.replace(b'"diaSource":', b'"diaSourceX":', 1),
        "invalid-utf8": good.replace(b'"band":"', b'"band":"\xff\xfe', 1),
        "trailing-garbage": good + b"{}",
        "oversize": b'{"$schema":"' + uri + b'","x":"' + b"a" * 2_000_000 + b'"}',
    }
    for name, data in cases.items():
        with pytest.raises(DecodeError):
            codec.loads(data)
        assert name  # every case ends in the one typed error
    for cut in [*range(0, len(good), max(1, len(good) // 97)), len(good) - 1]:
        with pytest.raises(DecodeError):
            codec.loads(good[:cut])
