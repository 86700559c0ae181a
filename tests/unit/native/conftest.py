"""Shared fixtures for the native codec tests.

The extension is ``alertbench.refimpl._native``, built with the package. The realistic alerts
are simulated here (100 alerts, seed 11) and normalised through fastavro, the reference.
"""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import fastavro
import pytest
from alertbench.refimpl import _native
from alertbench.refimpl.alert.schema import load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig

from alertbench.resources import schemas_dir

VOEVENT_SCHEMA = schemas_dir() / "voevent3" / "voevent3-lsst-v11_1.avsc"


def lsst_schema_root() -> Path:
    import lsst.alert.packet as lap

    return Path(lap.__file__).parent / "schema"


def lsst_versions() -> list[tuple[str, Path]]:
    """(version "M.m", path of lsst.vM_m.alert.avsc) for every shipped version."""
    out = []
    for d in sorted(glob.glob(str(lsst_schema_root() / "*" / "*"))):
        p = Path(d)
        files = list(p.glob("lsst.v*.alert.avsc"))
        if files:
            out.append((f"{p.parent.name}.{p.name}", files[0]))
    out.sort(key=lambda v: tuple(int(x) for x in v[0].split(".")))
    return out


def load_lsst_definition(path: Path) -> dict:
    import lsst.alert.packet as lap

    return lap.Schema.from_file(str(path)).definition


def fa_encode(parsed, record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def fa_decode(parsed, data: bytes):
    buf = io.BytesIO(data)
    value = fastavro.schemaless_reader(buf, parsed, None)
    assert buf.tell() == len(data)
    return value


@pytest.fixture(scope="session")
def native():
    return _native


@pytest.fixture(scope="session")
def alert_definition() -> dict:
    return load_schema("11.1").definition


@pytest.fixture(scope="session")
def alert_parsed(alert_definition):
    return fastavro.parse_schema(alert_definition)


@pytest.fixture(scope="session")
def alert_schema(alert_definition):
    return _native.Schema(json.dumps(alert_definition))


@pytest.fixture(scope="session")
def alerts(alert_parsed) -> list[dict]:
    config = SimulationConfig(seed=11, alerts_per_visit_mean=100, alerts_per_visit_sigma=0.0)
    simulated = AlertSimulator(config).visit(0).alerts(100)
    return [fa_decode(alert_parsed, fa_encode(alert_parsed, a)) for a in simulated]


@pytest.fixture(scope="session")
def alert_bodies(alerts, alert_parsed) -> list[bytes]:
    return [fa_encode(alert_parsed, a) for a in alerts]


@pytest.fixture(scope="session")
def voevent_definition() -> dict:
    return json.loads(VOEVENT_SCHEMA.read_text())
