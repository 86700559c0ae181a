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

    Empty when none was given, so a local, unauthenticated cluster needs nothing. Explicit
    security settings go into the transport's ``config`` passthrough and ``-X`` properties
    after them, so ``-X`` wins, as with kafkacat.
    """
    config: dict[str, str] = {}
    options: dict[str, Any] = {}
    username: str | None = getattr(args, "username", None)
    password = read_password(args)
    if username:
        options["user"] = username
        options["password"] = password or ""
    elif password:
        raise ConfigError("a Kafka password was given (file or environment) but no --username")
    protocol: str | None = getattr(args, "security_protocol", None)
    mechanism: str | None = getattr(args, "sasl_mechanism", None)
    ca_file: Path | None = getattr(args, "ca_file", None)
    if protocol:
        config["security.protocol"] = protocol
    if mechanism:
        config["sasl.mechanisms"] = mechanism
    if ca_file is not None:
        if not ca_file.is_file():
            raise ConfigError(f"--ca-file {ca_file}: no such file")
        config["ssl.ca.location"] = str(ca_file)
    for key, value in getattr(args, "kafka_config", []) or []:
        config[key] = value
    if config:
        options["config"] = config
    return options
