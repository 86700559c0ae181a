"""``alertbench kafka fetch|start|status|stop``: a local Apache Kafka (KRaft) for the user.

The cluster is the project's own launcher (:mod:`alertbench.transports.servers.kafka_cluster`),
left running in the background after ``start`` and found again through a state file, so
``status`` and ``stop`` work from another shell. ``start`` also runs a read-only
Confluent-compatible schema registry beside it (:mod:`alertbench.transports.servers.registry`)
serving every shipped Rubin schema under Rubin's ids and subjects, so a Rubin-style consumer
(SchemaRegistryClient + AvroDeserializer) reads our topics as it reads Rubin's.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

from alertbench.harness.cli.console import console, out, positive_int
from alertbench.harness.cli.kafka_options import add_kafka_client_options, kafka_transport_options

from alertbench.errors import AlertbenchError, ConfigError
from alertbench.resources import pid_alive

if TYPE_CHECKING:
    from alertbench.transports.servers.registry import Catalogue

RUBIN_SUBJECT = "alert-packet"
"""Rubin's subject holding every alert schema version (lsst/alert_packet's registry sync)."""
PROTOBUF_SUBJECT = "alertbench-protobuf"
VOEVENT3_SUBJECT = "alertbench-voevent3"


def registry_catalogue() -> Catalogue:
    """Every schema the registry serves, built from the shipped schemas and our codecs.

    * Rubin Avro, every version lsst-alert-packet ships: id major*100+minor, subjects
      ``alert-packet`` (one version per schema, oldest first) and ``lsst-alerts-v{M.m}-value``.
    * Our protobuf messages (.proto text, schemaType PROTOBUF), each committed version: id
      2,000,000 + Rubin id, subjects ``alertbench-protobuf`` and
      ``alertbench-protobuf-v{M.m}-value``.
    * VOEvent 3 (Avro), every version: id 3,000,000 + Rubin id, subjects ``alertbench-voevent3``
      and ``alertbench-voevent3-v{M.m}-value``.

    Built here, in the harness, because transports (the registry server) may not import codecs.
    """
    from alertbench.refimpl.alert.schema import available_versions, load_schema
    from alertbench.refimpl.codecs import protobuf, voevent3
    from alertbench.refimpl.codecs.protogen import proto_file_name
    from alertbench.transports.servers.registry import Catalogue, Entry

    from alertbench.resources import proto_dir

    entries: list[Entry] = []
    proto_versions: list[tuple[str, int, str, str]] = []
    for number, version in enumerate(available_versions(), start=1):
        schema = load_schema(version)
        entries.append(
            Entry(
                id=schema.schema_id,
                schema_type="AVRO",
                schema=json.dumps(schema.definition),
                subjects=((RUBIN_SUBJECT, number), (f"lsst-alerts-v{version}-value", 1)),
            )
        )
        entries.append(
            Entry(
                id=voevent3.ID_BASE + schema.schema_id,
                schema_type="AVRO",
                schema=json.dumps(json.loads(voevent3.schema_json(schema))),
                subjects=((VOEVENT3_SUBJECT, number), (f"{VOEVENT3_SUBJECT}-v{version}-value", 1)),
            )
        )
        source = proto_dir() / proto_file_name(schema)
        if source.exists():  # older versions would need protoc at start-up: committed ones only
            serialized = protobuf.load_module(schema).DESCRIPTOR.serialized_pb
            proto_versions.append(
                (
                    version,
                    protobuf.ID_BASE + schema.schema_id,
                    source.read_text(),
                    base64.standard_b64encode(serialized).decode("ascii"),
                )
            )
    for number, (version, schema_id, text, serialized) in enumerate(proto_versions, start=1):
        entries.append(
            Entry(
                id=schema_id,
                schema_type="PROTOBUF",
                schema=text,
                serialized=serialized,
                subjects=(
                    (PROTOBUF_SUBJECT, number),
                    (f"{PROTOBUF_SUBJECT}-v{version}-value", 1),
                ),
            )
        )
    return Catalogue(entries)


def _registry_dir(state_path: Path) -> Path:
    """The registry's files (catalogue, URL, pid, log), beside the state file."""
    return state_path.with_name(state_path.stem + "-registry")


def _start_registry(state_path: Path, host: str, advertise: str | None) -> str:
    """Start the schema registry as a detached process on ``host``; return its URL as clients
    reach it (the advertised host, like the brokers'; loopback for a wildcard bind)."""
    from alertbench.transports.servers import kafka_cluster as kc
    from alertbench.transports.servers import registry

    workdir = _registry_dir(state_path)
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = workdir / "catalogue.json"
    registry_catalogue().save(catalogue)
    process = registry.spawn(catalogue, workdir, host=host)
    (workdir / "registry.pid").write_text(f"{process.pid}\n")
    shown = advertise or host
    if shown in kc.WILDCARD_HOSTS:
        shown = "127.0.0.1"
    port = process.url.rsplit(":", 1)[1]
    return f"http://{kc.host_port(shown, int(port))}"


def _stop_registry(state_path: Path) -> bool:
    """End the registry ``start`` left running, if any; whether one was."""
    from alertbench.transports.servers import registry

    pid_file = _registry_dir(state_path) / "registry.pid"
    if not pid_file.exists():
        return False
    text = pid_file.read_text().strip()
    stopped = text.isdigit() and registry.stop_process(int(text))
    pid_file.unlink(missing_ok=True)
    return stopped


