"""``alertbench kafka fetch|start|status|stop``: a local Apache Kafka (KRaft) for the user.

The cluster is the project's own launcher (:mod:`alertbench.transports.servers.kafka_cluster`),
left running in the background after ``start`` and found again through a state file, so
``status`` and ``stop`` work from another shell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alertbench.harness.cli.console import console, out, positive_int
from alertbench.harness.cli.kafka_options import add_kafka_client_options, kafka_transport_options

from alertbench.errors import AlertbenchError


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
    alive = [n.node_id for n in state.nodes if kc.pid_alive(n.pid)]
    out.print(
        f"bootstrap servers {state.bootstrap_servers}; nodes alive: {alive or 'none'} "
        f"of {len(state.nodes)}; auth {'on' if state.auth else 'off'}; data in {state.workdir}"
    )
    return 0 if len(alive) == len(state.nodes) else 1


def cmd_start(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    state_path = _state_path(args)
    if state_path.exists():
        state = kc.ClusterState.load(state_path)
        if any(kc.pid_alive(n.pid) for n in state.nodes):
            raise AlertbenchError(
                f"a local Kafka is already running ({state.bootstrap_servers}); "
                "'alertbench kafka stop' first"
            )
    console.print(f"starting {args.brokers} Kafka node(s)...")
    cluster = kc.KafkaCluster(args.brokers, auth=args.auth, workdir=None)
    cluster.start()
    cluster.detach()
    state_path.parent.mkdir(parents=True, exist_ok=True)
    cluster.state().save(state_path)
    out.print(f"Kafka {kc.KAFKA_VERSION} up: bootstrap servers {cluster.bootstrap_servers}")
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
    kc.stop_state(state)
    state_path.unlink()
    out.print(f"stopped {len(state.nodes)} Kafka node(s)")
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
        "--state", type=Path, default=None, help="state file (default .cache/kafka-cluster.json)"
    )
    kaf.add_argument(
        "--bootstrap-servers",
        default=None,
        help="with 'status': check an existing cluster instead of the local one",
    )
    add_kafka_client_options(kaf)
    kaf.set_defaults(func=cmd_kafka)
