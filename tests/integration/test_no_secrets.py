"""A benchmark run against a cluster that asks for a password writes that password nowhere.

Real Kafka with SCRAM users (the project's launcher, ``auth=True``), the real ``alertbench``
console script as a separate process, the password given once by ``--password-file`` and once by
``$ALERTBENCH_KAFKA_PASSWORD``. Every file the run wrote (results.json with its recorded command
line and options, report.md, plots), and the process's stdout and stderr, are searched for it.
The runs must also succeed, so the password really was used (a run that never authenticated
would leak nothing and prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertbench.transports.servers.kafka_cluster import ADMIN_USER, KafkaCluster

from tests.support.servers import require_tools

pytestmark = pytest.mark.kafka

ALERTBENCH = str(Path(sys.executable).parent / "alertbench")
PASSWORD_ENV = "ALERTBENCH_KAFKA_PASSWORD"


@pytest.fixture(scope="module")
def secured() -> Iterator[KafkaCluster]:
    require_tools("java", "mvn")
    cluster = KafkaCluster(brokers=1, auth=True, heap="384m").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _run(argv: list[str], env_password: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    if env_password is not None:
        env[PASSWORD_ENV] = env_password
    env["COLUMNS"] = "200"
    return subprocess.run([ALERTBENCH, *argv], capture_output=True, text=True, timeout=300, env=env)


def _assert_nowhere(password: str, folder: Path, result: subprocess.CompletedProcess) -> None:
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in written), written
    for path in written:
        assert password.encode() not in path.read_bytes(), f"the password is in {path}"
    assert password not in result.stdout
    assert password not in result.stderr
    results = json.loads((folder / "results.json").read_text())
    assert "--username admin" in results["command"]  # the command is recorded, redacted
    assert password not in json.dumps(results)


def test_kafka_visit_with_a_password_file(secured: KafkaCluster, tmp_path: Path) -> None:
    password = secured.users[ADMIN_USER]
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    out = tmp_path / "visit"
    result = _run(
        [
            "kafka-visit", "--bootstrap-servers", secured.bootstrap_servers,
            "--username", ADMIN_USER, "--password-file", str(secret),
            "--alerts", "20", "--pool", "5", "--compression", "lz4", "-o", str(out),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_nowhere(password, out, result)
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [(r["alerts_sent"], r["alerts_received"]) for r in rows] == [(20, 20)]
    assert rows[0]["options"]["password"] == "***"
    assert rows[0]["options"]["user"] == ADMIN_USER


def test_matrix_with_a_password_from_the_environment(secured: KafkaCluster, tmp_path) -> None:
    password = secured.users[ADMIN_USER]
    out = tmp_path / "matrix"
    result = _run(
        [
            "matrix", "--bootstrap-servers", secured.bootstrap_servers, "--username", ADMIN_USER,
            "--transports", "kafka", "--serializers", "avro", "--alerts", "20", "--pool", "5",
            "-o", str(out),
        ],
        env_password=password,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_nowhere(password, out, result)
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [(r["transport"], r["alerts_received"]) for r in rows] == [("kafka", 20)]


def test_a_wrong_password_fails_the_run_and_is_not_shown(secured, tmp_path: Path) -> None:
    wrong = "wrong-" + secured.users[ADMIN_USER][:8]
    out = tmp_path / "refused"
    result = _run(
        [
            "kafka-visit", "--bootstrap-servers", secured.bootstrap_servers,
            "--username", ADMIN_USER, "--alerts", "20", "--pool", "5", "--compression", "lz4",
            "-o", str(out),
        ],
        env_password=wrong,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the client's own warnings
    assert last.startswith("alertbench: error: Kafka refused user 'admin'"), result.stderr
    assert "authentication" in result.stderr.lower()
    assert wrong not in result.stdout + result.stderr


def test_matrix_max_rate_reaches_a_secured_cluster(secured: KafkaCluster, tmp_path) -> None:
    # Each step of the search is a run of its own: the credentials must reach every one (the
    # search used to refuse transport options instead).
    password = secured.users[ADMIN_USER]
    out = tmp_path / "matrix"
    result = _run(
        [
            "matrix", "--bootstrap-servers", secured.bootstrap_servers, "--username", ADMIN_USER,
            "--transports", "kafka", "--serializers", "avro", "--alerts", "20", "--pool", "5",
            "--max-rate", "1", "-o", str(out),
        ],
        env_password=password,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _assert_nowhere(password, out, result)
    (row,) = json.loads((out / "results.json").read_text())["results"]
    assert row["max_sustainable_rate"] > 0 and row["max_rate_steps"]
