"""The ``alertbench`` command line.

Every sub-command is a thin layer over the library: the same functions are what the tests and
the harness call, so what the CLI prints is what the code measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from alertbench.refimpl.alert.schema import available_versions, latest_version
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import write_ocf
from alertbench.refimpl.codecs.base import SERIALIZERS, Alert, get_serializer
from alertbench.refimpl.codecs.sizes import SizeReport, cutout_side
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from alertbench.errors import AlertbenchError

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 120)  # tables stay readable in logs


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("alerts"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _add_simulation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--schema-version",
        default=None,
        help=f"Rubin alert schema version (default {latest_version()}, the latest shipped)",
    )
    parser.add_argument(
        "--alerts-per-visit",
        type=float,
        default=10_000,
        help="mean alerts per visit (default 10,000, Rubin's average)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=0.6,
        help="log-normal spread of alerts per visit; 0 gives exactly the mean (default 0.6)",
    )


def _config(args: argparse.Namespace) -> SimulationConfig:
    return SimulationConfig(
        seed=args.seed,
        schema_version=args.schema_version,
        alerts_per_visit_mean=args.alerts_per_visit,
        alerts_per_visit_sigma=args.sigma,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    sim = AlertSimulator(_config(args))
    visits = list(sim.visits(args.visits, start=args.first_visit))
    limit = args.limit
    total = sum(v.n_alerts if limit is None else min(limit, v.n_alerts) for v in visits)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def alerts(progress: Progress) -> Iterator[Alert]:
        task = progress.add_task("simulating", total=total)
        for visit in visits:
            for alert in visit.alerts(limit):
                yield alert
                progress.advance(task)

    with _progress() as progress, args.output.open("wb") as fp:
        written = write_ocf(fp, alerts(progress), sim.schema.version, codec=args.codec)
    size = args.output.stat().st_size
    out.print(
        f"wrote {written:,} alerts from {len(visits)} visit(s) "
        f"(schema {sim.schema.version}, seed {args.seed}) to {args.output} "
        f"({size / 1e6:,.1f} MB, {size / max(written, 1) / 1e3:,.1f} KB per alert in the file)"
    )
    for visit in visits:
        out.print(
            f"  visit {visit.visit_id}: {visit.n_alerts:,} alerts, band {visit.band}, "
            f'RA {visit.ra:.3f} Dec {visit.dec:.3f}, seeing {visit.seeing_fwhm_arcsec:.2f}"'
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from alertbench.refimpl.codecs.files import read_alert_file

    data_size = args.file.stat().st_size
    container, codec_name, alerts = read_alert_file(args.file)
    serializer = get_serializer(codec_name if codec_name != "none" else "avro")
    report = SizeReport(serializer_name=serializer.name)
    first: Alert | None = None
    with _progress() as progress:
        task = progress.add_task("reading", total=None)
        for alert in alerts:
            first = first or alert
            report.add(alert, serializer)
            progress.advance(task)
    count = len(report.total)
    schema_name = serializer_schema_name(serializer)
    result: dict = {
        "file": str(args.file),
        "format": container,
        "serialization": serializer.name,
        "content_type": serializer.content_type,
        "schema": schema_name,
        "alerts": count,
        "file_bytes": data_size,
        "sizes": report.summary(),
    }
    if first is not None:
        result["first_alert"] = {
            "diaSourceId": first.get("diaSourceId", first.get("alertId")),
            "cutout_side_px": cutout_side(first.get("cutoutDifference")),
        }
    if args.json:
        out.print_json(json.dumps(result, default=str))
        return 0
    out.print(
        f"[bold]{args.file}[/bold]: {container}, {serializer.name} ({serializer.content_type}), "
        f"schema {schema_name}, {count:,} alerts, {data_size / 1e6:,.1f} MB"
    )
    if first is not None:
        out.print(
            f"first alert: diaSourceId {result['first_alert']['diaSourceId']}, "
            f"cutouts {result['first_alert']['cutout_side_px']} px square"
        )
    out.print(size_table(report, f"Sizes per alert as {serializer.name}"))
    return 0


def serializer_schema_name(serializer: object) -> str:
    schema = getattr(serializer, "schema", None) or getattr(serializer, "alert_schema", None)
    return f"{schema.namespace}.alert" if schema is not None else "?"


def cmd_convert(args: argparse.Namespace) -> int:
    from alertbench.refimpl.codecs.files import read_alert_file, write_alert_file

    container, codec_name, alerts = read_alert_file(args.input)
    with _progress() as progress:
        task = progress.add_task(f"{codec_name} -> {args.to}", total=None)

        def counted() -> Iterator[Alert]:
            for alert in alerts:
                yield alert
                progress.advance(task)

        count = write_alert_file(args.output, counted(), args.to)
    out.print(
        f"converted {count:,} alerts from {args.input} ({container}, {codec_name}) to "
        f"{args.output} ({args.to}, {args.output.stat().st_size / 1e6:,.1f} MB)"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from alertbench.refimpl.codecs.docs import write_all

    for path in write_all(check=args.check):
        out.print(f"{'up to date' if args.check else 'wrote'}: {path}")
    return 0


def size_table(report: SizeReport, title: str) -> Table:
    table = Table(title=title)
    table.add_column("quantity")
    for col in ("mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for name, stats in report.summary().items():
        table.add_row(name, *(f"{stats[c]:,.0f}" for c in ("mean", "p50", "p90", "p99", "max")))
    return table


def cmd_sizes(args: argparse.Namespace) -> int:
    sim = AlertSimulator(_config(args))
    serializer = get_serializer("avro", schema_version=sim.schema.version)
    report = SizeReport(serializer_name="avro")
    visits = sim.visits(args.visits)
    with _progress() as progress:
        task = progress.add_task("sizing", total=args.visits * args.per_visit)
        for visit in visits:
            for alert in visit.alerts(args.per_visit):
                report.add(alert, serializer)
                progress.advance(task)
    if args.json:
        out.print_json(json.dumps({"alerts": len(report.total), "sizes": report.summary()}))
    else:
        out.print(
            size_table(
                report,
                f"{len(report.total):,} simulated alerts (seed {args.seed}, schema "
                f"{sim.schema.version}, {args.per_visit} from each of {args.visits} visits)",
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertbench",
        description=(
            "Testbed and reference implementation for distributing astronomical alerts at "
            "Rubin/LSST scale: realistic Rubin alerts, interchangeable serializations and "
            "transports, and a load harness that ranks them against LSST's requirements."
        ),
        epilog="Run 'alertbench COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser(
        "simulate",
        help="write simulated visits of realistic Rubin alerts to an Avro container file",
        description="Simulate visits of realistic Rubin alerts (light curves, FITS cutouts) and "
        "write them to an Avro Object Container File that any Avro reader can open.",
    )
    _add_simulation_args(sim)
    sim.add_argument("--visits", type=int, default=1, help="number of visits (default 1)")
    sim.add_argument("--first-visit", type=int, default=0, help="index of the first visit")
    sim.add_argument("--limit", type=int, default=None, help="at most this many alerts per visit")
    sim.add_argument(
        "--codec",
        default="null",
        choices=("null", "deflate", "zstandard", "snappy"),
        help="OCF block compression (default none, as alerts travel)",
    )
    sim.add_argument("-o", "--output", type=Path, required=True, help="output .avro file")
    sim.set_defaults(func=cmd_simulate)

    ins = sub.add_parser(
        "inspect",
        help="summarise an alert file: counts, sizes, schema version, cutout shape",
        description="Summarise an alert file in any serialization: an Avro container file, a "
        "frames file written by 'convert', or a single message (Avro, Protobuf, VOEvent XML, "
        "VOEvent 3).",
    )
    ins.add_argument("file", type=Path)
    ins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ins.set_defaults(func=cmd_inspect)

    con = sub.add_parser(
        "convert",
        help="convert an alert file to avro, protobuf, voevent or voevent3",
        description="Read alerts in any serialization and write them in another: avro as an "
        "Avro container file, the others as a frames file (length-prefixed messages).",
    )
    con.add_argument("--to", required=True, choices=sorted(SERIALIZERS))
    con.add_argument("input", type=Path)
    con.add_argument("output", type=Path)
    con.set_defaults(func=cmd_convert)

    gen = sub.add_parser(
        "generate",
        help="regenerate the documents derived from the schema (.proto, VOEvent mapping, ...)",
        description="Write proto/*.proto, schemas/voevent-mapping.md and the VOEvent 3 Avro "
        "schema from the Rubin alert schema. --check only verifies they are up to date.",
    )
    gen.add_argument("--check", action="store_true", help="fail if a file would change")
    gen.set_defaults(func=cmd_generate)

    siz = sub.add_parser(
        "sizes",
        help="print the size distribution of encoded simulated alerts",
        description="Simulate alerts and print the distribution (mean, p50, p90, p99, max) of "
        "their encoded size and of its parts: cutouts, history and the rest.",
    )
    _add_simulation_args(siz)
    siz.add_argument("--visits", type=int, default=5, help="visits to sample (default 5)")
    siz.add_argument(
        "--per-visit", type=int, default=200, help="alerts sampled per visit (default 200)"
    )
    siz.add_argument("--json", action="store_true", help="print machine-readable JSON")
    siz.set_defaults(func=cmd_sizes)

    kaf = sub.add_parser(
        "kafka",
        help="start, stop or check a local Apache Kafka (KRaft) cluster on 127.0.0.1",
        description="Run real Apache Kafka from Maven Central jars (fetched once with Maven; "
        "needs Java 17+). 'start' returns once every broker answers and leaves the cluster "
        "running in the background; 'stop' ends it.",
    )
    kaf.add_argument("action", choices=("fetch", "start", "stop", "status"))
    kaf.add_argument("--brokers", type=int, default=1, help="nodes (3 gives RF 3, min ISR 2)")
    kaf.add_argument("--auth", action="store_true", help="SASL/SCRAM-SHA-512 users and ACLs")
    kaf.add_argument(
        "--state", type=Path, default=None, help="state file (default .cache/kafka-cluster.json)"
    )
    kaf.add_argument(
        "--bootstrap-servers",
        default=None,
        help="with 'status': check an existing cluster instead of the local one",
    )
    kaf.set_defaults(func=cmd_kafka)

    vis = sub.add_parser(
        "kafka-visit",
        help="one visit of realistic alerts through Kafka per compression codec, ranked",
        description="Start a local Kafka (or use --bootstrap-servers), publish one visit of "
        "realistic pre-encoded alerts per compression codec while a subscriber consumes it, and "
        "write results.json and a ranked report.md.",
    )
    vis.add_argument("--alerts", type=int, default=10_000, help="alerts in the visit")
    vis.add_argument("--pool", type=int, default=500, help="distinct simulated alerts to cycle")
    vis.add_argument("--seed", type=int, default=1)
    vis.add_argument(
        "--compression",
        nargs="+",
        default=["none", "lz4", "zstd", "snappy"],
        help="codecs to compare (default: none lz4 zstd snappy)",
    )
    vis.add_argument("--bootstrap-servers", default=None, help="use this cluster, start none")
    vis.add_argument("-o", "--output", type=Path, default=Path("out/kafka-visit"))
    vis.set_defaults(func=cmd_kafka_visit)

    mat = sub.add_parser(
        "matrix",
        help="every transport x serialization on the same alerts, ranked against LSST",
        description="Start a local Kafka and a gRPC server, push the same realistic alerts "
        "through every transport x serialization with the codec in the loop, and write "
        "results.json, a ranked report.md and a plot.",
    )
    from alertbench.harness.matrix import SERIALIZER_NAMES, TRANSPORT_KINDS

    mat.add_argument("--alerts", type=int, default=1000, help="alerts per combination")
    mat.add_argument("--pool", type=int, default=200, help="distinct simulated alerts")
    mat.add_argument("--seed", type=int, default=1)
    mat.add_argument(
        "--transports", nargs="+", default=list(TRANSPORT_KINDS), choices=TRANSPORT_KINDS
    )
    mat.add_argument(
        "--serializers", nargs="+", default=list(SERIALIZER_NAMES), choices=SERIALIZER_NAMES
    )
    mat.add_argument("--bootstrap-servers", default=None, help="use this Kafka, start none")
    mat.add_argument(
        "--max-rate",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also search each combination's maximum sustainable rate (steps of SECONDS) and "
        "rank by it",
    )
    mat.add_argument(
        "--subscriber-thread",
        action="store_true",
        help="run the subscriber as a thread of the publisher's process (default: a process of "
        "its own, as a broker's consumer would be)",
    )
    mat.add_argument("-o", "--output", type=Path, default=Path("out/matrix"))
    mat.set_defaults(func=cmd_matrix)

    vb = sub.add_parser(
        "vtp-bench",
        help="the same VOEvents through tcp, Kafka, our VTP broker and Comet, in one run",
        description="Measure VTP's cost: publish the same VOEvent packets through the tcp "
        "baseline, Kafka, alertbench's VTP broker and Comet 3.1.0 (installed from PyPI into its "
        "own environment), inside a loopback-only network namespace (unshare -n).",
    )
    vb.add_argument("--alerts", type=int, default=10_000)
    vb.add_argument("--no-kafka", action="store_true")
    vb.add_argument("--no-comet", action="store_true")
    vb.add_argument("-o", "--output", type=Path, default=Path("out/vtp-bench"))
    vb.add_argument("--inside-namespace", action="store_true", help=argparse.SUPPRESS)
    vb.set_defaults(func=cmd_vtp_bench)

    run = sub.add_parser(
        "run",
        help="run a workload file (LSST's schedule, paced) over one transport and serialization",
        description="Run a declarative workload (harness/workloads/*.yaml, or a path) over one "
        "transport and serialization, paced by its schedule, with its number of subscribers; "
        "latency runs from each alert's intended send time to after decode.",
    )
    run.add_argument(
        "workload", help="a YAML file, or a name: lsst-design-night, peak-visit, quick-night"
    )
    run.add_argument(
        "--transport",
        default="kafka",
        help="a transport kind (kafka, grpc, zmq-pubsub, zmq-pushpull, tcp, vtp) or URL",
    )
    run.add_argument("--serializer", default="avro", choices=sorted(SERIALIZERS))
    run.add_argument(
        "--threads",
        action="store_true",
        help="run the subscribers as threads of this process (default: one process each)",
    )
    run.add_argument("-o", "--output", type=Path, default=None, help="write the result JSON")
    run.set_defaults(func=cmd_run)

    mr = sub.add_parser(
        "max-rate",
        help="search the maximum sustainable rate of one transport x serialization",
        description="Offer constant rates (doubling, then bisecting) to one subscriber; a rate "
        "is sustainable when nothing is lost, <=1%% of alerts are sent >50 ms late and p99 "
        "latency stays under the bound.",
    )
    mr.add_argument(
        "--transport", default="tcp", help="kafka, grpc, zmq-pubsub, zmq-pushpull, tcp or vtp"
    )
    mr.add_argument("--serializer", default="avro", choices=sorted(SERIALIZERS))
    mr.add_argument("--start", type=float, default=50.0, help="first rate tried, alerts/s")
    mr.add_argument("--seconds", type=float, default=6.0, help="duration of each step")
    mr.add_argument("--latency-bound", type=float, default=1.0, help="p99 bound, seconds")
    mr.add_argument("-o", "--output", type=Path, default=None, help="write the result JSON")
    mr.set_defaults(func=cmd_max_rate)

    ev = sub.add_parser(
        "evidence",
        help="regenerate results/voevent3-evidence.md from the published runs",
    )
    ev.add_argument("--results", type=Path, default=Path("results"))
    ev.set_defaults(func=cmd_evidence)

    rep = sub.add_parser("report", help="regenerate report.md and plots from a results.json")
    rep.add_argument("folder", type=Path, help="a folder holding results.json")
    rep.set_defaults(func=cmd_report)

    from alertbench.harness.minibroker_cli import add_parsers as add_minibroker

    add_minibroker(sub)

    ver = sub.add_parser("schemas", help="list the Rubin alert schema versions available")
    ver.set_defaults(func=cmd_schemas)
    return parser


def cmd_kafka(args: argparse.Namespace) -> int:
    from alertbench.transports.servers import kafka_cluster as kc

    state_path = args.state or kc.cache_dir() / "kafka-cluster.json"
    if args.action == "fetch":
        out.print(f"Kafka {kc.KAFKA_VERSION} jars in {kc.fetch_jars()}")
        return 0
    if args.action == "status":
        if args.bootstrap_servers:
            brokers = kc.probe(args.bootstrap_servers)
            out.print(f"{args.bootstrap_servers}: {brokers} broker(s) answering")
            return 0 if brokers else 1
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
    if args.action == "start":
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
    # stop
    if not state_path.exists():
        out.print("no local Kafka to stop")
        return 0
    state = kc.ClusterState.load(state_path)
    kc.stop_state(state)
    state_path.unlink()
    out.print(f"stopped {len(state.nodes)} Kafka node(s)")
    return 0


def cmd_kafka_visit(args: argparse.Namespace) -> int:
    from alertbench.harness import visit_bench
    from alertbench.transports.servers.kafka_cluster import local_kafka

    with _progress() as progress:
        task = progress.add_task("simulating payload pool", total=None)
        payloads, content_type = visit_bench.payload_pool(args.pool, args.seed)
        progress.update(task, total=len(payloads), completed=len(payloads))
    with local_kafka(args.bootstrap_servers, announce=console.print) as (bootstrap, _):
        # Warm up the broker (group coordinator, idempotent-producer ids, JIT) off the record,
        # so the first codec measured does not pay for it.
        visit_bench.run_visit(
            f"kafka://{bootstrap}/warmup-{time.time_ns()}",
            payloads,
            content_type,
            n_alerts=min(len(payloads), 500),
        )
        results = []
        for codec in args.compression:
            url = f"kafka://{bootstrap}/visit-{codec}-{time.time_ns()}"
            with _progress() as progress:
                result = visit_bench.run_visit(
                    url,
                    payloads,
                    content_type,
                    n_alerts=args.alerts,
                    progress=progress,
                    compression=codec,
                )
            results.append(result)
            out.print(
                f"{codec:>7}: {result.alerts_received:,}/{result.alerts_sent:,} alerts in "
                f"{result.end_to_end_seconds:.1f} s = {result.alerts_per_second:,.0f} alerts/s, "
                f"{result.megabytes_per_second:,.0f} MB/s, latency p50 "
                f"{result.latency_us['p50'] / 1000:,.1f} ms p99 "
                f"{result.latency_us['p99'] / 1000:,.1f} ms"
            )
    path = visit_bench.write_report(results, visit_bench.environment(), args.output)
    out.print(f"report: {path}")
    out.print(path.read_text(), markup=False, highlight=False)
    lost = [r for r in results if r.alerts_received < r.alerts_sent]
    return 1 if lost else 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from alertbench.harness import matrix
    from alertbench.harness.visit_bench import environment

    with _progress() as progress:
        rows = matrix.run_matrix(
            args.transports,
            args.serializers,
            args.alerts,
            pool_size=args.pool,
            seed=args.seed,
            progress=progress,
            bootstrap_servers=args.bootstrap_servers,
            max_rate_seconds=args.max_rate,
            subscriber_processes=not args.subscriber_thread,
        )
    path = matrix.write_results(rows, environment(), args.output, args.alerts)
    out.print(f"report: {path}")
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_vtp_bench(args: argparse.Namespace) -> int:
    import subprocess

    from alertbench.harness import vtp_bench
    from alertbench.harness.visit_bench import environment
    from alertbench.transports.servers.comet import comet_venv

    if not args.inside_namespace:
        if not args.no_comet:
            comet_venv()  # install before entering the namespace, which has no network
        cmd = [sys.executable, "-m", "alertbench.harness.cli", *sys.argv[1:], "--inside-namespace"]
        script = "ip link set lo up && exec " + " ".join(f"'{c}'" for c in cmd)
        return subprocess.run(["unshare", "-n", "sh", "-c", script]).returncode
    venv = None if args.no_comet else comet_venv()
    rows = vtp_bench.run(args.alerts, venv, with_kafka=not args.no_kafka)
    env = environment()
    env["command"] = "alertbench " + " ".join(a for a in sys.argv[1:] if a != "--inside-namespace")
    path = vtp_bench.write_report(rows, env, args.output, args.alerts)
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack, nullcontext

    from alertbench.harness.matrix import TRANSPORT_KINDS, transport_url
    from alertbench.harness.visit_bench import environment
    from alertbench.harness.workload import Workload, run_workload
    from alertbench.transports.servers.kafka_cluster import local_kafka

    workload = Workload.load(args.workload)
    with ExitStack() as stack:
        if args.transport in TRANSPORT_KINDS:
            cluster = None
            if args.transport == "kafka":
                _, cluster = stack.enter_context(local_kafka(announce=console.print))
            ctx = transport_url(args.transport, cluster)
        else:
            ctx = nullcontext((args.transport, []))
        with ctx as (url, pids), _progress() as progress:
            row = run_workload(
                workload,
                url,
                args.serializer,
                progress=progress,
                server_pids=pids,
                roles="threads" if args.threads else "processes",
            )
    row["environment"] = environment()
    lat = row["latency_us"]
    out.print(
        f"{workload.name} over {args.transport} x {args.serializer}: {row['alerts_sent']:,} "
        f"alerts offered at {row['offered_alerts_per_second']:,.0f}/s to "
        f"{workload.subscribers} subscriber(s); lost {row['lost']:,}, duplicates "
        f"{row['duplicates']:,}, sent behind schedule {row['sent_behind_schedule']:,}; latency "
        f"p50 {lat['p50'] / 1e3:,.1f} ms, p99 {lat['p99'] / 1e3:,.1f} ms, max "
        f"{lat['max'] / 1e3:,.1f} ms; {row['within_60s_fraction'] * 100:.2f}% within 60 s; "
        f"{row['cores_per_stream_at_lsst_rate']:.2f} cores per stream at LSST's rate",
        markup=False,
    )
    roles = row.get("processes")
    if roles:
        subs = roles["subscribers"]
        out.print(
            f"processes: publisher {roles['publisher']['cpu_seconds']:.1f} CPU s, peak "
            f"{roles['publisher']['peak_rss_mb']:,.0f} MB; subscribers "
            + ", ".join(f"{p['cpu_seconds']:.1f} s/{p['peak_rss_mb']:,.0f} MB" for p in subs)
            + f"; servers {roles['servers_cpu_seconds']:.1f} CPU s",
            markup=False,
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(row, indent=2, sort_keys=True, default=str) + "\n")
        out.print(f"wrote {args.output}")
    return 0 if row["lost"] == 0 else 1


def cmd_max_rate(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from alertbench.harness.matrix import transport_url
    from alertbench.harness.max_rate import find_max_rate
    from alertbench.harness.visit_bench import environment
    from alertbench.transports.servers.kafka_cluster import local_kafka

    with ExitStack() as stack:
        cluster = None
        if args.transport == "kafka":
            _, cluster = stack.enter_context(local_kafka(announce=console.print))

        def url_for_step() -> str:
            url, _ = stack.enter_context(transport_url(args.transport, cluster))
            return url

        with _progress() as progress:
            result = find_max_rate(
                url_for_step,
                args.serializer,
                start=args.start,
                seconds=args.seconds,
                latency_bound_s=args.latency_bound,
                progress=progress,
            )
    result["transport"] = args.transport
    result["environment"] = environment()
    out.print(
        f"{args.transport} x {args.serializer}: maximum sustainable rate "
        f"{result['max_sustainable_rate']:,.0f} alerts/s = {result['headroom_over_lsst']:.2f}x "
        f"LSST's average rate (p99 <= {args.latency_bound:g} s, nothing lost, <=1% late)",
        markup=False,
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from alertbench.harness import evidence

    path = evidence.write(args.results)
    out.print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from alertbench.harness import matrix

    path = matrix.write_report(args.folder)
    out.print(f"wrote {path}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    latest = latest_version()
    for version in available_versions():
        major, minor = (int(x) for x in version.split("."))
        mark = "  (latest, default)" if version == latest else ""
        out.print(f"{version}  schema id {major * 100 + minor}{mark}")
    out.print(f"serializers: {', '.join(sorted(SERIALIZERS))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except AlertbenchError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")  # the message is not markup
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
