"""``alertbench play`` and ``alertbench lag`` against real Apache Kafka (the project's launcher).

``play`` runs as the user runs it, a subprocess of the console script, while a real consumer
group reads the topic in this process; ``lag`` is then asked about that group and about one that
reads nothing, and its numbers are checked against the group's offsets read directly from Kafka.
Every wait is bounded (subprocess timeouts, poll deadlines).
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from alertbench.harness.cli import main
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.transports.base import Received, Start
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import ClusterState, KafkaCluster
from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.kafka

EXE = str(Path(sys.executable).with_name("alertbench"))
ALERTS = 200
CADENCE = 4.0


def _topic(cluster: KafkaCluster, partitions: int = 3) -> KafkaTransport:
    transport = KafkaTransport(f"kafka://{cluster.bootstrap_servers}/play-{uuid.uuid4().hex[:8]}")
    transport.ensure_topic(partitions=partitions)
    return transport


def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def _lag(cluster: KafkaCluster, group: str, topic: str, *extra: str) -> list[dict]:
    done = _cli(
        "lag", "--group", group, "--topic", topic, "--bootstrap-servers",
        cluster.bootstrap_servers, "--count", "3", "--interval", "0.5", "--json", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def _read(subscriber, n: int, got: list[Received], deadline_s: float = 90.0) -> None:
    """Poll until ``got`` holds ``n`` records (bounded), committing every 50 as a broker would."""
    deadline = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < deadline:
        received = subscriber.poll(0.5)
        if received is not None:
            got.append(received)
            if len(got) % 50 == 0:
                subscriber.commit()
    subscriber.commit()
    assert len(got) == n, f"read {len(got)} of {n} in {deadline_s} s"


def _group_lag(cluster: KafkaCluster, group: str, topic: str) -> dict[int, int]:
    """Per-partition lag straight from Kafka, to check ``lag`` against."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": group})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        lags = {}
        for c in committed:
            low, high = consumer.get_watermark_offsets(c, timeout=10, cached=False)
            lags[c.partition] = high - (c.offset if c.offset >= 0 else low)
        return lags
    finally:
        consumer.close()


