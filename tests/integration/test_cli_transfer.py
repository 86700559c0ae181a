"""The users' commands end to end, as a user runs them: ``publish``, ``subscribe``, ``serve`` and
``vtp send`` are subprocesses of the console script, against real servers (the project's Kafka,
our gRPC server and VTP broker in ``serve``, Comet 3.1.0 as a third-party VTP subscriber).

Every wait is bounded: subprocess timeouts, idle timeouts on ``subscribe``, deadlines on logs.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from alertbench.harness.transfer import EXTENSIONS, file_messages
from alertbench.refimpl.codecs.files import read_alert_file, write_alert_file
from alertbench.transports.servers.kafka_cluster import KafkaCluster
from confluent_kafka import Consumer, TopicPartition

EXE = str(Path(sys.executable).with_name("alertbench"))
N = 12


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def alert_file(alerts: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Avro container of N simulated alerts, as ``alertbench simulate`` writes."""
    path = tmp_path_factory.mktemp("transfer") / "visit.avro"
    write_alert_file(path, alerts[:N], "avro")
    return path


def _saved(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _published(path: Path, serializer: str | None = None) -> dict[str, bytes]:
    """What ``publish`` sends for this file: one file name per alert, and its bytes."""
    _, name, messages = file_messages(path, serializer)
    return {f"{m.alert_id}{EXTENSIONS[name]}": m.payload for m in messages}


def _committed(cluster: KafkaCluster, topic: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return int(found[0].offset)


@pytest.mark.kafka
def test_kafka_publish_then_subscribe_saves_what_was_published(
    kafka_cluster: KafkaCluster, alert_file: Path, tmp_path: Path
) -> None:
    topic = f"transfer-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{kafka_cluster.bootstrap_servers}/{topic}"
    pub = _cli("publish", str(alert_file), url, "--rate", "200/s")
    assert pub.returncode == 0, pub.stderr
    assert f"sent {N} alerts" in pub.stdout and f"acknowledged {N}" in pub.stdout

    group = f"g-{uuid.uuid4().hex[:6]}"
    saved = tmp_path / "saved"
    sub = _cli(
        "subscribe",
        url,
        "--from",
        "earliest",
        "--limit",
        str(N),
        "--group",
        group,
        "--save",
        str(saved),
        "--timeout",
        "20",
    )
    assert sub.returncode == 0, sub.stderr
    assert f"received {N} alerts" in sub.stderr
    expected = _published(alert_file)
    assert len(expected) == N
    assert _saved(saved) == expected  # byte-identical, named by alert id
    assert _committed(kafka_cluster, topic, group) == N  # offsets committed for what it wrote

    # The same group resumes after what it committed: nothing is left, and it stops when idle.
    again = _cli("subscribe", url, "--group", group, "--timeout", "3", "--limit", "1")
    assert again.returncode == 0, again.stderr
    assert "received 0 alerts" in again.stderr and again.stdout == ""

    # Printed, one line per alert, from an offset.
    lines = _cli("subscribe", url, "--from", str(N - 2), "--limit", "2", "--timeout", "20")
    assert lines.returncode == 0, lines.stderr
    printed = lines.stdout.strip().splitlines()
    assert len(printed) == 2 and all("diaSourceId=" in line and " ra=" in line for line in printed)


def test_kafka_subscribe_stops_cleanly_on_sigterm_and_commits(
    kafka_cluster: KafkaCluster, alert_file: Path, tmp_path: Path
) -> None:
    topic = f"transfer-{uuid.uuid4().hex[:8]}"
    url = f"kafka://{kafka_cluster.bootstrap_servers}/{topic}"
    assert _cli("publish", str(alert_file), url).returncode == 0
    group = f"g-{uuid.uuid4().hex[:6]}"
    saved = tmp_path / "saved"
    proc = subprocess.Popen(
        [
            EXE,
            "subscribe",
            url,
            "--from",
            "earliest",
            "--group",
            group,
            "--save",
            str(saved),
            "--timeout",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(saved.glob("*"))) < N:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"received {N} alerts" in err and "(stopped)" in err
    assert _saved(saved) == _published(alert_file)
    assert _committed(kafka_cluster, topic, group) == N


def test_tcp_publish_waits_for_its_subscriber(alert_file: Path, tmp_path: Path) -> None:
    """tcp:// has no broker: publish binds, waits for --wait-subscribers, then publishes."""
    from alertbench.transports.servers.kafka_cluster import free_port

    url = f"tcp://127.0.0.1:{free_port()}"
    pub = subprocess.Popen(
        [EXE, "publish", str(alert_file), url, "--wait-timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        saved = tmp_path / "saved"
        sub = _cli("subscribe", url, "--limit", str(N), "--save", str(saved), "--timeout", "20")
        out, err = pub.communicate(timeout=60)
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait(10)
    assert sub.returncode == 0, sub.stderr
    assert pub.returncode == 0, err
    assert f"flushed to subscribers (no acknowledgements) {N}" in out
    assert _saved(saved) == _published(alert_file)


def _start_server(args: list[str], tmp_path: Path, wait_for: str) -> tuple[subprocess.Popen, str]:
    """A ``serve`` subprocess, and the first log line containing ``wait_for``."""
    log = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    proc = subprocess.Popen([EXE, "serve", *args], stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if wait_for in line:
                return proc, line
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"serve did not start: {log.read_text()}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def test_serve_grpc_publish_subscribe_and_sigterm(alert_file: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "grpc.pid"
    proc, line = _start_server(
        ["grpc", "--port", "0", "--pidfile", str(pidfile), "--stats-every", "1"],
        tmp_path,
        "serving on grpc://",
    )
    try:
        url = line.split("serving on ")[1].split()[0]
        assert pidfile.read_text().strip() == str(proc.pid)
        pub = _cli("publish", str(alert_file), url, "--serializer", "protobuf")
        assert pub.returncode == 0, pub.stderr
        assert f"acknowledged {N}" in pub.stdout

        out = tmp_path / "got.frames"
        saved = tmp_path / "saved"
        sub = _cli(
            "subscribe",
            url,
            "--from",
            "earliest",
            "--limit",
            str(N),
            "-o",
            str(out),
            "--save",
            str(saved),
            "--timeout",
            "20",
        )
        assert sub.returncode == 0, sub.stderr
        assert _saved(saved) == _published(alert_file, "protobuf")
        container, codec, alerts = read_alert_file(out)
        got = [a["diaSourceId"] for a in alerts]
        _, _, sent = file_messages(alert_file)
        assert (container, codec) == ("frames", "protobuf")
        assert got == [m.alert_id for m in sent]
    finally:
        status = _stop(proc)
    assert status == 0
    assert not pidfile.exists()


def test_publish_to_an_unreachable_vtp_broker_fails_without_ack(
    alert_file: Path, tmp_path: Path
) -> None:
    """Nothing acknowledged is never reported as delivered."""
    from alertbench.transports.servers.kafka_cluster import free_port

    port = free_port()
    result = _cli(
        "publish",
        str(alert_file),
        f"vtp://127.0.0.1:{port}?receive={port}",
        "--serializer",
        "voevent",
        timeout=60,
    )
    assert result.returncode != 0
    assert "did not answer" in result.stderr


# ---------------------------------------------------------------- VTP with a real Comet

SCENARIO = r"""
import json, subprocess, sys, time
from pathlib import Path
from alertbench.transports.servers.comet import twistd_command

exe, venv, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
events = sorted(work.glob("events/*.xml"))
log = work / "serve.log"
serve = subprocess.Popen([exe, "serve", "vtp", "--port", "0", "--pidfile", str(work / "vtp.pid"),
                          "--stats-every", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT)
report = {}
procs = []
try:
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "vtp://" in line:
                url = line.split("(")[-1].rstrip(")")
        time.sleep(0.1)
    receive = int(url.split("receive=")[1])
    broadcast = int(url.split("//")[1].split("?")[0].split(":")[1])
    saved = work / "comet-saved"
    saved.mkdir()
    (work / "comet-db").mkdir()
    comet = subprocess.Popen(twistd_command(venv, [
        "--local-ivo=ivo://example.test/comet-subscriber", f"--remote=127.0.0.1:{broadcast}",
        "--save-event", f"--save-event-directory={saved}", f"--eventdb={work / 'comet-db'}"]),
        stdout=(work / "comet.log").open("w"), stderr=subprocess.STDOUT, cwd=work)
    procs.append(comet)
    ours = subprocess.Popen([exe, "subscribe", url, "--limit", str(len(events)), "--save",
                             str(work / "ours"), "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(ours)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "(2 now)" not in log.read_text():
        time.sleep(0.2)
    time.sleep(1.0)
    sent = subprocess.run([exe, "vtp", "send", *map(str, events), "--port", str(receive)],
                          capture_output=True, text=True, timeout=120)
    again = subprocess.run([exe, "vtp", "send", str(events[0]), "--port", str(receive)],
                           capture_output=True, text=True, timeout=60)
    ours_out, ours_err = ours.communicate(timeout=90)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list(saved.iterdir())) < len(events):
        time.sleep(0.2)
    serve.send_signal(15)
    report = {
        "send_rc": sent.returncode, "send_out": sent.stdout, "send_err": sent.stderr[-500:],
        "again_rc": again.returncode, "again_out": again.stdout,
        "ours_rc": ours.returncode, "ours_err": ours_err[-500:],
        "ours": sorted(p.read_bytes().decode() for p in (work / "ours").iterdir()),
        "comet": sorted(p.read_bytes().decode() for p in saved.iterdir()),
        "serve_rc": serve.wait(30),
        "pidfile_left": (work / "vtp.pid").exists(),
        "serve_log": log.read_text()[-3000:],
    }
finally:
    for p in [*procs, serve]:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def comet_venv() -> Path:
    from alertbench.transports.servers import comet

    from alertbench.errors import AlertbenchError
    from tests.support.servers import unavailable

    try:
        return comet.comet_venv()
    except AlertbenchError as exc:
        unavailable(str(exc))
        raise


def test_serve_vtp_send_reaches_comet_and_our_subscriber(
    comet_venv: Path, alerts: list[dict], tmp_path: Path
) -> None:
    from alertbench.refimpl.codecs.voevent import VoeventSerializer

    from tests.support.servers import unavailable

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        unavailable("the Comet test needs 'unshare' and 'ip' (util-linux, iproute2)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"cannot create a network namespace: {probe.stderr.strip()}")
    # Comet binds every interface: it runs in a namespace with nothing but loopback.
    codec = VoeventSerializer(mode="reference")
    fits = [a for a in alerts if len(codec.dumps(a)) < 99_000][:2]  # stock Twisted frame limit
    events = tmp_path / "events"
    events.mkdir()
    for alert in fits:
        (events / f"{alert['diaSourceId']}.xml").write_bytes(codec.dumps(alert))
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), EXE, str(comet_venv), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    sent = sorted(p.read_bytes().decode() for p in events.iterdir())
    assert report["send_rc"] == 0, report
    assert report["send_out"].count("ack ") == 2 and "2 ack, 0 nak" in report["send_out"]
    assert report["again_rc"] == 1 and "nak " in report["again_out"]  # a duplicate is refused
    assert report["ours_rc"] == 0 and report["ours"] == sent, report
    assert report["comet"] == sent, report
    assert report["serve_rc"] == 0 and not report["pidfile_left"]
    assert "of subscribers connected" in report["serve_log"]


# ---------------------------------------------------------------- mistakes and convert


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["publish", "FILE", "nope://127.0.0.1:1"], "no transport for nope://"),
        (["publish", "/no/such/file.avro", "grpc://127.0.0.1:1"], "no such file"),
        (["subscribe", "grpc://127.0.0.1:1", "--limit", "0"], "positive whole number"),
        (["subscribe", "grpc://127.0.0.1:1", "--from", "yesterday"], "earliest, latest"),
        (["subscribe", "127.0.0.1:9092"], "needs a scheme and a host"),
        (["serve", "tcp"], "has no broker"),
        (["vtp", "send", "/no/such.xml"], "no such file"),
    ],
)
def test_mistakes_are_one_line_and_status_2(args: list[str], says: str, alert_file: Path) -> None:
    args = [str(alert_file) if a == "FILE" else a for a in args]
    result = _cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alertbench: error: ") and says in lines[0]


def test_convert_split_writes_one_voevent_per_alert(alert_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "events"
    result = _cli("convert", "--to", "voevent", "--split", str(folder), str(alert_file))
    assert result.returncode == 0, result.stderr
    files = sorted(folder.iterdir())
    _, _, sent = file_messages(alert_file)
    assert sorted(f.name for f in files) == sorted(f"{m.alert_id}.xml" for m in sent)
    for path in files:
        container, codec, alerts = read_alert_file(path)
        assert (container, codec) == ("message", "voevent")
        assert [a["diaSourceId"] for a in alerts] == [int(path.stem)]
