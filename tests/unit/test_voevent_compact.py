"""VOEvent ``compact`` mode: the source, the object and the filterable fields in the packet, the
light curve and cutouts by reference; XSD-valid and under 100 kB for every simulated alert."""

from __future__ import annotations

import numpy as np
import pytest
import voeventparse
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.refimpl.codecs.voevent import (
    CUTOUTS,
    DEFAULT_REFERENCE_BASE,
    LIGHT_CURVE,
    VoeventSerializer,
)
from hypothesis import HealthCheck, given, settings

from alertbench.errors import ConfigError
from alertbench.xmlsafe import parse_untrusted, voevent_xsd
from tests.support.strategies import alert_strategy

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
LIMIT = 100_000
HISTORY = ("prvDiaSources", "prvDiaForcedSources", "prvDiaNondetectionLimits")


@pytest.fixture(scope="module")
def two_visits(simulator) -> list[dict]:
    return [alert for visit in simulator.visits(2) for alert in visit.alerts()]


@pytest.fixture(scope="module")
def compact() -> VoeventSerializer:
    codec = get_serializer("voevent", mode="compact")
    assert isinstance(codec, VoeventSerializer)
    return codec


def _expected(alert: dict) -> dict:
    """What a compact packet reads back to: the alert less its history and cutouts."""
    return {k: (None if k in HISTORY or k in CUTOUTS else v) for k, v in alert.items()}


def test_every_alert_of_two_visits_is_valid_and_under_100_kb(compact, two_visits) -> None:
    xsd = voevent_xsd()
    sizes = []
    for alert in two_visits:
        data = compact.dumps(alert)  # validate=True: the codec checks the XSD itself too
        sizes.append(len(data))
        assert xsd.validate(parse_untrusted(data, len(data) + 1)), xsd.error_log.last_error
        assert compact.loads(data) == _expected(alert)
    assert len(sizes) >= 2 * 150
    p99, largest = np.percentile(sizes, 99), max(sizes)
    assert p99 < LIMIT and largest < LIMIT, (np.median(sizes), p99, largest)
    embed = VoeventSerializer(mode="embed", validate=False)
    # compact is what makes VTP affordable: far smaller than the whole alert in XML
    assert np.median(sizes) * 5 < np.median([len(embed.dumps(a)) for a in two_visits[:20]])


def test_compact_packets_read_in_voevent_parse(compact, two_visits) -> None:
    for alert in two_visits[:10]:
        packet = voeventparse.loads(compact.dumps(alert))
        assert voeventparse.valid_as_v2_0(packet)
        assert packet.attrib["ivorn"].endswith(f"#{alert['diaSourceId']}")
        params = voeventparse.get_grouped_params(packet)
        assert int(params["diaSource"]["diaSourceId"]["value"]) == alert["diaSourceId"]
        assert float(voeventparse.get_event_position(packet).ra) == pytest.approx(
            alert["diaSource"]["ra"]
        )


def test_history_and_cutouts_are_references(compact, two_visits) -> None:
    alert = next(a for a in two_visits if a["prvDiaSources"] and a["cutoutScience"])
    data = compact.dumps(alert)
    assert b"<Table" not in data and b"<Value>" not in data
    root = compact.parse(data)
    source_id = alert["diaSourceId"]
    what = root.find("What")
    for name in CUTOUTS:
        ref = what.find(f"Param[@name='{name}']/Reference")
        assert ref.get("uri") == f"{DEFAULT_REFERENCE_BASE}/{source_id}/{name}.fits"
        assert ref.get("mimetype") == "image/fits"
    group = what.find(f"Group[@name='{LIGHT_CURVE}']")
    refs = group.findall("Reference")
    assert [r.get("uri") for r in refs] == [f"{DEFAULT_REFERENCE_BASE}/{source_id}/lightcurve.xml"]
    counts = {p.get("name"): p.get("value") for p in group.findall("Param")}
    assert counts["prvDiaSources"] == str(len(alert["prvDiaSources"]))
    assert counts["prvDiaForcedSources"] == str(len(alert["prvDiaForcedSources"]))
    # what is in the packet reads back exactly, whichever mode the reader was built with
    for reader in (compact, VoeventSerializer(mode="embed")):
        back = reader.loads(data)
        assert back["diaSource"] == alert["diaSource"] and back["diaObject"] == alert["diaObject"]
        assert all(back[name] is None for name in (*CUTOUTS, "prvDiaSources"))
        assert back["prvDiaForcedSources"] is None


def test_reference_base_sets_every_uri(two_visits) -> None:
    codec = VoeventSerializer(mode="compact", reference_base="https://data.example/alerts/")
    data = codec.dumps(two_visits[0])
    uris = [r.get("uri") for r in codec.parse(data).iter("Reference")]
    ours = [u for u in uris if "dmtn-102" not in u]
    assert len(ours) == 4 and all(u.startswith("https://data.example/alerts/") for u in ours)
    # the default is the base reference mode uses, so a cutout has one URI in either mode
    reference = VoeventSerializer(mode="reference").dumps(two_visits[0])
    default = VoeventSerializer(mode="compact").dumps(two_visits[0])
    for name in CUTOUTS:
        uri = f'uri="{DEFAULT_REFERENCE_BASE}/{two_visits[0]["diaSourceId"]}/{name}.fits"'
        assert uri.encode() in reference and uri.encode() in default


def test_an_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="compact"):
        VoeventSerializer(mode="tiny")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=alert_strategy(load_schema()))
def test_generated_alerts_keep_everything_but_history_and_cutouts(data) -> None:
    codec = VoeventSerializer(mode="compact")
    assert codec.loads(codec.dumps(data)) == _expected(data)


@pytest.mark.parametrize("version", available_versions())
def test_every_shipped_version_in_compact_mode(version) -> None:
    sim = AlertSimulator(
        SimulationConfig(
            seed=3, schema_version=version, alerts_per_visit_mean=3, alerts_per_visit_sigma=0.0
        )
    )
    codec = VoeventSerializer(schema_version=version, mode="compact")
    for alert in sim.visit(0).alerts():
        data = codec.dumps(alert)
        assert len(data) < LIMIT
        assert codec.loads(data) == _expected(alert)