def test_play_repeats_a_visit_while_a_group_reads_and_lag_follows_the_group(
    kafka_cluster,
) -> None:
    transport = _topic(kafka_cluster)
    topic = transport.topic
    group = f"broker-{uuid.uuid4().hex[:8]}"
    subscriber = transport.open_subscriber(Start.earliest(), group=group, commit="manual")
    player = subprocess.Popen(
        [
            EXE, "play", "--topic", topic, "--bootstrap-servers", kafka_cluster.bootstrap_servers,
            "--alerts", str(ALERTS), "--seed", "3", "--cadence", str(CADENCE), "--cycles", "2",
            "--ccds", "20",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    got: list[Received] = []
    try:
        _read(subscriber, 250, got)  # the group reads while the visit is replayed
        out, err = player.communicate(timeout=90)
    finally:
        if player.poll() is None:
            player.kill()
            player.communicate(timeout=10)
    assert player.returncode == 0, err[-2000:]
    lines = out.splitlines()
    cycles = [line for line in lines if line.startswith("cycle ")]
    assert len(cycles) == 2, out
    for k, line in enumerate(cycles):
        assert line.startswith(f"cycle {k}: {ALERTS}/{ALERTS} alerts sent, {ALERTS} acknowledged")
        assert "within the 4 s cadence" in line
    assert lines[-1] == f"done: 2 cycle(s), {2 * ALERTS} alerts sent, {2 * ALERTS} acknowledged"
    assert "20 CCD bursts" in err

    # The group stopped at 250 of 400: lag reports each partition's share, and a stalled group.
    reported = _lag(kafka_cluster, group, topic)
    assert len(reported) == 3
    expected = _group_lag(kafka_cluster, group, topic)
    assert sum(expected.values()) == 2 * ALERTS - 250
    for record in reported:
        assert {p["partition"]: p["lag"] for p in record["partitions"]} == expected
        assert record["lag"] == 2 * ALERTS - 250 and record["end"] == 2 * ALERTS
    assert reported[0]["keeping_up"] is None  # one sample: no trend yet
    assert reported[-1]["trend"] == [0, 0]
    assert reported[-1]["keeping_up"] is False
    assert reported[-1]["verdict"].startswith("falling behind (lag 150, nothing read")

    # It catches up: lag 0 on every partition, keeping up (the human lines this time).
    _read(subscriber, 2 * ALERTS, got)
    subscriber.close()
    done = _cli(
        "lag", "--group", group, "--topic", topic, "--bootstrap-servers",
        kafka_cluster.bootstrap_servers, "--count", "3", "--interval", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    human = done.stdout.splitlines()
    assert len(human) == 3
    assert all(
        " lag 0 (partition:lag 0:0 1:0 2:0) " in h and h.endswith(": keeping up") for h in human
    )

    # A group that reads nothing is behind by the whole topic.
    idle = _lag(kafka_cluster, f"idle-{uuid.uuid4().hex[:8]}", topic)
    assert idle[-1]["lag"] == 2 * ALERTS and all(
        p["committed"] is None for p in idle[-1]["partitions"]
    )
    assert idle[-1]["verdict"].startswith("falling behind")

    # What the group read: two cycles of the same visit, a cadence apart, with new ids.
    codec = AvroSerializer()
    by_cycle: dict[int, list[Received]] = {}
    for received in got:
        by_cycle.setdefault(received.envelope.t_shutter_ns, []).append(received)
    assert sorted(len(v) for v in by_cycle.values()) == [ALERTS, ALERTS]
    first, second = sorted(by_cycle)
    assert second - first == int(CADENCE * 1e9)
    ids = {}
    for shutter, records in by_cycle.items():
        for r in records:
            alert = codec.loads(r.envelope.payload)
            assert alert["diaSourceId"] == alert["diaSource"]["diaSourceId"] == r.envelope.alert_id
            assert r.envelope.t_intended_ns == shutter and r.envelope.t_sent_ns >= shutter
            assert r.envelope.content_type == codec.content_type
        ids[shutter] = sorted(r.envelope.alert_id for r in records)
    assert len(set(ids[first]) | set(ids[second])) == 2 * ALERTS
    stride = ids[second][0] - ids[first][0]
    assert str(stride).strip("0") == "1"  # a power of ten
    assert [i + stride for i in ids[first]] == ids[second]


def _lines_until(proc: subprocess.Popen, prefix: str, timeout: float) -> list[str]:
    """stdout lines of ``proc`` until one starts with ``prefix`` (bounded by ``timeout``)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=0.5):
            line = proc.stdout.readline()
            lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return lines
    raise AssertionError(f"no line starting {prefix!r} within {timeout} s: {lines}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_play_stops_cleanly_on_a_signal_after_flushing(kafka_cluster, sig) -> None:
    transport = _topic(kafka_cluster, partitions=1)
    player = subprocess.Popen(
        [
            EXE, "play", "--topic", transport.topic, "--bootstrap-servers",
            kafka_cluster.bootstrap_servers, "--alerts", "30", "--cadence", "1",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _lines_until(player, "cycle 1", timeout=60)
        player.send_signal(sig)
        out, err = player.communicate(timeout=30)
    finally:
        if player.poll() is None:
            player.kill()
            player.communicate(timeout=10)
    assert player.returncode == 0, err[-2000:]
    last = out.splitlines()[-1]
    assert last.startswith("stopped: ") and "NOT" not in last, out
    sent = int(last.split(", ")[1].split()[0])
    assert sent >= 60
    consumer = Consumer({"bootstrap.servers": kafka_cluster.bootstrap_servers, "group.id": "x"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(transport.topic, 0), timeout=10)
    finally:
        consumer.close()
    assert high - low == sent  # everything it said it sent is in the topic


def test_without_bootstrap_servers_the_local_kafka_is_used_and_said(
    kafka_cluster, tmp_path, capsys
) -> None:
    transport = _topic(kafka_cluster, partitions=2)
    state = tmp_path / "kafka-cluster.json"
    kafka_cluster.state().save(state)
    args = ["lag", "--group", "g", "--topic", transport.topic, "--state", str(state)]
    assert main([*args, "--count", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "using the local Kafka started by 'alertbench kafka start'" in captured.err
    assert kafka_cluster.bootstrap_servers in captured.err
    record = json.loads(captured.out)
    assert record["lag"] == 0 and record["verdict"] == "keeping up"
    assert [p["partition"] for p in record["partitions"]] == [0, 1]
    # A state file whose cluster has stopped names the command that starts one.
    ClusterState("127.0.0.1:1", [], str(tmp_path)).save(state)
    assert main([*args, "--count", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alertbench: error:") and "'alertbench kafka start'" in err


def test_mistakes_are_one_line_and_exit_2(kafka_cluster, tmp_path, capsys) -> None:
    bootstrap = ["--bootstrap-servers", kafka_cluster.bootstrap_servers]
    some_file = tmp_path / "alerts.avro"
    some_file.write_bytes(b"x")
    mistakes = {
        "no topic": (["play"], "--topic"),
        "no alerts": (["play", "--topic", "t", *bootstrap, "--alerts", "0"], "--alerts"),
        "two sources": (
            ["play", "--topic", "t", *bootstrap, "--file", str(some_file), "--alerts", "5"],
            "not allowed with",
        ),
        "bad cadence": (["play", "--topic", "t", *bootstrap, "--cadence", "0"], "--cadence"),
        "bad topic": (["play", "--topic", "a/b", *bootstrap, "--alerts", "1"], "topic"),
        "no local kafka": (
            ["play", "--topic", "t", "--state", str(tmp_path / "none.json")],
            "'alertbench kafka start'",
        ),
        "bad interval": (["lag", "--group", "g", "--topic", "t", "--interval", "0"], "--interval"),
        "no group": (["lag", "--topic", "t", *bootstrap], "--group"),
        "missing topic": (
            ["lag", "--group", "g", "--topic", "no-such-topic", *bootstrap, "--count", "1"],
            "does not exist",
        ),
    }
    for name, (argv, needle) in mistakes.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("alertbench: error:") and needle in err, (name, err)
