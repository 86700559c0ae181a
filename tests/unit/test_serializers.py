"""One conformance suite for every serializer, and each format's own hostile-input tests."""

from __future__ import annotations

import struct

import pytest
import voeventparse
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer, serializer_name_for
from alertbench.refimpl.codecs.docs import write_all
from alertbench.refimpl.codecs.voevent import VoeventSerializer, voevent_xsd
from hypothesis import HealthCheck, given, settings

from alertbench.errors import AlertbenchError, DecodeError, FramingError
from tests.support.strategies import alert_strategy

NAMES = sorted(SERIALIZERS)


@pytest.fixture(scope="module", params=NAMES)
def codec(request):
    return get_serializer(request.param)


def test_round_trip_of_simulated_alerts(codec, alerts) -> None:
    for alert in alerts:
        assert codec.loads(codec.dumps(alert)) == alert


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=alert_strategy(load_schema()))
def test_round_trip_of_generated_alerts(name, data) -> None:
    codec = get_serializer(name)
    assert codec.loads(codec.dumps(data)) == data


def test_content_type_names_the_codec(codec) -> None:
    assert serializer_name_for(codec.content_type) == codec.name
    assert get_serializer(serializer_name_for(codec.content_type)).name == codec.name


def test_damaged_input_raises_a_decode_error(codec, alerts) -> None:
    data = codec.dumps(alerts[0])
    for bad in (b"", data[: len(data) // 2], data[:-9], b"\x00\x01" + b"\xee" * 40):
        with pytest.raises(DecodeError) as info:
            codec.loads(bad)
        assert isinstance(info.value, AlertbenchError)


def test_every_cut_of_a_protobuf_alert_is_rejected(alerts) -> None:
    codec = get_serializer("protobuf")
    data = codec.dumps(alerts[2])
    # cut at every position in the last 3 KB and at a stride elsewhere, including field boundaries
    cuts = list(range(0, len(data) - 3000, 997)) + list(range(len(data) - 3000, len(data)))
    for cut in cuts:
        with pytest.raises(DecodeError):
            codec.loads(data[:cut])


@pytest.mark.parametrize("name", ["protobuf", "voevent3"])
def test_binary_codecs_refuse_another_formats_schema_id(name, alerts) -> None:
    codec = get_serializer(name)
    avro = get_serializer("avro").dumps(alerts[0])
    with pytest.raises(FramingError, match="schema id 1101 is not this"):
        codec.loads(avro)


def test_schema_ids_do_not_collide(alerts) -> None:
    ids = {
        name: struct.unpack(">I", get_serializer(name).dumps(alerts[0])[1:5])[0]
        for name in ("avro", "protobuf", "voevent3")
    }
    assert ids == {"avro": 1101, "protobuf": 2_001_101, "voevent3": 3_001_101}


# -- VOEvent 2.0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embed", "reference"])
def test_every_voevent_validates_against_the_xsd_and_in_voevent_parse(alerts, mode) -> None:
    codec = VoeventSerializer(mode=mode, validate=False)
    xsd = voevent_xsd()
    for alert in alerts[:40]:
        data = codec.dumps(alert)
        root = codec.parse(data)
        assert xsd.validate(root), xsd.error_log.last_error
        packet = voeventparse.loads(data)
        assert voeventparse.valid_as_v2_0(packet)
        assert packet.attrib["ivorn"].endswith(f"#{alert['diaSourceId']}")
        assert float(voeventparse.get_event_position(packet).ra) == pytest.approx(
            alert["diaSource"]["ra"]
        )


def test_reference_mode_points_at_the_cutouts(alerts) -> None:
    codec = VoeventSerializer(mode="reference")
    data = codec.dumps(alerts[0])
    assert b"base64" not in data and b'mimetype="image/fits"' in data
    back = codec.loads(data)
    assert back["cutoutScience"] is None
    assert back["diaSource"] == alerts[0]["diaSource"]
    assert len(data) < len(VoeventSerializer(mode="embed").dumps(alerts[0])) / 1.5


def _billion_laughs() -> bytes:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    return f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]><lolz>&lol9;</lolz>'.encode()


HOSTILE = {
    "dtd": (
        b'<?xml version="1.0"?><!DOCTYPE voe:VOEvent [<!ELEMENT a ANY>]>'
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"/>',
        "DTDs and entity declarations are not allowed",
    ),
    "external-entity": (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        "not allowed",
    ),
    "billion-laughs": (_billion_laughs(), "not allowed"),
    "huge-attribute": (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" ivorn="'
        + b"x" * (5 * 1024 * 1024)
        + b'" version="2.0"/>',
        "exceeds the",
    ),
    "wrong-namespace": (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v1.1" '
        b'version="1.1" ivorn="ivo://x/y#1"/>',
        "not VOEvent in namespace",
    ),
    "not-xml": (b"\x00\x00\x04M this is not XML", "not well-formed XML"),
    "truncated": (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" '
        b'version="2.0" ivorn="ivo://x/y#1"><Who>',
        "not well-formed XML",
    ),
    "fails-xsd": (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" '
        b'version="2.0" ivorn="ivo://x/y#1"><Why/><Bogus/></voe:VOEvent>',
        "fails the VOEvent 2.0 XSD",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_is_rejected_with_a_typed_error(case) -> None:
    data, message = HOSTILE[case]
    with pytest.raises(DecodeError, match=message):
        VoeventSerializer().loads(data)


def test_a_valid_voevent_that_is_not_a_rubin_alert_is_rejected() -> None:
    data = (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0" '
        b'ivorn="ivo://x/y#1"><What><Param name="diaSourceId" value="1" dataType="int"/>'
        b"</What></voe:VOEvent>"
    )
    with pytest.raises(DecodeError, match="required field 'diaSource' is missing"):
        VoeventSerializer().loads(data)


# -- generated documents -------------------------------------------------------------------------


def test_generated_documents_are_up_to_date() -> None:
    # proto/*.proto, schemas/voevent-mapping.md, the VOEvent 3 model's documents (its Avro,
    # JSON and Protobuf schemas and model.md) and one JSON Schema per shipped version come from
    # the Avro schema and the model; regenerating must change nothing.
    assert len(write_all(check=True)) == 6 + len(available_versions())
