"""A workload over real Kafka: the topic's layout adopted or enforced, several publishers."""

from __future__ import annotations

import uuid

import pytest
from alertbench.harness.workload import Workload, _topic_layout, run_workload
from alertbench.transports.kafka import KafkaTransport

from alertbench.errors import ConfigError

pytestmark = pytest.mark.kafka

TINY = dict(visits=1, alerts_per_visit=120, cadence_s=1.0, burst_window_s=0.3, alert_pool=10,
            time_compression=1.0)  # fmt: skip


def _url(cluster, name: str) -> str:
    return f"kafka://{cluster.bootstrap_servers}/{name}-{uuid.uuid4().hex[:8]}"


def test_an_existing_topic_is_used_as_it_is_unless_the_workload_says_otherwise(
    kafka_cluster,
) -> None:
    url = _url(kafka_cluster, "adopt")
    KafkaTransport(url).prepare(partitions=1)  # made beforehand, as the broker-kill test does
    w = Workload(name="adopt", **TINY)
    row = run_workload(w, url, "avro", roles="threads", idle_timeout=10.0)
    assert row["topic"] == {"partitions": 1, "replication_factor": 1}
    assert row["alerts_received_per_subscriber"] == [120] and row["lost"] == 0
    with pytest.raises(ConfigError, match="exists with 1 partition"):
        run_workload(Workload(name="adopt", partitions=3, **TINY), url, "avro")
    fresh = _url(kafka_cluster, "fresh")
    row = run_workload(Workload(name="fresh", partitions=2, **TINY), fresh, "avro",
                       roles="threads", idle_timeout=10.0)  # fmt: skip
    assert row["topic"] == {"partitions": 2, "replication_factor": 1}
    assert _topic_layout(KafkaTransport(fresh))["partitions"] == 2


def test_several_publisher_processes_share_the_alerts_between_them(kafka_cluster) -> None:
    w = Workload(name="three-publishers", producers=3, subscribers=2, **TINY)
    row = run_workload(w, _url(kafka_cluster, "producers"), "avro", idle_timeout=10.0)
    assert row["publishers"] == 3 and row["topic"]["partitions"] == 3  # a new topic: defaults
    assert row["alerts_sent"] == 120 and row["alerts_received_per_subscriber"] == [120, 120]
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["unexpected"] == 0
    assert row["acknowledged"] == 120 and row["lost_acknowledged"] == 0
    each = row["processes"]["publishers"]
    assert [p["alerts"] for p in each] == [40, 40, 40]  # alert k to publisher k % 3
    assert len({p["pid"] for p in each}) == 3 and all(p["cpu_seconds"] > 0 for p in each)
    assert row["processes"]["publisher"]["cpu_seconds"] == pytest.approx(
        sum(p["cpu_seconds"] for p in each)
    )
    assert row["processes"]["publisher"]["counters"]["acknowledged"] == 120
    assert row["cpu_seconds"] >= row["processes"]["publisher"]["cpu_seconds"]
