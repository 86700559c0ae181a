"""``alertbench play`` and ``alertbench lag``: a replayed visit stream for broker teams, and a
live view of whether a consumer group keeps up with it.

``play`` is this project's take on Rubin's alert-stream-simulator (DMTN-149): one visit,
encoded once as Rubin publishes it, repeated into a Kafka topic at LSST's cadence in per-CCD
bursts (:mod:`alertbench.harness.play`). ``lag`` reads the group's committed offsets against the
topic's end offsets (:mod:`alertbench.harness.lag`). Both talk to the cluster given with
``--bootstrap-servers``, else to the local one ``alertbench kafka start`` left running, and
accept the shared Kafka client options (TLS, SASL, ``-X``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from alertbench.harness.cli.console import (
    console,
    existing_file,
    out,
    positive_float,
    positive_int,
    progress,
)
from alertbench.harness.cli.kafka_options import (
    add_kafka_client_options,
    kafka_transport_options,
)

from alertbench.errors import ConfigError, DecodeError


def _kafka_url(args: argparse.Namespace) -> str:
    """``kafka://HOST:PORT/TOPIC`` for the cluster asked for, or the local one (said so)."""
    bootstrap: str | None = args.bootstrap_servers
    if not bootstrap:
        from alertbench.harness.play import local_kafka

        state = local_kafka(args.state)
        bootstrap = state.bootstrap_servers
        auth = (
            " (it requires SASL: give --username and --password-file)"
            if state.auth and not args.username
            else ""
        )
        console.print(
            f"using the local Kafka started by 'alertbench kafka start' at {bootstrap}{auth}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if "/" in args.topic or not args.topic.strip():
        raise ConfigError(f"--topic {args.topic!r} is not a Kafka topic name")
    return f"kafka://{bootstrap}/{args.topic}"


def _transport(args: argparse.Namespace) -> Any:
    from alertbench.transports.kafka import KafkaTransport

    return KafkaTransport(_kafka_url(args), **kafka_transport_options(args))


def _emit(line: str) -> None:
    """One result line on stdout, flushed: a pipe or a log sees each cycle as it ends."""
    out.print(line, markup=False, highlight=False, soft_wrap=True)
    sys.stdout.flush()


# --------------------------------------------------------------------------- play


def _load_alerts(args: argparse.Namespace) -> tuple[Iterator[Any], int | None, Any, str]:
    """(alerts, how many if known, CCD counts or None, where they come from)."""
    if args.file is not None:
        from alertbench.refimpl.codecs.files import read_alert_file

        container, _, alerts = read_alert_file(args.file)

        def checked() -> Iterator[Any]:
            try:
                yield from alerts
            except EOFError as exc:
                raise DecodeError(f"{args.file} is truncated: {exc}", codec=container) from exc

        return checked(), None, None, f"{args.file} ({container})"
    from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig

    simulator = AlertSimulator(
        SimulationConfig(
            seed=args.seed,
            schema_version=args.schema_version,
            alerts_per_visit_mean=args.alerts,
            alerts_per_visit_sigma=0.0,
            ccds=args.ccds,
            cadence_s=args.cadence,
        )
    )
    visit = simulator.visit(0)
    where = f"a simulated visit (seed {args.seed}, schema {simulator.schema.version})"
    return visit.alerts(), visit.n_alerts, visit.ccd_counts, where


def cmd_play(args: argparse.Namespace) -> int:
    from alertbench.harness.play import (
        CycleReport,
        encode_visit,
        ensure_topic,
        play,
        send_seconds,
    )
    from alertbench.refimpl.codecs.avro import AvroSerializer

    if args.file is not None and args.alerts is not None:
        raise ConfigError("play: give --file or --alerts, not both")
    if args.file is None and args.alerts is None:
        args.alerts = 10_000
    transport = _transport(args)
    ensure_topic(transport, args.partitions)  # a missing cluster is refused before encoding
    codec = AvroSerializer(args.schema_version)
    alerts, total, ccd_counts, where = _load_alerts(args)
    with progress() as bar:
        task = bar.add_task("encoding the visit", total=total)
        visit = encode_visit(
            alerts,
            codec,
            ccd_counts=ccd_counts,
            ccds=args.ccds,
            on_alert=lambda: bar.advance(task),
        )
    n_alerts = len(visit.alerts)
    size = sum(len(a.original) for a in visit.alerts)
    least = send_seconds(n_alerts, args.rate_limit)
    if least > args.cadence:
        console.print(
            f"note: {n_alerts:,} alerts at {args.rate_limit:g}/s take {least:.1f} s, longer "
            f"than the {args.cadence:g} s cadence: every cycle will be late",
            markup=False,
            soft_wrap=True,
        )
    publisher = transport.open_publisher()
    cycles = "until stopped" if args.cycles is None else f"{args.cycles} time(s)"
    console.print(
        f"playing {where}: {n_alerts:,} alerts ({size / 1e6:,.1f} MB) in "
        f"{sum(1 for c in visit.ccd_counts if c)} CCD bursts to {transport.shown_url}, "
        f"every {args.cadence:g} s, {cycles}; cycle k adds k x {visit.stride:,} to the ids",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            console.print("stopping after this flush...", markup=False, soft_wrap=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_cycle(report: CycleReport) -> None:
        _emit(report.line(n_alerts, args.cadence))

    try:
        summary = play(
            visit,
            publisher,
            cadence_s=args.cadence,
            cycles=args.cycles,
            rate_limit=args.rate_limit,
            stop=stop,
            on_cycle=on_cycle,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    missing = summary.sent - summary.acknowledged
    _emit(
        f"{'stopped' if summary.interrupted else 'done'}: {summary.cycles} cycle(s), "
        f"{summary.sent:,} alerts sent, {summary.acknowledged:,} acknowledged"
        + (f", {missing:,} NOT acknowledged" if missing else "")
    )
    return 0 if missing == 0 else 1


# --------------------------------------------------------------------------- lag


def _table(record: dict[str, Any], group: str, topic: str) -> Any:
    """The view refreshed in place at a terminal: the partitions, then total, trend, verdict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"group {group} on {topic}", title_justify="left")
    for name in ("partition", "committed", "end", "lag"):
        table.add_column(name, justify="right")
    for p in record["partitions"]:
        committed = "-" if p["committed"] is None else f"{p['committed']:,}"
        table.add_row(str(p["partition"]), committed, f"{p['end']:,}", f"{p['lag']:,}")
    style = {True: "green", False: "bold red"}.get(record["keeping_up"], "")
    return Group(
        table,
        Text(f"total lag {record['lag']:,}, trend {_trend(record['trend'])}"),
        Text(record["verdict"], style=style),
    )


def _trend(changes: list[int]) -> str:
    return " ".join(f"{c:+,}" for c in changes) if changes else "-"


def _line(record: dict[str, Any]) -> str:
    parts = " ".join(f"{p['partition']}:{p['lag']:,}" for p in record["partitions"])
    return (
        f"t={record['t']:.1f}s lag {record['lag']:,} (partition:lag {parts}) "
        f"trend {_trend(record['trend'])}: {record['verdict']}"
    )


def cmd_lag(args: argparse.Namespace) -> int:
    from alertbench.harness.lag import LagReader, LagSample, sample_record, verdict

    reader = LagReader(_transport(args), args.group)
    samples: list[LagSample] = []
    live: Any = None
    if out.is_terminal and not args.json:
        from rich.live import Live

        live = Live(console=out, auto_refresh=False)
        live.start()
    t0 = time.monotonic()
    try:
        n = 0
        while args.count is None or n < args.count:
            if n:
                time.sleep(max(0.0, t0 + n * args.interval - time.monotonic()))
            samples.append(reader.sample(time.monotonic()))
            del samples[:-100]
            record = sample_record(samples[-1], samples, verdict(samples, args.play_rate), t0)
            if args.json:
                _emit(json.dumps(record))
            elif live is not None:
                live.update(_table(record, args.group, args.topic), refresh=True)
            else:
                _emit(_line(record))
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        reader.close()
    return 0


# --------------------------------------------------------------------------- parsers


def _add_kafka_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, help="the Kafka topic")
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT",
        help="the cluster (default: the local one 'alertbench kafka start' runs)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="the local cluster's state file (default .cache/kafka-cluster.json)",
    )
    add_kafka_client_options(parser)


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    ply = sub.add_parser(
        "play",
        help="repeat one visit into a Kafka topic at LSST's cadence (Rubin's stream simulator)",
        description="Load one visit (simulated, or from an alert file), encode it once as Rubin "
        "publishes it (Avro, Confluent framing) and send it to a Kafka topic every --cadence "
        "seconds in per-CCD bursts, with shutter-close and intended-send headers. Cycle k adds "
        "k times a power of ten to the alerts' ids, so brokers that de-duplicate by id see new "
        "alerts. One line per cycle; Ctrl-C or SIGTERM stops after flushing; exit status 1 if "
        "any alert was not acknowledged.",
    )
    _add_kafka_target(ply)
    source = ply.add_mutually_exclusive_group()
    source.add_argument(
        "--file",
        type=existing_file,
        default=None,
        help="an alert file (any format alertbench reads)",
    )
    source.add_argument(
        "--alerts",
        type=positive_int,
        default=None,
        help="simulate a visit of this many alerts (default 10,000, Rubin's average)",
    )
    ply.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    ply.add_argument(
        "--schema-version", default=None, help="Rubin alert schema (default: the latest shipped)"
    )
    ply.add_argument(
        "--cadence", type=positive_float, default=39.0, help="seconds between visits (default 39)"
    )
    ply.add_argument(
        "--cycles", type=positive_int, default=None, help="visits to play (default: until stopped)"
    )
    ply.add_argument(
        "--ccds", type=positive_int, default=189, help="CCD bursts per visit (default 189)"
    )
    ply.add_argument(
        "--rate-limit",
        type=positive_float,
        default=None,
        metavar="ALERTS_PER_S",
        help="send at most this many alerts per second (default: as fast as Kafka takes them)",
    )
    ply.add_argument(
        "--partitions",
        type=positive_int,
        default=1,
        help="partitions of the topic if it has to be created (default 1)",
    )
    ply.set_defaults(func=cmd_play)

    lag = sub.add_parser(
        "lag",
        help="watch whether a consumer group keeps up with a topic",
        description="Per-partition committed offset, end offset and lag of a consumer group, "
        "the total lag's trend and a verdict (keeping up / falling behind), every --interval "
        "seconds. Reads offsets only: it never joins the group.",
    )
    lag.add_argument("--group", required=True, help="the consumer group")
    _add_kafka_target(lag)
    lag.add_argument(
        "--interval", type=positive_float, default=2.0, help="seconds between samples (default 2)"
    )
    lag.add_argument(
        "--count", type=positive_int, default=None, help="samples to take (default: until Ctrl-C)"
    )
    lag.add_argument(
        "--play-rate",
        type=positive_float,
        default=None,
        metavar="ALERTS_PER_S",
        help="the stream's known rate (default: inferred from the end offsets' growth)",
    )
    lag.add_argument("--json", action="store_true", help="one JSON object per sample")
    lag.set_defaults(func=cmd_lag)
