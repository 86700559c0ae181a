"""Shared fixtures: one small simulated visit, generated once per test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from harness.kafka_cluster import KafkaCluster
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


IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """A real component (a tool, a peer) is missing: fail under CI=true, skip elsewhere."""
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing dependency is a failure, not a skip)")
    pytest.skip(message)


def require_tools(*tools: str) -> None:
    """The tools a real component needs must be on PATH (see :func:`unavailable`)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable(f"this test needs {', '.join(missing)} on PATH to run real Apache Kafka")


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """One real single-node Kafka (KRaft) for the session, from the project's own launcher."""
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()