def _registry_alive(state_path: Path) -> bool:
    from alertbench.transports.servers import registry

    pid_file = _registry_dir(state_path) / "registry.pid"
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    return text.isdigit() and registry._is_registry(int(text))


def _state_path(args: argparse.Namespace) -> Path:
    from alertbench.transports.servers import kafka_cluster as kc

    return args.state or kc.cache_dir() / "kafka-cluster.json"


def cmd_fetch(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    out.print(f"Kafka {kc.KAFKA_VERSION} jars in {kc.fetch_jars()}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    if args.bootstrap_servers:
        from alertbench.transports.kafka import client_settings

        # The transport's own settings, so status reaches a cluster as publish would.
        settings = client_settings(**kafka_transport_options(args))
        brokers = kc.probe(args.bootstrap_servers, **settings)
        out.print(f"{args.bootstrap_servers}: {brokers} broker(s) answering")
        return 0 if brokers else 1
    state_path = _state_path(args)
    if not state_path.exists():
        out.print("no local Kafka started by alertbench (no state file)")
        return 1
    state = kc.ClusterState.load(state_path)
    alive = [n.node_id for n in state.nodes if pid_alive(n.pid)]
    out.print(
        f"bootstrap servers {state.bootstrap_servers}; nodes alive: {alive or 'none'} "
        f"of {len(state.nodes)}; auth {'on' if state.auth else 'off'}; data in {state.workdir}"
    )
    registry_ok = True
    if state.schema_registry_url:
        registry_ok = _registry_alive(state_path)
        out.print(
            f"schema registry {state.schema_registry_url}: {'up' if registry_ok else 'not running'}"
        )
    return 0 if len(alive) == len(state.nodes) and registry_ok else 1


def _check_listen(host: str) -> None:
    """A --listen address this machine cannot bind is the user's mistake: one line, exit 2,
    before any broker or registry is started (not an OSError traceback from deep inside)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"--listen {host!r}: cannot bind it on this machine ({exc})") from None


def cmd_start(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    state_path = _state_path(args)
    if state_path.exists():
        state = kc.ClusterState.load(state_path)
        if any(pid_alive(n.pid) for n in state.nodes):
            raise AlertbenchError(
                f"a local Kafka is already running ({state.bootstrap_servers}); "
                "'alertbench kafka stop' first"
            )
    _check_listen(args.listen)
    console.print(f"starting {args.brokers} Kafka node(s)...")
    cluster = kc.KafkaCluster(
        args.brokers,
        auth=args.auth,
        workdir=None,
        listen=args.listen,
        advertise=args.advertise,
    )
    cluster.start()
    state_path.parent.mkdir(parents=True, exist_ok=True)
    _stop_registry(state_path)  # one left by a cluster that died without 'kafka stop'
    try:
        registry_url = _start_registry(state_path, args.listen, args.advertise)
    except BaseException:
        cluster.stop()  # not detached yet: no half-started cluster left behind
        raise
    cluster.detach()
    state = cluster.state()
    state.schema_registry_url = registry_url
    state.save(state_path)
    out.print(f"Kafka {kc.KAFKA_VERSION} up: bootstrap servers {cluster.bootstrap_servers}")
    out.print(f"schema registry (read-only, Confluent API): {registry_url}")
    if args.auth:
        out.print(f"credentials (also in {state_path}):")
        for user, password in cluster.users.items():
            out.print(f"  {user} / {password}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    state_path = _state_path(args)
    if not state_path.exists():
        out.print("no local Kafka to stop")
        return 0
    state = kc.ClusterState.load(state_path)
    registry_stopped = _stop_registry(state_path)
    kc.stop_state(state)
    state_path.unlink()
    out.print(f"stopped {len(state.nodes)} Kafka node(s)")
    if registry_stopped:
        out.print(f"stopped the schema registry ({state.schema_registry_url})")
    return 0


ACTIONS = {"fetch": cmd_fetch, "start": cmd_start, "stop": cmd_stop, "status": cmd_status}


def cmd_kafka(args: argparse.Namespace) -> int:
    return ACTIONS[args.action](args)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    kaf = sub.add_parser(
        "kafka",
        help="start, stop or check a local Apache Kafka (KRaft) cluster on 127.0.0.1",
        description="Run real Apache Kafka from Maven Central jars (fetched once with Maven; "
        "needs Java 17+). 'start' returns once every broker answers and leaves the cluster "
        "running in the background; 'stop' ends it.",
    )
    kaf.add_argument("action", choices=tuple(ACTIONS))
    kaf.add_argument(
        "--brokers", type=positive_int, default=1, help="nodes (3 gives RF 3, min ISR 2)"
    )
    kaf.add_argument("--auth", action="store_true", help="SASL/SCRAM-SHA-512 users and ACLs")
    kaf.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="HOST",
        help="with 'start': address the brokers and the schema registry bind (default 127.0.0.1)",
    )
    kaf.add_argument(
        "--advertise",
        default=None,
        metavar="HOST",
        help="with 'start': host the brokers advertise to clients (default: --listen)",
    )
    kaf.add_argument(
        "--state", type=Path, default=None, help="state file (default .cache/kafka-cluster.json)"
    )
    kaf.add_argument(
        "--bootstrap-servers",
        default=None,
        help="with 'status': check an existing cluster instead of the local one",
    )
    add_kafka_client_options(kaf)
    kaf.set_defaults(func=cmd_kafka)
