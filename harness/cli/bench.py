"""Benchmark and report commands: kafka-visit, matrix, run, max-rate, vtp-bench, codec-bench,
xml-compression, evidence, report, compare, aggregate.

Each benchmark runs the harness, then writes one results document through
:func:`alertbench.harness.report.results.write_results` (kind, machine, library versions,
command, commit and the command's resolved options, secrets redacted) and renders its report
from that file alone, so ``alertbench report`` on the folder later gives the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from alertbench.harness.cli.console import (
    console,
    existing_folder,
    options_of,
    out,
    output_file,
    output_folder,
    positive_float,
    positive_int,
    progress,
    transport_kind,
)
from alertbench.harness.cli.kafka_options import (
    add_kafka_client_options,
    kafka_transport_options,
    refuse_for_local_cluster,
)
from alertbench.harness.report.results import RESULTS_FILE, redact_url, write_results
from alertbench.refimpl.codecs.base import SERIALIZERS

from alertbench.errors import ConfigError


def write_run(
    folder: Path, kind: str, payload: dict[str, Any], args: argparse.Namespace, **kw: Any
) -> Path:
    """``folder/results.json`` and ``folder/report.md`` (with plots); the report's path."""
    from alertbench.harness.report.render import write_report

    write_results(folder / RESULTS_FILE, kind, payload, options=options_of(args), **kw)
    return write_report(folder)


def _write(args: argparse.Namespace, kind: str, payload: dict[str, Any]) -> Path:
    """``-o x.json``: that file alone; ``-o FOLDER``: results.json plus its report and plots."""
    if args.output.suffix == ".json":
        return write_results(args.output, kind, payload, options=options_of(args))
    return write_run(args.output, kind, payload, args)


def results_target(text: str) -> Path:
    """``-o``: a ``.json`` file (not a folder), or a run folder (not a file)."""
    path = Path(text)
    if path.suffix == ".json":
        return output_file(text)
    return output_folder(text)


class SerializerOptions(argparse.Action):
    """``--serializer-option avro.engine=cavro``, repeatable, into ``{"avro": {"engine":
    "cavro"}}``; a malformed one or an unknown serializer is a usage error (exit status 2).
    Values stay text: every option of the shipped codecs is a name."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
        option_string: str | None = None,
    ) -> None:  # fmt: skip
        name, dot, rest = str(value).partition(".")
        key, eq, text = rest.partition("=")
        if not (dot and eq and key):
            parser.error(
                f"{option_string} {value}: expected NAME.KEY=VALUE, e.g. avro.engine=cavro"
            )
        if name not in SERIALIZERS:
            parser.error(f"{option_string} {value}: no serializer named {name!r}")
        merged = {k: dict(v) for k, v in (getattr(namespace, self.dest) or {}).items()}
        merged.setdefault(name, {})[key] = text
        setattr(namespace, self.dest, merged)


def kind_or_url(text: str) -> str:
    """``alertbench run``'s target: a URL as it is, or a registered kind (checked now)."""
    return text if "://" in text else transport_kind()(text)


# --------------------------------------------------------------------------- commands


