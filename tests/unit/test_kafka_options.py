"""The Kafka client options every Kafka command takes: parsing, the transport options they give,
and the one-line refusals (exit status 2) for what cannot be meant. No broker: what reaches a
real one is tests/integration/test_kafka_tls.py's and test_no_secrets.py's."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from alertbench.harness.cli import kafka_options as ko
from alertbench.harness.cli import main
from alertbench.harness.cli.console import Parser
from alertbench.transports import kafka as kafka_transport
from alertbench.transports.kafka import KafkaTransport, client_settings
from alertbench.transports.servers.kafka_cluster import KafkaCluster, Node

from alertbench.errors import ConfigError


def _parse(*argv: str) -> argparse.Namespace:
    parser = Parser(prog="alertbench test")
    ko.add_kafka_client_options(parser)
    return parser.parse_args(list(argv))


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("alertbench: error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _no_password_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ko.PASSWORD_ENV, raising=False)


def test_no_options_give_nothing() -> None:
    assert ko.kafka_transport_options(_parse()) == {}


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["-X", "linger.ms=7"], {"linger.ms": "7"}),
        (["-Xlinger.ms=7"], {"linger.ms": "7"}),
        (["-X", "client.id=a=b"], {"client.id": "a=b"}),  # only the first = splits
        (["-X", "client.id="], {"client.id": ""}),
        (["-X", " debug =all"], {"debug": "all"}),
        (["-X", "a=1", "-X", "b=2", "-X", "a=3"], {"a": "3", "b": "2"}),  # the last one wins
    ],
)
def test_x_forms(argv: list[str], config: dict[str, str]) -> None:
    assert ko.kafka_transport_options(_parse(*argv)) == {"config": config}


@pytest.mark.parametrize("bad", ["linger.ms", "=7", " =7"])
def test_a_malformed_x_is_one_line_and_exit_2(bad: str, capsys) -> None:
    assert main(["kafka", "status", "--bootstrap-servers", "127.0.0.1:1", "-X", bad]) == 2
    assert "KEY=VALUE" in _one_error_line(capsys)


def test_a_secret_as_x_is_refused(capsys) -> None:
    argv = ["kafka-visit", "--bootstrap-servers", "127.0.0.1:1", "-X", "sasl.password=hunter2"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--password-file" in line
    assert "hunter2" not in line


def test_password_from_a_file_and_the_environment(tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    args = _parse("--username", "u", "--password-file", str(secret))
    assert ko.kafka_transport_options(args) == {"user": "u", "password": "from-the-file"}
    monkeypatch.setenv(ko.PASSWORD_ENV, "from-the-environment")
    assert ko.kafka_transport_options(_parse("--username", "u"))["password"] == (
        "from-the-environment"
    )
    # The file wins over the environment.
    assert ko.kafka_transport_options(args)["password"] == "from-the-file"


def test_a_password_without_a_username_is_refused(tmp_path: Path, capsys) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pw")
    argv = ["kafka", "status", "--bootstrap-servers", "127.0.0.1:1", "--password-file", str(secret)]
    assert main(argv) == 2
    assert "no --username" in _one_error_line(capsys)


def test_a_password_in_the_environment_alone_asks_for_no_credentials(monkeypatch) -> None:
    monkeypatch.setenv(ko.PASSWORD_ENV, "exported-for-another-cluster")
    assert "user" not in ko.kafka_transport_options(_parse())


def test_a_missing_password_file_is_one_line(tmp_path: Path, capsys) -> None:
    argv = ["kafka", "status", "--bootstrap-servers", "127.0.0.1:1", "--username", "u"]
    assert main([*argv, "--password-file", str(tmp_path / "absent")]) == 2
    assert "--password-file" in _one_error_line(capsys)


def test_a_missing_ca_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "ca.pem"
    argv = ["kafka", "status", "--bootstrap-servers", "127.0.0.1:1", "--ca-file", str(missing)]
    assert main(argv) == 2
    assert f"--ca-file {missing}: no such file" in _one_error_line(capsys)


def test_security_options_become_transport_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    secret = tmp_path / "pw"
    secret.write_text("pw")
    args = _parse(
        "--username", "u", "--password-file", str(secret), "--sasl-mechanism", "SCRAM-SHA-256",
        "--security-protocol", "SASL_SSL", "--ca-file", str(ca),
        "-X", "ssl.endpoint.identification.algorithm=none",
    )  # fmt: skip
    options = ko.kafka_transport_options(args)
    assert options == {
        "user": "u",
        "password": "pw",
        "sasl_mechanism": "SCRAM-SHA-256",
        "security_protocol": "SASL_SSL",
        "ca_file": str(ca),
        "config": {"ssl.endpoint.identification.algorithm": "none"},
    }
    transport = KafkaTransport("kafka://127.0.0.1:1/t", **options)
    conf = transport.client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-256"
    assert conf["ssl.ca.location"] == str(ca)
    assert conf["ssl.endpoint.identification.algorithm"] == "none"  # -X reaches admin clients
    assert transport.resolved_options()["password"] == "***"
    assert client_settings(**options) == {
        k: v for k, v in conf.items() if k not in ("bootstrap.servers", "logger", "error_cb")
    }


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"user": "u", "password": "p"}, ("SASL_PLAINTEXT", "SCRAM-SHA-512")),  # as before
        ({"user": "u", "password": "p", "ca_file": "CA"}, ("SASL_SSL", "SCRAM-SHA-512")),
        ({"ca_file": "CA"}, ("SSL", None)),
        ({"user": "u", "sasl_mechanism": "PLAIN"}, ("SASL_PLAINTEXT", "PLAIN")),
        ({}, (None, None)),
    ],
)
def test_the_protocol_follows_from_what_is_given(tmp_path: Path, options, expected) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    options = {k: str(ca) if v == "CA" else v for k, v in options.items()}
    conf = KafkaTransport("kafka://127.0.0.1:1/t", **options).client_config()
    assert (conf.get("security.protocol"), conf.get("sasl.mechanisms")) == expected


def test_url_query_forms(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    query = f"user=u&security_protocol=SASL_SSL&sasl_mechanism=PLAIN&ca_file={ca}"
    url = f"kafka://127.0.0.1:1/t?{query}"
    conf = KafkaTransport(url, password="p").client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanisms"] == "PLAIN"
    assert conf["sasl.password"] == "p"
    with pytest.raises(ConfigError, match="did you mean 'SASL_SSL'"):
        KafkaTransport("kafka://127.0.0.1:1/t?security_protocol=SASL_SLL")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs a user name"),
        ({"user": "u", "security_protocol": "SSL"}, "a user name is for SASL"),
        ({"sasl_mechanism": "PLAIN"}, "has no SASL"),
        ({"ca_file": "CA", "security_protocol": "SASL_PLAINTEXT", "user": "u"}, "is for TLS"),
        ({"ca_file": "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_combinations_that_cannot_be_meant(tmp_path: Path, options, message) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    options = {k: str(ca) if v == "CA" else v for k, v in options.items()}
    with pytest.raises(ConfigError, match=message):
        KafkaTransport("kafka://127.0.0.1:1/t", **options)


def test_client_options_on_a_local_cluster_are_refused(capsys) -> None:
    assert main(["matrix", "--transports", "kafka", "--username", "u"]) == 2
    assert "--bootstrap-servers" in _one_error_line(capsys)


def test_the_cli_offers_what_the_transport_declares(capsys) -> None:
    assert ko.SECURITY_PROTOCOLS == kafka_transport.SECURITY_PROTOCOLS
    assert ko.SASL_MECHANISMS == kafka_transport.SASL_MECHANISMS
    for command in (["matrix"], ["kafka-visit"], ["kafka", "status"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        shown = capsys.readouterr().out
        for option in ("-X KEY=VALUE", "--security-protocol", "--password-file", "--ca-file"):
            assert option in shown, (command, option)


def test_our_cluster_listens_and_advertises_where_it_is_told(tmp_path: Path) -> None:
    """``listen``/``advertise`` (no broker started: the configuration it would be given)."""
    with pytest.raises(ConfigError, match="advertise"):
        KafkaCluster(listen="0.0.0.0", workdir=tmp_path)
    default = KafkaCluster(workdir=tmp_path)
    default.nodes = [Node(1, 9092, 9093, str(tmp_path))]
    assert default.bootstrap_servers == "127.0.0.1:9092"
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n" in (
        default._properties(default.nodes[0])
    )
    cluster = KafkaCluster(listen="0.0.0.0", advertise="kafka.example.org", workdir=tmp_path)
    cluster.nodes = [Node(1, 9092, 9093, str(tmp_path))]
    properties = cluster._properties(cluster.nodes[0])
    # The controllers stay on loopback whatever the clients' listener binds.
    assert "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093\n" in properties
    assert "advertised.listeners=PLAINTEXT://kafka.example.org:9092\n" in properties
    assert cluster.bootstrap_servers == "kafka.example.org:9092"
