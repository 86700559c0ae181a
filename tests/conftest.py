"""Shared fixtures: one small simulated visit, generated once per test session."""

from __future__ import annotations

import pytest

from refimpl.schema import AlertSchema, load_schema
from refimpl.simulator import AlertSimulator, SimulationConfig, Visit

SMALL_VISIT = SimulationConfig(seed=7, alerts_per_visit_mean=150, alerts_per_visit_sigma=0.0)


@pytest.fixture(scope="session")
def schema() -> AlertSchema:
    return load_schema()


@pytest.fixture(scope="session")
def simulator() -> AlertSimulator:
    return AlertSimulator(SMALL_VISIT)


@pytest.fixture(scope="session")
def visit(simulator: AlertSimulator) -> Visit:
    return simulator.visit(3)


@pytest.fixture(scope="session")
def alerts(visit: Visit) -> list[dict]:
    return list(visit.alerts())
