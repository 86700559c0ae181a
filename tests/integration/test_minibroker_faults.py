"""Fault injection on the mini-broker (issue 14, item 16): ``alertbench minibroker serve`` is
SIGKILLed mid-visit and restarted with the same store and consumer group. It was at-most-once:
the Kafka subscriber stored each alert's offset as the next poll began and auto-committed it, so
offsets of alerts read but not yet delivered were committed and the restart skipped them. Every
matching alert must now reach the user's topic at least once (duplicates are counted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from alertbench.harness.minibroker_io import user_topic
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.minibroker import MiniBrokerStore
from alertbench.transports.base import Envelope, Start
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import free_port
from confluent_kafka import Consumer, TopicPartition

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

FILTER = "diaSource.snr > 9"
GROUP = "minibroker-faults"
VISIT = SimulationConfig(
    seed=11, alerts_per_visit_mean=300, alerts_per_visit_sigma=0.0, cutout_side_max=40
)
BURST = 100
"""Alerts published at once, first: a batch of their own, delivered and committed."""
TRICKLE_S = 7.5
"""Then one alert every TRICKLE_GAP s (shorter than the service's 0.25 s batch pause, so the
batch stays open) for this long: longer than librdkafka's 5 s auto-commit interval, so the old
subscriber had committed alerts of the open batch, never delivered, when the kill came."""
TRICKLE_GAP = 0.05


def wanted(alert: dict) -> bool:  # FILTER in plain Python
    snr = alert["diaSource"]["snr"]
    return snr is not None and snr > 9


class Serve:
    """One ``alertbench minibroker serve`` process, its output kept in files."""

    def __init__(self, tmp_path: Path, name: str, args: list[str]) -> None:
        exe = str(Path(sys.executable).with_name("alertbench"))
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [exe, "minibroker", "serve", *args, "--vtp-port", str(free_port())],
                stdout=out, stderr=err, env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip

    def said(self) -> str:
        return self.out.read_text()[-1500:] + self.err.read_text()[-2500:]

    def finish(self, timeout: float) -> dict:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve did not stop in {timeout} s:\n{self.said()}") from None
        assert code == 0, f"serve exited {code}:\n{self.said()}"
        return json.loads(self.out.read_text().strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_a_killed_minibroker_redelivers_the_visit_in_flight_after_a_restart(
    kafka_cluster, tmp_path, record_property
) -> None:
    codec = AvroSerializer()
    alerts = list(AlertSimulator(VISIT).visit(1).alerts())
    assert len({a["diaSource"]["visit"] for a in alerts}) == 1
    matching = {a["diaSourceId"] for a in alerts if wanted(a)}
    burst_matches = sum(wanted(a) for a in alerts[:BURST])
    assert 0 < burst_matches < len(matching)

    bootstrap = kafka_cluster.bootstrap_servers
    topic = f"mb-faults-{time.time_ns()}"
    stream = KafkaTransport(f"kafka://{bootstrap}/{topic}")
    stream.ensure_topic()
    out_topic = KafkaTransport(f"kafka://{bootstrap}/{user_topic('gail')}")
    out_topic.ensure_topic()  # what 'user add --kafka' does; read from its start below
    # The operator points the service's group at the stream's start (kafka-consumer-groups
    # --reset-offsets --to-earliest): both runs read from the group's committed position.
    positioner = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    positioner.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    positioner.close()
    db = tmp_path / "mb.sqlite"
    with MiniBrokerStore(db) as store:
        token = store.add_user("gail", alerts_per_visit=10_000)  # no cap: every match is due
        store.add_filter(token, "bright", FILTER)

    received: list[int] = []
    reader = out_topic.open_subscriber(Start.earliest())

    def read_until(count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            got = reader.poll(0.2)
            if got is not None:
                received.append(got.envelope.alert_id)

    publisher = stream.open_publisher()

    encoded = [Envelope(codec.dumps(a), codec.content_type, a["diaSourceId"]) for a in alerts]

    def publish(batch: list[Envelope]) -> None:
        for envelope in batch:
            publisher.publish(envelope)

    args = ["--kafka", f"kafka://{bootstrap}/{topic}", "--group", GROUP, "--db", str(db)]
    first = Serve(tmp_path, "first", [*args, "--duration", "150"])
    try:
        publish(encoded[:BURST])
        assert publisher.flush(30) == 0
        read_until(burst_matches, timeout=90)
        assert len(received) == burst_matches, f"first batch not delivered:\n{first.said()}"
        # The rest of the visit trickles in, CCD by CCD; the service reads it into one batch.
        sent = BURST
        trickle_end = time.monotonic() + TRICKLE_S
        while time.monotonic() < trickle_end and sent < len(alerts) - 20:
            publish([encoded[sent]])
            sent += 1
            time.sleep(TRICKLE_GAP)
        assert publisher.flush(30) == 0
        assert first.proc.poll() is None, f"serve stopped early:\n{first.said()}"
        first.kill()  # SIGKILL, mid-visit: nothing of its shutdown path runs
    finally:
        first.kill()
    read_until(len(matching), timeout=1.0)  # what had reached the topic at the kill
    before_kill = len(received)
    print(f"killed after {sent} of {len(alerts)} alerts published, {before_kill} delivered")
    assert before_kill < len(matching), "the kill came after the whole visit was delivered"

    publish(encoded[sent:])  # the end of the visit arrives while the service is down
    assert publisher.flush(30) == 0
    publisher.close()

    second = Serve(tmp_path, "second", [*args, "--idle-stop", "8", "--duration", "150"])
    stats = second.finish(timeout=200)
    read_until(len(received) + len(matching), timeout=15)  # everything it delivered
    reader.close()

    copies = Counter(received)
    missing = matching - copies.keys()
    duplicates = {alert_id: n for alert_id, n in copies.items() if n > 1}
    record_property("duplicates", len(duplicates))
    print(
        f"restart read {stats['alerts']} alerts and delivered {stats['delivered']}; "
        f"{len(matching)} matching alerts, {len(missing)} missing, {len(duplicates)} delivered "
        f"more than once: {sorted(duplicates.items())}"
    )
    assert not missing, f"{len(missing)} matching alerts never reached the user: {missing}"
    assert copies.keys() <= matching, "an alert the filter does not select was delivered"
    # The restart resumed from the group's last commit (after the first batch), not the start.
    assert stats["alerts"] <= len(alerts) - BURST, stats
    assert stats["commits"] >= 1 and stats["undecodable"] == 0, stats

    # Started again as on the first day (--from-earliest), it still resumes from the commit:
    # the visit is done, so it reads nothing.
    third = Serve(tmp_path, "third", [*args, "--from-earliest", "--idle-stop", "4"])
    assert third.finish(timeout=120)["alerts"] == 0, third.said()
