"""The visit benchmark: nothing lost on real Kafka, and reports regenerate from their JSON."""

from __future__ import annotations

import json
import uuid

import pytest
from alertbench.harness import visit_bench

pytestmark = pytest.mark.kafka


def test_a_visit_through_kafka_is_complete_and_measured(kafka_cluster, tmp_path) -> None:
    payloads, content_type = visit_bench.payload_pool(20, seed=5)
    url = f"kafka://{kafka_cluster.bootstrap_servers}/bench-{uuid.uuid4().hex[:8]}"
    result = visit_bench.run_visit(url, payloads, content_type, n_alerts=300, compression="lz4")
    assert result.alerts_received == result.alerts_sent == 300
    assert result.duplicates == 0
    assert result.payload_bytes == sum(len(payloads[i % 20]) for i in range(300))
    assert 0 < result.latency_us["p50"] <= result.latency_us["p99"] <= result.latency_us["max"]
    assert result.alerts_per_second > 0 and result.megabytes_per_second > 0

    env = visit_bench.environment()
    report = visit_bench.write_report([result], env, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert visit_bench.render_report(data) == report.read_text()  # same JSON, same bytes
    assert "| 1 | lz4 | 300 | 300 |" in report.read_text()
