"""Commands on alerts themselves: simulate, inspect, convert, generate, sizes, schemas.

No server, no network: each reads or writes alert files through refimpl and prints what it
did. Files are checked when the arguments are parsed (a missing input, a folder where a file is
needed), and a file that is not what it claims (a truncated container, one without alerts) is
refused with a typed error, so every mistake reads as one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alertbench.harness.cli.console import (
    existing_file,
    out,
    output_file,
    positive_int,
    progress,
)
from alertbench.refimpl.alert.schema import available_versions, latest_version
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import SERIALIZERS, Alert, get_serializer
from alertbench.refimpl.codecs.sizes import SizeReport, cutout_side
from rich.progress import Progress
from rich.table import Table

from alertbench.errors import AlertbenchError, DecodeError


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


def read_alerts(path: Path) -> tuple[str, str, Iterator[Alert]]:
    """(container, serializer name, alerts) of an alert file, refusing a truncated one.

    The Avro reader reports a file cut short in the middle of a block as EOFError while it is
    iterated; that is the file's fault, not ours, so it becomes a DecodeError naming the file.
    """
    from alertbench.refimpl.codecs.files import read_alert_file

    container, codec_name, alerts = read_alert_file(path)

    def checked() -> Iterator[Alert]:
        try:
            yield from alerts
        except EOFError as exc:
            raise DecodeError(f"{path} is truncated: {exc}", codec=container) from exc

    return container, codec_name, checked()


def cmd_simulate(args: argparse.Namespace) -> int:
    from alertbench.refimpl.codecs.avro import write_ocf

    sim = AlertSimulator(_config(args))
    visits = list(sim.visits(args.visits, start=args.first_visit))
    limit = args.limit
    total = sum(v.n_alerts if limit is None else min(limit, v.n_alerts) for v in visits)
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def alerts(bar: Progress) -> Iterator[Alert]:
        task = bar.add_task("simulating", total=total)
        for visit in visits:
            for alert in visit.alerts(limit):
                yield alert
                bar.advance(task)

    with progress() as bar, args.output.open("wb") as fp:
        written = write_ocf(fp, alerts(bar), sim.schema.version, codec=args.codec)
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


def serializer_schema_name(serializer: object) -> str:
    schema = getattr(serializer, "schema", None) or getattr(serializer, "alert_schema", None)
    return f"{schema.namespace}.alert" if schema is not None else "?"


def cmd_inspect(args: argparse.Namespace) -> int:
    data_size = args.file.stat().st_size
    container, codec_name, alerts = read_alerts(args.file)
    serializer = get_serializer(codec_name if codec_name != "none" else "avro")
    report = SizeReport(serializer_name=serializer.name)
    first: Alert | None = None
    with progress() as bar:
        task = bar.add_task("reading", total=None)
        for alert in alerts:
            first = first or alert
            report.add(alert, serializer)
            bar.advance(task)
    count = len(report.total)
    if count == 0:
        raise AlertbenchError(f"{args.file}: no alerts in this {container} file")
    schema_name = serializer_schema_name(serializer)
    result: dict[str, Any] = {
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


def cmd_convert(args: argparse.Namespace) -> int:
    from alertbench.harness.transfer import split_messages
    from alertbench.refimpl.codecs.files import write_alert_file

    if (args.output is None) == (args.split is None):
        raise AlertbenchError("convert: give either OUTPUT (one file) or --split DIR, not both")
    container, codec_name, alerts = read_alerts(args.input)
    with progress() as bar:
        task = bar.add_task(f"{codec_name} -> {args.to}", total=None)

        def counted() -> Iterator[Alert]:
            for alert in alerts:
                yield alert
                bar.advance(task)

        if args.split is not None:
            # One message per file, named by alert id: what comet-sendvo and 'vtp send' read.
            count = split_messages(counted(), args.to, args.split)
        else:
            count = write_alert_file(args.output, counted(), args.to)
    if args.split is not None:
        out.print(
            f"converted {count:,} alerts from {args.input} ({container}, {codec_name}) to "
            f"{count:,} {args.to} files in {args.split}"
        )
        return 0
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
    with progress() as bar:
        task = bar.add_task("sizing", total=args.visits * args.per_visit)
        for visit in sim.visits(args.visits):
            for alert in visit.alerts(args.per_visit):
                report.add(alert, serializer)
                bar.advance(task)
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


def cmd_schemas(args: argparse.Namespace) -> int:
    latest = latest_version()
    for version in available_versions():
        major, minor = (int(x) for x in version.split("."))
        mark = "  (latest, default)" if version == latest else ""
        out.print(f"{version}  schema id {major * 100 + minor}{mark}")
    out.print(f"serializers: {', '.join(sorted(SERIALIZERS))}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser(
        "simulate",
        help="write simulated visits of realistic Rubin alerts to an Avro container file",
        description="Simulate visits of realistic Rubin alerts (light curves, FITS cutouts) and "
        "write them to an Avro Object Container File that any Avro reader can open.",
    )
    _add_simulation_args(sim)
    sim.add_argument("--visits", type=positive_int, default=1, help="number of visits (default 1)")
    sim.add_argument("--first-visit", type=int, default=0, help="index of the first visit")
    sim.add_argument(
        "--limit", type=positive_int, default=None, help="at most this many alerts per visit"
    )
    sim.add_argument(
        "--codec",
        default="null",
        choices=("null", "deflate", "zstandard", "snappy"),
        help="OCF block compression (default none, as alerts travel)",
    )
    sim.add_argument("-o", "--output", type=output_file, required=True, help="output .avro file")
    sim.set_defaults(func=cmd_simulate)

    ins = sub.add_parser(
        "inspect",
        help="summarise an alert file: counts, sizes, schema version, cutout shape",
        description="Summarise an alert file in any serialization: an Avro container file, a "
        "frames file written by 'convert', or a single message (Avro, Protobuf, VOEvent XML, "
        "VOEvent 3).",
    )
    ins.add_argument("file", type=existing_file)
    ins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ins.set_defaults(func=cmd_inspect)

    con = sub.add_parser(
        "convert",
        help="convert an alert file to avro, protobuf, voevent or voevent3",
        description="Read alerts in any serialization and write them in another: avro as an "
        "Avro container file, the others as a frames file (length-prefixed messages).",
    )
    con.add_argument("--to", required=True, choices=sorted(SERIALIZERS))
    con.add_argument("input", type=existing_file)
    con.add_argument("output", type=output_file, nargs="?", default=None)
    con.add_argument(
        "--split",
        type=Path,
        default=None,
        metavar="DIR",
        help="write one message file per alert in DIR (ALERTID.xml for voevent) instead",
    )
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
    siz.add_argument("--visits", type=positive_int, default=5, help="visits to sample (default 5)")
    siz.add_argument(
        "--per-visit", type=positive_int, default=200, help="alerts sampled per visit (default 200)"
    )
    siz.add_argument("--json", action="store_true", help="print machine-readable JSON")
    siz.set_defaults(func=cmd_sizes)

    ver = sub.add_parser("schemas", help="list the Rubin alert schema versions available")
    ver.set_defaults(func=cmd_schemas)
