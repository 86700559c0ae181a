"""The VOEvent 3 model's three bindings (Avro, JSON, Protobuf), held to each other."""

from __future__ import annotations

import functools
import json

import fastavro
import jsonschema
import pytest
from alertbench.refimpl.alert.schema import load_schema
from alertbench.refimpl.codecs import get_serializer, jsonalert
from alertbench.refimpl.codecs import voevent3_model as model
from alertbench.refimpl.codecs.voevent3 import Voevent3Serializer, voevent3_schema
from alertbench.refimpl.codecs.voevent3_bindings import _proto_classes
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from referencing import Registry, Resource

from alertbench.errors import ConfigError, DecodeError, UnknownSerializerError
from alertbench.resources import schemas_dir
from tests.support.strategies import alert_strategy

BINDINGS = ("avro", "json", "protobuf")
AVRO_CANONICAL_SHA256 = "14a33b08625c4034ae85671117f4d4cc1957224bff4d24147a8eb4dbfdff2c98"
"""The Avro binding's Parsing Canonical Form before the model existed: generating the schema
from the model must not change a byte on the wire."""


@functools.cache
def serializers() -> dict[str, Voevent3Serializer]:
    return {b: get_serializer("voevent3", binding=b) for b in BINDINGS}  # type: ignore[misc]


@functools.cache
def json_validator() -> jsonschema.Draft202012Validator:
    alert_schema = load_schema()
    payload = jsonalert.json_schema(alert_schema)
    envelope = json.loads(
        (schemas_dir() / "voevent3" / model.json_schema_file(alert_schema)).read_text()
    )
    registry = Registry().with_resource(payload["$id"], Resource.from_contents(payload))
    return jsonschema.Draft202012Validator(
        envelope, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def test_the_avro_binding_is_the_schema_it_always_was() -> None:
    canonical = to_parsing_canonical_form(fastavro.parse_schema(voevent3_schema(load_schema())))
    assert fingerprint(canonical, "SHA-256") == AVRO_CANONICAL_SHA256


@pytest.mark.parametrize("mode", ["embed", "reference"])
def test_every_binding_reads_back_the_same_event(alerts, mode: str) -> None:
    codecs = {b: get_serializer("voevent3", binding=b, mode=mode) for b in BINDINGS}
    for alert in alerts[:40]:
        events = {b: c.loads_event(c.dumps(alert)) for b, c in codecs.items()}
        assert events["json"] == events["avro"]
        assert events["protobuf"] == events["avro"]
        for c in codecs.values():
            assert c.loads(c.dumps(alert)) == codecs["avro"].loads(codecs["avro"].dumps(alert))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alert=alert_strategy(load_schema()))
def test_generated_alerts_agree_across_bindings(alert) -> None:
    codecs = serializers()
    events = {b: c.loads_event(c.dumps(alert)) for b, c in codecs.items()}
    assert events["json"] == events["avro"] and events["protobuf"] == events["avro"]


def test_json_events_are_valid_against_the_generated_json_schema(alerts) -> None:
    validator = json_validator()
    codec = serializers()["json"]
    for alert in alerts[:10]:
        document = json.loads(codec.dumps(alert))
        errors = [e.message[:200] for e in validator.iter_errors(document)]
        assert not errors, errors[:3]
    bad = json.loads(codec.dumps(alerts[0]))
    bad["role"] = "rumour"
    assert not validator.is_valid(bad)  # the schema can fail


def test_the_proto_has_every_model_field_with_its_number() -> None:
    cls = _proto_classes(load_schema().version)
    pool = cls.DESCRIPTOR.file.pool
    for entity in model.MODEL:
        descriptor = pool.FindMessageTypeByName(f"{model.NAMESPACE}.{entity.name}")
        assert [(f.name, f.number) for f in descriptor.fields] == [
            (f.name, i) for i, f in enumerate(entity.fields, start=1)
        ]
    payload = cls.DESCRIPTOR.fields_by_name["what"].message_type.fields_by_name["payload"]
    assert payload.message_type.full_name == "lsst.v11_1.alert"


def test_content_types_pick_the_binding(alerts) -> None:
    for binding, codec in serializers().items():
        reader = Voevent3Serializer.for_content_type(codec.content_type)
        assert reader.binding == binding and reader.media_type == codec.media_type
    with pytest.raises(UnknownSerializerError):
        Voevent3Serializer.for_content_type("application/vnd.rubin.alert+avro")
    with pytest.raises(ConfigError, match="binding"):
        get_serializer("voevent3", binding="xml")
    avro, protobuf = serializers()["avro"], serializers()["protobuf"]
    assert Voevent3Serializer.recognizes(avro.dumps(alerts[0]))
    assert not Voevent3Serializer.recognizes(protobuf.dumps(alerts[0]))  # read by content type
    assert protobuf.schema_id == 4_001_101 and avro.schema_id == 3_001_101


def _json_variants(data: bytes) -> list[bytes]:
    doc = json.loads(data)
    out = []
    for mutate in (
        lambda d: d.pop("who"),
        lambda d: d.update(extra=1),
        lambda d: d.update(role="rumour"),
        lambda d: d["who"].update(date="yesterday"),
        lambda d: d["who"].update(date="2026-01-01T00:00:00"),  # no time zone
        lambda d: d["whereWhen"].update(ra="north"),
        lambda d: d["what"].update(payload={"not": "an alert"}),
        lambda d: d["citations"].append({"ivorn": "x", "cite": "quotes"}),
    ):
        variant = json.loads(data)
        mutate(variant)
        out.append(json.dumps(variant).encode())
    del doc
    return out + [data[:n] for n in (0, 1, 100, len(data) // 2, len(data) - 1)]


def test_hostile_json_events_are_decode_errors(alerts) -> None:
    codec = serializers()["json"]
    data = codec.dumps(alerts[0])
    for variant in _json_variants(data):
        with pytest.raises(DecodeError):
            codec.loads_event(variant)


def test_hostile_protobuf_events_are_decode_errors(alerts) -> None:
    codec = serializers()["protobuf"]
    data = codec.dumps(alerts[0])
    cls = _proto_classes(load_schema().version)
    no_payload = cls()
    no_payload.ivorn, no_payload.role = "ivo://x", 1
    no_payload.who.authorIvorn = "ivo://x"
    no_payload.what.payloadSchema = "lsst.v11_1.alert"
    no_payload.how.SetInParent()
    bad_role = cls.FromString(data[6:])
    bad_role.role = 0
    prefix = data[:6]
    variants = [
        data[: len(data) - n] for n in (1, 2, 100, 3000)
    ] + [
        prefix + no_payload.SerializeToString(),
        prefix + bad_role.SerializeToString(),
        data[:5] + b"\x02\x02" + data[6:],  # message indexes naming another message
        b"\x00\x00\x2d\xcb\x0d" + data[5:],  # the Avro binding's id
        prefix + b"\xff" * 20,
    ]  # fmt: skip
    for variant in variants:
        with pytest.raises(DecodeError):
            codec.loads_event(variant)
