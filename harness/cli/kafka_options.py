"""The Kafka client options every command that talks to Kafka takes: how to reach a cluster
that is not ours (TLS, SASL) and kafkacat's ``-X key=value`` for anything else librdkafka reads.

One module so ``publish``, ``subscribe``, ``play``, ``lag``, ``matrix`` and ``kafka-visit`` accept
the same words and mean the same thing. Passwords come from a file or the environment, never
from the command line (where ``ps`` and shell history would keep them), and go straight into the
transport's secret option, which results and logs redact.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from alertbench.errors import ConfigError
from alertbench.redaction import SECRET_KEY

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD_ENV = "ALERTBENCH_KAFKA_PASSWORD"
"""The environment variable a password may come from when no ``--password-file`` is given."""


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (a librdkafka property), got {text!r}"
        )
    return key.strip(), value


_key_value.__name__ = "librdkafka property"


def add_kafka_client_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of a Kafka client to a command's parser (their own group in --help)."""
    group = parser.add_argument_group(
        "Kafka client",
        "for a cluster that is not the local one: TLS, SASL and any librdkafka property",
    )
    group.add_argument(
        "-X",
        dest="kafka_config",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka property, applied last to every client (repeatable; kafkacat's -X)",
    )
    group.add_argument("--security-protocol", choices=SECURITY_PROTOCOLS, default=None)
    group.add_argument("--sasl-mechanism", choices=SASL_MECHANISMS, default=None)
    group.add_argument("--username", default=None, help="SASL user name")
    group.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help=f"a file holding the SASL password (else ${PASSWORD_ENV}); never on the command line",
    )
    group.add_argument("--ca-file", type=Path, default=None, help="CA certificate(s), PEM, for TLS")


def read_password(args: argparse.Namespace) -> str | None:
    """The SASL password from ``--password-file`` or the environment; None when neither is set."""
    path: Path | None = getattr(args, "password_file", None)
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--password-file {path}: {exc.strerror or exc}") from None
    return os.environ.get(PASSWORD_ENV) or None


def kafka_transport_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for ``get_transport("kafka://...", **options)`` from the parsed options.

    Empty when none was given, so a local, unauthenticated cluster needs nothing. The security
    settings become the transport's own declared options (``user``, ``password``,
    ``security_protocol``, ``sasl_mechanism``, ``ca_file``), so the transport checks their
    combination and its admin clients use them too; ``-X`` properties go into its ``config``
    passthrough, applied last, so ``-X`` wins, as with kafkacat. A secret given as ``-X`` is
    refused: the command line is recorded in results and seen by ``ps``.
    """
    options: dict[str, Any] = {}
    username: str | None = getattr(args, "username", None)
    password = read_password(args)
    if username:
        options["user"] = username
        options["password"] = password or ""
    elif getattr(args, "password_file", None) is not None:
        # Only the file is an error: a password exported in the environment is for the
        # commands that name a user, and must not break a local run that names none.
        raise ConfigError("--password-file was given but no --username")
    protocol: str | None = getattr(args, "security_protocol", None)
    mechanism: str | None = getattr(args, "sasl_mechanism", None)
    ca_file: Path | None = getattr(args, "ca_file", None)
    if protocol:
        options["security_protocol"] = protocol
    if mechanism:
        if not username:
            raise ConfigError(f"--sasl-mechanism {mechanism} needs --username")
        options["sasl_mechanism"] = mechanism
    if ca_file is not None:
        if not ca_file.is_file():
            raise ConfigError(f"--ca-file {ca_file}: no such file")
        options["ca_file"] = str(ca_file)
    config: dict[str, str] = {}
    for key, value in getattr(args, "kafka_config", []) or []:
        if SECRET_KEY.search(key):
            raise ConfigError(
                f"-X {key}: a secret on the command line would be recorded and seen by ps; "
                f"give the password with --password-file or ${PASSWORD_ENV}"
            )
        config[key] = value
    if config:
        options["config"] = config
    if options:
        from alertbench.transports.kafka import security_config

        # The same check the transport makes, here so a mistake is one line before any work.
        security_config(options, "Kafka client options")
    return options


SECURITY_OPTIONS = ("user", "security_protocol", "sasl_mechanism", "ca_file")
"""Transport options that only a cluster that is not ours can mean."""


def refuse_for_local_cluster(options: dict[str, Any], bootstrap_servers: str | None) -> None:
    """ConfigError when credentials or TLS are given for the local cluster a command starts
    (plain, without users): they would be refused after it started, as a timeout."""
    given = [name for name in SECURITY_OPTIONS if name in options]
    if given and not bootstrap_servers:
        raise ConfigError(
            "--username, --security-protocol, --sasl-mechanism and --ca-file are for a cluster "
            "that is not ours: give its --bootstrap-servers"
        )
