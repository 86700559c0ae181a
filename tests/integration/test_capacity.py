"""The three-layer comparison: raw-library baselines, the capacity layer beside them, the cores a
peak visit needs, its report and its command line. Real sockets, pyzmq, grpcio and Kafka on
127.0.0.1; every run is a bounded burst."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alertbench.harness import capacity, raw
from alertbench.harness.report import render
from alertbench.transports.servers.kafka_cluster import KafkaCluster

PAYLOADS = [bytes([i]) * (130_000 + i) for i in range(7)]


@pytest.mark.parametrize(
    "baseline",
    [
        lambda n, k: raw.raw_socket(PAYLOADS, n, k),
        lambda n, k: raw.raw_pyzmq(PAYLOADS, n, k, pattern="pubsub"),
        lambda n, k: raw.raw_pyzmq(PAYLOADS, n, k, pattern="pushpull"),
        lambda n, k: raw.raw_grpcio(PAYLOADS, n, k),
    ],
    ids=["socket", "pyzmq-pubsub", "pyzmq-pushpull", "grpcio"],
)
def test_each_raw_baseline_delivers_every_alert(baseline) -> None:  # type: ignore[no-untyped-def]
    result = baseline(300, 3)
    assert result.alerts_sent == 300
    assert result.alerts_received == 300  # fan-out: each of 3 had all; shared: together
    assert result.alerts_per_second > 0 and result.seconds > 0
    assert len(result.subscriber_cpu_seconds) == 3


def test_raw_kafka_delivers_every_alert_to_each_group(kafka_cluster: KafkaCluster) -> None:
    result = raw.raw_kafka(PAYLOADS, 200, 2, kafka_cluster.bootstrap_servers)
    assert result.alerts_received == 200
    assert result.library == "confluent-kafka"


def test_capacity_run_measures_every_layer_and_renders_the_same_bytes(tmp_path: Path) -> None:
    payload = capacity.run_layers(
        transports=["tcp", "zmq-pubsub"], serializers=["avro", "json"], alerts=300,
        subscribers=2, repeats=2, pool_size=10, end_to_end_seconds=0.5,
        end_to_end_serializers=["avro"], announce=lambda s: None,
    )  # fmt: skip
    rows = {r["transport"]: r for r in payload["capacity"]}
    assert set(rows) == {"tcp", "zmq-pubsub"}
    for kind, row in rows.items():
        assert row["baseline"] == capacity.BASELINE_OF[kind]
        assert len(row["alerts_per_second"]["runs"]) == 2
        assert len(row["raw"]["alerts_per_second"]["runs"]) == 2
        assert row["lost"] == [0, 0]
        r = row["ratio_to_raw"]
        assert r["min"] <= r["median"] <= r["max"] and r["median"] > 0
        assert row["publisher_cpu_us_per_alert"]["median"] > 0
        assert len(row["latency_histograms"]) == 2  # encoded: merged and re-plotted later
    codecs = {c["codec"] for c in payload["codecs"]}
    assert codecs == {"avro", "json"}
    cores = payload["cores_for_peak"]
    assert {(c["transport"], c["serializer"]) for c in cores} == {
        (t, s) for t in ("tcp", "zmq-pubsub") for s in ("avro", "json")
    }
    assert [c["transport"] for c in payload["end_to_end"]]  # layer (c) ran
    assert all(c["max_sustainable_rate"] >= 0 for c in payload["end_to_end"])

    from alertbench.harness.report.results import RESULTS_FILE, write_results

    write_results(tmp_path / RESULTS_FILE, "capacity", payload)
    report = render.write_report(tmp_path)
    text = report.read_text()
    assert "(b) Transport capacity" in text and "Cores for a peak visit" in text
    assert "(c) End to end" in text
    pngs = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    assert {"capacity.png", "cores-for-peak.png"} <= set(pngs)
    again = render.write_report(tmp_path)
    assert again.read_text() == text
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.png")} == pngs


def test_cores_for_peak_arithmetic() -> None:
    codec = {"codec": "avro", "serializer": "avro", "content_type": "application/vnd.x",
             "bytes_per_alert": 200_000.0, "encode_us": {"median": 150.0},
             "decode_us": {"median": 300.0}}  # fmt: skip
    cap = {"transport": "tcp", "bytes_per_alert": 100_000.0, "fanout": True,
           "publisher_cpu_us_per_alert": {"median": 100.0},
           "subscriber_cpu_us_per_alert": {"median": 50.0},
           "server_cpu_us_per_alert": {"median": 0.0},
           "alerts_per_second": {"median": 2000.0}}  # fmt: skip
    (row,) = capacity.cores_for_peak([codec], [cap], brokers=5, cpus=2)
    rate = 40_000 / 60
    # bytes scale the transport's part: twice the size, twice its CPU and half its rate
    assert row["publisher_cores"] == pytest.approx(rate * (150 + 200) / 1e6)
    assert row["broker_cores"] == pytest.approx(rate * (300 + 100) / 1e6)
    assert row["total_cores"] == pytest.approx(row["publisher_cores"] + 5 * row["broker_cores"])
    assert row["transport_alerts_per_second_at_this_size"] == pytest.approx(1000.0)
    assert row["fits_one_core_per_role"] is True
    assert row["fits_this_machine"] is (row["total_cores"] <= 2)
    assert row["mbit_per_broker"] == pytest.approx(200_000 * rate * 8 / 1e6)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--transports", "tpc"], "tpc"),
        (["--transports", "kafka://127.0.0.1:9092/x"], "URL"),
        (["--serializers", "avro,xml"], "xml"),
        (["--alerts", "0"], "alerts"),
        (["--end-to-end-seconds", "-1"], "-1"),
    ],
)
def test_bad_capacity_arguments_are_one_line_and_status_2(args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alertbench.harness.cli", "capacity", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