def cmd_kafka_visit(args: argparse.Namespace) -> int:
    from alertbench.harness.kafka_visit import kafka_visits

    client = kafka_transport_options(args)
    refuse_for_local_cluster(client, args.bootstrap_servers)
    if not args.bootstrap_servers:
        console.print("starting a local Kafka (KRaft, 1 broker)...")
    results = []
    with progress() as bar:
        visits = kafka_visits(
            args.compression,
            n_alerts=args.alerts,
            pool_size=args.pool,
            seed=args.seed,
            bootstrap_servers=args.bootstrap_servers,
            progress=bar,
            transport_options=client,
        )
        for codec, result in zip(args.compression, visits, strict=True):
            results.append(result)
            out.print(
                f"{codec:>7}: {result.alerts_received:,}/{result.alerts_sent:,} alerts in "
                f"{result.end_to_end_seconds:.1f} s = {result.alerts_per_second:,.0f} alerts/s, "
                f"{result.megabytes_per_second:,.0f} MB/s, latency p50 "
                f"{result.latency_us['p50'] / 1000:,.1f} ms p99 "
                f"{result.latency_us['p99'] / 1000:,.1f} ms"
            )
    path = write_run(args.output, "kafka-visit", {"results": [r.row() for r in results]}, args)
    out.print(f"report: {path}")
    out.print(path.read_text(), markup=False, highlight=False)
    lost = [r for r in results if r.alerts_received < r.alerts_sent]
    return 1 if lost else 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from alertbench.harness import matrix

    client = kafka_transport_options(args)
    refuse_for_local_cluster(client, args.bootstrap_servers)
    with progress() as bar:
        rows = matrix.run_matrix(
            args.transports,
            args.serializers,
            args.alerts,
            pool_size=args.pool,
            seed=args.seed,
            progress=bar,
            bootstrap_servers=args.bootstrap_servers,
            max_rate_seconds=args.max_rate,
            subscriber_processes=not args.subscriber_thread,
            serializer_options=args.serializer_option,
            transport_options={"kafka": client} if client else None,
        )
    payload = {"alerts_per_combination": args.alerts, "results": rows}
    path = write_run(args.output, "matrix", payload, args)
    out.print(f"report: {path}")
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_vtp_bench(args: argparse.Namespace) -> int:
    import subprocess

    from alertbench.harness import vtp_bench
    from alertbench.harness.report.results import command_line
    from alertbench.transports.servers.comet import comet_venv

    if not args.inside_namespace:
        if not args.no_comet:
            comet_venv()  # install before entering the namespace, which has no network
        cmd = [sys.executable, "-m", "alertbench.harness.cli", *sys.argv[1:], "--inside-namespace"]
        script = "ip link set lo up && exec " + " ".join(f"'{c}'" for c in cmd)
        return subprocess.run(["unshare", "-n", "sh", "-c", script]).returncode
    venv = None if args.no_comet else comet_venv()
    rows = vtp_bench.run(args.alerts, venv, with_kafka=not args.no_kafka)
    command = command_line(["alertbench", *(a for a in sys.argv[1:] if a != "--inside-namespace")])
    path = write_run(
        args.output, "vtp", {"alerts": args.alerts, "results": rows}, args, command=command
    )
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from alertbench.harness.workload import Workload, run_workload

    workload = Workload.load(args.workload)
    if args.subscribers is not None:
        workload = dataclasses.replace(workload, subscribers=args.subscribers)
    client = kafka_transport_options(args)
    if client and not args.transport.startswith("kafka://"):
        raise ConfigError(
            "the Kafka client options reach an existing cluster: give --transport "
            "kafka://HOST:PORT/TOPIC (a local cluster needs none)"
        )
    with progress() as bar:
        row = run_workload(
            workload,
            args.transport,
            args.serializer,
            progress=bar,
            roles="threads" if args.threads else "processes",
            transport_options=client,
        )
    row["transport"] = shown = redact_url(args.transport)  # a URL may carry a password
    warm, topic = row["warm_up"], row["topic"]
    if warm is not None:
        out.print(
            f"warm-up (off the record): {warm['alerts_sent']:,} alerts in "
            f"{warm['seconds']:g} s, lost {warm['lost']:,}",
            markup=False,
        )
    if topic is not None:
        out.print(
            f"topic: {topic['partitions']} partition(s), replication factor "
            f"{topic['replication_factor']}",
            markup=False,
        )
    if workload.producers > 1:
        each = row["processes"]["publishers"]
        out.print(
            f"publishers: {len(each)} processes, "
            + ", ".join(f"{p['alerts']:,} alerts/{p['cpu_seconds']:.1f} CPU s" for p in each),
            markup=False,
        )
    lat = row["latency_us"]
    out.print(
        f"{workload.name} over {shown} x {args.serializer}: {row['alerts_sent']:,} "
        f"alerts offered at {row['offered_alerts_per_second']:,.0f}/s to "
        f"{workload.subscribers} subscriber(s); lost {row['lost']:,}, duplicates "
        f"{row['duplicates']:,}, sent behind schedule {row['sent_behind_schedule']:,}; latency "
        f"p50 {lat['p50'] / 1e3:,.1f} ms, p99 {lat['p99'] / 1e3:,.1f} ms, max "
        f"{lat['max'] / 1e3:,.1f} ms; {row['within_60s_fraction'] * 100:.2f}% within 60 s; "
        f"{row['cores_per_stream_at_lsst_rate']:.2f} cores per stream at LSST's rate",
        markup=False,
    )
    if row["acknowledged"] is not None:
        out.print(
            f"accounting per alert: {row['alerts_published']:,} published, "
            f"{row['acknowledged']:,} acknowledged, {row['unacknowledged']:,} not acknowledged; "
            f"{row['lost_acknowledged']:,} acknowledged but not delivered",
            markup=False,
        )
    if row["aborted"]:
        out.print(f"aborted: {row['aborted']}", markup=False)
    roles = row.get("processes")
    if roles and roles.get("subscribers") and not args.threads:  # threads: one process
        subs = roles["subscribers"]
        out.print(
            f"processes: publisher {roles['publisher']['cpu_seconds']:.1f} CPU s, peak "
            f"{roles['publisher']['peak_rss_mb']:,.0f} MB; subscribers "
            + ", ".join(f"{p['cpu_seconds']:.1f} s/{p['peak_rss_mb']:,.0f} MB" for p in subs)
            + f"; servers {roles.get('servers_cpu_seconds', 0.0):.1f} CPU s",
            markup=False,
        )
    if args.output:
        path = _write(args, "workload-run", row)
        out.print(f"wrote {path}")
    return 0 if row["lost"] == 0 and not row["aborted"] else 1


