"""Fault injection on the harness's own path (issue 14, item 15): the only Kafka broker is
SIGKILLed while ``alertbench run`` publishes. The run is a result, not a crash: it stops, says per
alert what was acknowledged and what was delivered, writes its results.json, exits 1 (alerts
were lost), and does not blame SASL for a broker that was there a moment ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from alertbench.transports.base import Start
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import KafkaCluster

from tests.support.servers import require_tools

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

WORKLOAD = """\
name: broker-kill
description: 3 visits of 300 alerts, 8x compressed, 1 subscriber
visits: 3
alerts_per_visit: 300
alerts_per_visit_sigma: 0.0
cadence_s: 39.0
burst_window_s: 3.0
ccds: 189
time_compression: 8.0
subscribers: 1
alert_pool: 50
seed: 5
cutout_fraction: 1.0
"""


def test_killing_the_only_broker_mid_run_is_accounted_and_written(tmp_path: Path) -> None:
    require_tools("java", "mvn")
    workload = tmp_path / "broker-kill.yaml"
    workload.write_text(WORKLOAD)
    out = tmp_path / "out"
    with KafkaCluster(brokers=1) as cluster:
        url = f"kafka://{cluster.bootstrap_servers}/faults?config=message.timeout.ms=8000"
        KafkaTransport(url).prepare(partitions=1)
        watcher = KafkaTransport(url).open_subscriber(Start.earliest())
        run = subprocess.Popen(
            [sys.executable, "-m", "alertbench.harness.cli", "run", str(workload),
             "--transport", url, "--threads", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        try:
            seen, deadline = 0, time.monotonic() + 120
            while seen < 300 and time.monotonic() < deadline:  # the first visit is through
                if watcher.poll(1.0) is not None:
                    seen += 1
            assert seen >= 300, f"only {seen} alerts reached the topic before the kill"
            watcher.close()
            cluster.kill(cluster.nodes[0].node_id)  # SIGKILL, with visits still to come
            stdout, stderr = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
    said = stdout + stderr
    print(textwrap.indent(said[-3000:], "  | "))
    assert "Traceback" not in said
    assert "SASL" not in said, "a broker that was reachable a moment ago is not a SASL problem"
    assert run.returncode == 1, (run.returncode, stderr[-2000:])
    assert "accounting per alert" in stdout
    result = json.loads((out / "results.json").read_text())
    row = result  # a workload-run document: the run's row and the schema's metadata
    assert row["alerts_published"] >= 300
    assert row["acknowledged"] >= 300
    assert row["acknowledged"] + row["unacknowledged"] == row["alerts_published"]
    assert row["lost"] > 0  # the last visits never reached the subscriber
