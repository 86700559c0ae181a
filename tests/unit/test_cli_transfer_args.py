"""publish / subscribe / serve / vtp send / convert --split without a server: their argument
types, their mistakes (one line, exit status 2) and the file helpers they stand on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alertbench.harness.cli import main
from alertbench.harness.transfer import (
    EXTENSIONS,
    file_messages,
    parse_rate,
    parse_start,
    split_messages,
)
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.refimpl.codecs.files import read_alert_file, write_alert_file

from alertbench.errors import ConfigError


def test_from_accepts_the_four_kinds_of_start() -> None:
    assert parse_start("earliest").kind == "earliest"
    assert parse_start("LATEST").kind == "latest"
    assert (parse_start("42").kind, parse_start("42").value) == ("offset", 42)
    when = parse_start("2026-01-31T22:00:00Z")
    expected = datetime(2026, 1, 31, 22, tzinfo=UTC).timestamp() * 1e9
    assert when.kind == "time" and when.value == int(expected)
    naive = parse_start("2026-01-31T22:00:00")  # naive is UTC, as Kafka's timestamps
    assert naive.value == when.value
    for bad in ("yesterday", "-3", "", "12:00:00x"):
        with pytest.raises(ConfigError, match="earliest, latest"):
            parse_start(bad)


def test_rate_reads_per_second_and_per_minute() -> None:
    assert parse_rate("100") == 100.0
    assert parse_rate("100/s") == 100.0
    assert parse_rate("600/min") == 10.0
    assert parse_rate("2.5/s") == 2.5
    for bad in ("0", "fast", "-1/s", "10/h"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["publish", "FILE", "kafak://127.0.0.1:9092/x"], "no transport for kafak://"),
        (["publish", "FILE", "grpc://127.0.0.1:1", "--rate", "fast"], "rate"),
        (["publish", "FILE", "grpc://127.0.0.1:1", "--loop", "0"], "positive whole number"),
        (["publish", "FILE", "grpc://127.0.0.1:1", "-X", "sasl.password=x"], "secret"),
        (["publish", "missing.avro", "grpc://127.0.0.1:1"], "no such file"),
        (["subscribe", "grpc://127.0.0.1:1", "--limit", "0"], "positive whole number"),
        (["subscribe", "grpc://127.0.0.1:1", "--from", "noon"], "earliest, latest"),
        (["subscribe", "grpc://127.0.0.1:1", "--timeout", "0"], "must be above 0"),
        (["subscribe", "grpc://127.0.0.1:1", "--group", "g"], "--group is for kafka"),
        (["subscribe", "grpc://127.0.0.1:1", "--username", "u"], "for kafka:// URLs"),
        (["serve", "zmq"], "zmq has no broker"),
        (["serve", "tcp"], "tcp has no broker"),
        (["serve", "grpc", "--port", "70000"], "0 to 65535"),
        (["serve", "grpc", "--receive-port", "9"], "--receive-port is for vtp"),
        (["serve", "kafka"], "invalid choice"),
        (["vtp", "send", "missing.xml"], "no such file"),
        (["convert", "--to", "voevent", "FILE"], "either OUTPUT"),
    ],
)
def test_mistakes_are_one_line_with_status_2(
    argv: list[str], says: str, tmp_path: Path, alerts: list[dict], capsys
) -> None:
    path = tmp_path / "a.avro"
    write_alert_file(path, alerts[:2], "avro")
    argv = [str(path) if a == "FILE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alertbench: error: ") and says in err[0], err


def test_a_frames_file_is_published_byte_for_byte(tmp_path: Path, alerts: list[dict]) -> None:
    path = tmp_path / "a.frames"
    write_alert_file(path, alerts[:3], "protobuf")
    _, frames_name, _ = read_alert_file(path)
    assert frames_name == "protobuf"
    container, name, messages = file_messages(path)
    codec = get_serializer("protobuf")
    assert (container, name) == ("frames", "protobuf")
    assert [m.payload for m in messages] == [codec.dumps(a) for a in alerts[:3]]
    assert [m.alert_id for m in messages] == [a["diaSourceId"] for a in alerts[:3]]
    assert all(m.content_type == codec.content_type for m in messages)
    # --serializer re-encodes
    _, name, again = file_messages(path, "voevent")
    assert name == "voevent" and again[0].payload.lstrip().startswith(b"<")


def test_an_avro_container_becomes_avro_messages(tmp_path: Path, alerts: list[dict]) -> None:
    path = tmp_path / "a.avro"
    write_alert_file(path, alerts[:2], "avro")
    container, name, messages = file_messages(path)
    assert (container, name) == ("avro-ocf", "avro")
    codec = get_serializer("avro")
    assert [codec.loads(m.payload)["diaSourceId"] for m in messages] == [
        a["diaSourceId"] for a in alerts[:2]
    ]


def test_split_writes_one_message_per_alert(tmp_path: Path, alerts: list[dict]) -> None:
    count = split_messages(iter(alerts[:3]), "voevent", tmp_path / "out")
    assert count == 3
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{a['diaSourceId']}{EXTENSIONS['voevent']}" for a in alerts[:3])


def test_a_save_never_overwrites_a_message_it_saved_before(tmp_path: Path) -> None:
    from alertbench.harness.transfer import saved_name
    from alertbench.transports.base import Envelope, Received

    received = Received(Envelope(b"x", "application/x", 7), t_received_ns=0)
    alert = {"diaSourceId": 7}
    names = []
    for _ in range(3):  # the same alert id three times, as a looped publish sends it
        name = saved_name(alert, received, "avro", tmp_path)
        (tmp_path / name).write_bytes(b"x")
        names.append(name)
    assert names == ["7.avro", "7-2.avro", "7-3.avro"]


def test_a_refused_pidfile_is_left_to_the_server_that_owns_it(tmp_path: Path) -> None:
    import os

    from alertbench.harness.cli.servers import _remove_own_pidfile, _write_pidfile

    pidfile = tmp_path / "serve.pid"
    owner = os.getppid()  # a live process that is not this one
    pidfile.write_text(f"{owner}\n")
    with pytest.raises(ConfigError, match="running and owns it"):
        _write_pidfile(pidfile)
    _remove_own_pidfile(pidfile)
    assert pidfile.read_text().strip() == str(owner)
    pidfile.write_text(f"{os.getpid()}\n")
    _remove_own_pidfile(pidfile)
    assert not pidfile.exists()