def cmd_max_rate(args: argparse.Namespace) -> int:
    from alertbench.harness.max_rate import find_max_rate

    client = kafka_transport_options(args)
    if client and not args.transport.startswith("kafka://"):
        raise ConfigError(
            "the Kafka client options reach an existing cluster: give --transport "
            "kafka://HOST:PORT/TOPIC (a local cluster needs none)"
        )
    with progress() as bar:  # a fresh local stream per step; Kafka: one cluster, a topic each
        result = find_max_rate(
            args.transport,
            args.serializer,
            start=args.start,
            seconds=args.seconds,
            latency_bound_s=args.latency_bound,
            progress=bar,
            transport_options=client,
        )
    result["transport"] = shown = redact_url(args.transport)
    out.print(
        f"{shown} x {args.serializer}: maximum sustainable rate "
        f"{result['max_sustainable_rate']:,.0f} alerts/s = {result['headroom_over_lsst']:.2f}x "
        f"LSST's average rate (p99 <= {args.latency_bound:g} s, nothing lost, <=1% late)",
        markup=False,
    )
    if args.output:
        path = _write(args, "max-rate", result)
        out.print(f"wrote {path}")
    return 0


def cmd_codec_bench(args: argparse.Namespace) -> int:
    from alertbench.harness.codec_bench import run_codec_bench

    payload = run_codec_bench(
        args.alerts, seed=args.seed, repeats=args.repeats, announce=console.print
    )
    path = write_run(args.output, "codecs", payload, args)
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_xml_compression(args: argparse.Namespace) -> int:
    from alertbench.harness.xml_compression import run_xml_compression

    if not (args.no_kafka or args.bootstrap_servers):
        console.print("starting a local Kafka (KRaft, 1 broker) for the Kafka part...")
    payload = run_xml_compression(
        args.alerts,
        seed=args.seed,
        repeats=args.repeats,
        levels=args.levels,
        compressions=args.compression,
        with_kafka=not args.no_kafka,
        bootstrap_servers=args.bootstrap_servers,
        announce=console.print,
    )
    path = write_run(args.output, "xml-compression", payload, args)
    out.print(path.read_text(), markup=False, highlight=False)
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    from alertbench.harness.report import evidence

    out.print(f"wrote {evidence.write(args.results)}")
    return 0


