"""Shared fixtures, and the lanes: every test is marked by the folder it lives in.

Lanes (pytest -m LANE, or the folder): ``unit`` needs no server and runs in about a minute;
``conformance`` holds every registered transport to the shared suite on loopback servers;
``integration`` runs real Apache Kafka, Comet, locust and the harness end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alertbench.refimpl.alert.schema import AlertSchema, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig, Visit
from alertbench.transports.servers.kafka_cluster import KafkaCluster
from alertbench.transports.servers.registry import SchemaRegistryServer

from tests.support.servers import require_tools

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


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """One real single-node Kafka (KRaft) for the session, from the project's own launcher."""
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[SchemaRegistryServer]:
    """The project's read-only Confluent-compatible schema registry on 127.0.0.1 (a real HTTP
    server on a free port, in a thread), serving every shipped schema as ``kafka start`` does."""
    from alertbench.harness.cli.kafka import registry_catalogue

    with SchemaRegistryServer(registry_catalogue()) as registry:
        yield registry


LANES = ("unit", "conformance", "integration", "benchmarks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        lane = Path(item.fspath).relative_to(root).parts[0]
        if lane in LANES:
            item.add_marker(getattr(pytest.mark, lane))
