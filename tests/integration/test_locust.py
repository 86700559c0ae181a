"""The locustfiles run as users run them: the locust command, headless, CSV out, and distributed."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LOCUSTFILES = Path(__file__).resolve().parents[2] / "harness" / "locustfiles"
LOCUST = str(Path(sys.executable).with_name("locust"))


def _env() -> dict[str, str]:
    return dict(os.environ, ALERTBENCH_RATE="40", ALERTBENCH_POOL="20")


def _stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as fp:
        return {row["Name"]: row for row in csv.DictReader(fp)}


def _check(prefix: Path, log: str) -> dict[str, dict[str, str]]:
    rows = _stats(prefix)
    assert {"publish", "receive"} <= set(rows), log[-3000:]
    for name in ("publish", "receive"):
        assert int(rows[name]["Request Count"]) > 20, (name, rows[name], log[-3000:])
        assert int(rows[name]["Failure Count"]) == 0, (name, rows[name], log[-3000:])
    received, published = (int(rows[n]["Request Count"]) for n in ("receive", "publish"))
    assert received <= published
    return rows


def _headless(locustfile: str, prefix: Path, *extra: str, seconds: int = 5) -> str:
    command = [
        LOCUST, "-f", str(LOCUSTFILES / locustfile), "--headless", "-u", "2", "-r", "2",
        "-t", f"{seconds}s", "--csv", str(prefix), "--only-summary", "--stop-timeout", "5",
        *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=_env(), cwd=prefix.parent
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return log


@pytest.mark.parametrize("transport", ["tcp", "zmq", "grpc", "vtp"])
def test_headless_locust_run_per_transport_writes_csv(transport: str, tmp_path: Path) -> None:
    assert shutil.which(LOCUST) or Path(LOCUST).exists(), "locust is a dependency of alertbench"
    prefix = tmp_path / transport
    log = _headless(f"locust_{transport}.py", prefix, seconds=4)
    rows = _check(prefix, log)
    assert rows["receive"]["Type"] == (transport if transport != "zmq" else "zmq-pubsub")


@pytest.mark.kafka
def test_headless_locust_run_over_kafka(kafka_cluster, tmp_path: Path) -> None:
    prefix = tmp_path / "kafka"
    host = f"kafka://{kafka_cluster.bootstrap_servers}"
    log = _headless("locust_kafka.py", prefix, "--host", host, seconds=6)
    _check(prefix, log)


def test_distributed_mode_master_and_worker(tmp_path: Path) -> None:
    locustfile = str(LOCUSTFILES / "locust_tcp.py")
    port = _free_port()
    master = subprocess.Popen(
        [
            LOCUST, "-f", locustfile, "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(port), "--expect-workers", "1", "--headless", "-u", "2",
            "-r", "2", "-t", "5s", "--csv", str(tmp_path / "dist"), "--only-summary",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    worker = subprocess.Popen(
        [
            LOCUST, "-f", locustfile, "--worker", "--master-host", "127.0.0.1",
            "--master-port", str(port),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        master_log, _ = master.communicate(timeout=120)
        worker_log, _ = worker.communicate(timeout=30)
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.kill()
    assert master.returncode == 0, master_log[-3000:]
    assert "1 workers connected" in master_log or "worker" in master_log.lower()
    _check(tmp_path / "dist", master_log + worker_log)


def _free_port() -> int:
    from alertbench.transports.servers.kafka_cluster import free_port

    return free_port()