def cmd_transports(args: argparse.Namespace) -> int:
    from alertbench.harness.report.capabilities import markdown_table

    print(markdown_table())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from alertbench.harness.report.render import write_reports

    for path in write_reports(args.folder):
        out.print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from alertbench.harness.report.compare import compare, format_comparison

    out.print(format_comparison(compare(args.a, args.b)), markup=False, highlight=False)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from alertbench.harness.report.aggregate import aggregate

    out.print(f"wrote {aggregate(args.folder, args.output)}")
    return 0


# --------------------------------------------------------------------------- parsers


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from alertbench.transports.base import kinds

    interprocess = kinds(interprocess=True)
    serializers = sorted(SERIALIZERS)

    vis = sub.add_parser(
        "kafka-visit",
        help="one visit of realistic alerts through Kafka per compression codec, ranked",
        description="Start a local Kafka (or use --bootstrap-servers), publish one visit of "
        "realistic pre-encoded alerts per compression codec while a subscriber consumes it, and "
        "write results.json and a ranked report.md.",
    )
    vis.add_argument("--alerts", type=positive_int, default=10_000, help="alerts in the visit")
    vis.add_argument(
        "--pool", type=positive_int, default=500, help="distinct simulated alerts to cycle"
    )
    vis.add_argument("--seed", type=int, default=1)
    vis.add_argument(
        "--compression",
        nargs="+",
        default=["none", "lz4", "zstd", "snappy"],
        help="codecs to compare (default: none lz4 zstd snappy)",
    )
    vis.add_argument("--bootstrap-servers", default=None, help="use this cluster, start none")
    add_kafka_client_options(vis)
    vis.add_argument("-o", "--output", type=output_folder, default=Path("out/kafka-visit"))
    vis.set_defaults(func=cmd_kafka_visit)

    mat = sub.add_parser(
        "matrix",
        help="every transport x serialization on the same alerts, ranked against LSST",
        description="Start the servers each transport needs (a local Kafka, a gRPC server, a "
        "VTP broker), push the same realistic alerts through every transport x serialization "
        "with the codec in the loop, and write results.json, a ranked report.md and plots.",
    )
    mat.add_argument("--alerts", type=positive_int, default=1000, help="alerts per combination")
    mat.add_argument("--pool", type=positive_int, default=200, help="distinct simulated alerts")
    mat.add_argument("--seed", type=int, default=1)
    mat.add_argument(
        "--transports",
        nargs="+",
        type=transport_kind(interprocess=True),
        default=interprocess,
        metavar="KIND",
        help=f"transports to run (default all: {' '.join(interprocess)})",
    )
    mat.add_argument(
        "--serializers",
        nargs="+",
        choices=serializers,
        default=serializers,
        metavar="NAME",
        help=f"serializations to run (default all: {' '.join(serializers)})",
    )
    mat.add_argument("--bootstrap-servers", default=None, help="use this Kafka, start none")
    add_kafka_client_options(mat)
    mat.add_argument(
        "--max-rate",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="also search each combination's maximum sustainable rate, SECONDS per step",
    )
    mat.add_argument(
        "--subscriber-thread",
        action="store_true",
        help="run the subscriber as a thread of the publisher's process (default: a process of "
        "its own, as a broker's consumer would be)",
    )
    mat.add_argument(
        "--serializer-option",
        metavar="NAME.KEY=VALUE",
        action=SerializerOptions,
        default={},
        help="an option of one serializer, e.g. avro.engine=cavro (repeatable)",
    )
    mat.add_argument("-o", "--output", type=output_folder, default=Path("out/matrix"))
    mat.set_defaults(func=cmd_matrix)

    vb = sub.add_parser(
        "vtp-bench",
        help="the same VOEvents through tcp, Kafka, our VTP broker and Comet, in one run",
        description="Measure VTP's cost: publish the same VOEvent packets through the tcp "
        "baseline, Kafka, alertbench's VTP broker and Comet 3.1.0 (installed from PyPI into its "
        "own environment), inside a loopback-only network namespace (unshare -n).",
    )
    vb.add_argument("--alerts", type=positive_int, default=10_000)
    vb.add_argument("--no-kafka", action="store_true")
    vb.add_argument("--no-comet", action="store_true")
    vb.add_argument("-o", "--output", type=output_folder, default=Path("out/vtp-bench"))
    vb.add_argument("--inside-namespace", action="store_true", help=argparse.SUPPRESS)
    vb.set_defaults(func=cmd_vtp_bench)

    tr = sub.add_parser(
        "transports",
        help="what each transport guarantees, from its declared capabilities (Markdown)",
        description="Print, as a Markdown table, every registered transport kind with what it "
        "does with a slow and a dead subscriber and what it guarantees, read from the "
        "Capabilities each transport declares in code (README.md carries this table).",
    )
    tr.set_defaults(func=cmd_transports)

    run = sub.add_parser(
        "run",
        help="run a workload file (LSST's schedule, paced) over one transport and serialization",
        description="Run a declarative workload (harness/workloads/*.yaml, or a path) over one "
        "transport and serialization, paced by its schedule, with its number of subscribers, "
        "after its warm-up (off the record); latency runs from each alert's intended send time "
        "to after decode. A Kafka topic the run creates gets the workload's partitions and "
        "replication factor (else 3 and 1); an existing kafka://HOST:PORT/TOPIC topic is used "
        "as it is, unless the workload states a layout it does not have (refused). The "
        "workload's producers are that many publisher processes (Kafka only).",
    )
    run.add_argument(
        "workload", help="a YAML file, or a name: lsst-design-night, peak-visit, quick-night"
    )
    run.add_argument(
        "--transport",
        type=kind_or_url,
        default="kafka",
        help=f"a transport kind ({', '.join(kinds())}) or a URL",
    )
    run.add_argument("--serializer", default="avro", choices=serializers)
    run.add_argument(
        "--threads",
        action="store_true",
        help="run the subscribers as threads of this process (default: one process each)",
    )
    run.add_argument(
        "--subscribers",
        type=positive_int,
        default=None,
        help="full-stream subscribers (default: the workload's own number)",
    )
    run.add_argument(
        "-o",
        "--output",
        type=results_target,
        default=None,
        help="a .json file for the results alone, or a folder for results.json and report.md",
    )
    add_kafka_client_options(run)
    run.set_defaults(func=cmd_run)

    mr = sub.add_parser(
        "max-rate",
        help="search the maximum sustainable rate of one transport x serialization",
        description="Offer constant rates (doubling, then bisecting) to one subscriber; a rate "
        "is sustainable when nothing is lost, <=1%% of alerts are sent >50 ms late and p99 "
        "latency stays under the bound.",
    )
    mr.add_argument(
        "--transport",
        type=transport_kind(interprocess=True),
        default="tcp",
        help=f"a transport kind: {', '.join(interprocess)} (a local stream is started)",
    )
    mr.add_argument("--serializer", default="avro", choices=serializers)
    mr.add_argument("--start", type=positive_float, default=50.0, help="first rate tried, alerts/s")
    mr.add_argument("--seconds", type=positive_float, default=6.0, help="duration of each step")
    mr.add_argument("--latency-bound", type=positive_float, default=1.0, help="p99 bound, seconds")
    mr.add_argument(
        "-o",
        "--output",
        type=results_target,
        default=None,
        help="a .json file for the results alone, or a folder for results.json and report.md",
    )
    add_kafka_client_options(mr)
    mr.set_defaults(func=cmd_max_rate)

    cb = sub.add_parser(
        "codec-bench",
        help="what every codec and engine costs per realistic alert, in one run",
        description="Encode, decode and (native Avro) columnar decode of the same simulated "
        "alerts by every codec and engine, one after another in this process; medians of "
        "--repeats passes with their spread, ratios to cavro, fastavro and upb from this run.",
    )
    cb.add_argument("--alerts", type=positive_int, default=100)
    cb.add_argument("--seed", type=int, default=11)
    cb.add_argument("--repeats", type=positive_int, default=5)
    cb.add_argument("-o", "--output", type=output_folder, default=Path("out/codecs"))
    cb.set_defaults(func=cmd_codec_bench)

    xc = sub.add_parser(
        "xml-compression",
        help="does compression close VOEvent XML's bandwidth gap, and at what CPU cost?",
        description="The same simulated alerts as VOEvent XML (embed, reference, compact), "
        "Avro and voevent3: bytes and encode/decode µs per alert plain and per-message zstd, "
        "then through a real Kafka (started here unless --bootstrap-servers) with "
        "compression.type none/lz4/zstd: bytes stored and on the wire, producer and consumer "
        "CPU, consumer alerts/s; medians of --repeats with min-max.",
    )
    xc.add_argument("--alerts", type=positive_int, default=200)
    xc.add_argument("--seed", type=int, default=11)
    xc.add_argument("--repeats", type=positive_int, default=3)
    xc.add_argument(
        "--levels", nargs="+", type=positive_int, default=[1, 3, 9], help="per-message zstd levels"
    )
    xc.add_argument(
        "--compression",
        nargs="+",
        choices=["none", "lz4", "zstd", "snappy", "gzip"],
        default=["none", "lz4", "zstd"],
        help="Kafka compression.type values (default: none lz4 zstd)",
    )
    xc.add_argument("--no-kafka", action="store_true", help="the per-message part alone")
    xc.add_argument("--bootstrap-servers", default=None, help="use this Kafka, start none")
    xc.add_argument("-o", "--output", type=output_folder, default=Path("out/xml-compression"))
    xc.set_defaults(func=cmd_xml_compression)

    ev = sub.add_parser(
        "evidence",
        help="regenerate results/voevent3-evidence.md from the published runs",
    )
    ev.add_argument("--results", type=existing_folder, default=Path("results"))
    ev.set_defaults(func=cmd_evidence)

    rep = sub.add_parser(
        "report",
        help="regenerate report.md and plots from results.json (one run, or every run in a "
        "folder such as results/)",
    )
    rep.add_argument(
        "folder", type=existing_folder, help="a run folder, or a folder of run folders"
    )
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser(
        "compare",
        help="ratios (B/A) of the key figures of two runs of the same kind",
        description="Print the key figures of two runs side by side with their ratio B/A "
        "(alerts/s, latency, losses, sizes: what the kind measures). Runs of different kinds "
        "are refused.",
    )
    cmp_.add_argument("a", type=Path, help="run A: a folder with results.json, or the file")
    cmp_.add_argument("b", type=Path, help="run B")
    cmp_.set_defaults(func=cmd_compare)

    agg = sub.add_parser(
        "aggregate",
        help="one report of every run JSON the tox bench environments wrote (out/tox)",
        description="Read every run JSON in FOLDER (what 'alertbench run -o X.json' writes; "
        "'tox -m bench' writes out/tox/<env>.json) and write one results.json and report.md: a "
        "row per transport x serialization with its throughput, latency percentiles, fraction "
        "within 60 s and losses, and the machine, versions and commit of each run.",
    )
    agg.add_argument(
        "folder", type=Path, nargs="?", default=Path("out/tox"), help="default: out/tox"
    )
    agg.add_argument("-o", "--output", type=output_folder, default=Path("out/tox-report"))
    agg.set_defaults(func=cmd_aggregate)
