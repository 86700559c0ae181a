"""``alertbench capacity``: the three layers (codec cost, transport capacity beside its raw
library, end to end) in one run, and the cores a peak visit to the brokers needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from alertbench.harness.cli.console import (
    console,
    non_negative_float,
    options_of,
    out,
    output_folder,
    positive_int,
    progress,
    transport_kind,
)
from alertbench.harness.report.results import RESULTS_FILE, write_results
from alertbench.refimpl.codecs.base import SERIALIZERS


def _names(choices: list[str], what: str) -> object:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or repr(text)}: not a {what} (choose from "
                f"{', '.join(choices)})"
            )
        return names

    parse.__name__ = f"{what} list"
    return parse


def _kinds(text: str) -> list[str]:
    check = transport_kind(interprocess=True)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one transport kind")
    return [check(n) for n in names]


_kinds.__name__ = "transport kinds"


def cmd_capacity(args: argparse.Namespace) -> int:
    from alertbench.harness.capacity import run_layers
    from alertbench.harness.report.render import write_report

    with progress() as bar:
        payload = run_layers(
            transports=args.transports, serializers=args.serializers, alerts=args.alerts,
            subscribers=args.subscribers, repeats=args.repeats, pool_size=args.pool,
            seed=args.seed, partitions=args.partitions,
            end_to_end_seconds=args.end_to_end_seconds,
            end_to_end_serializers=args.end_to_end_serializers,
            announce=lambda s: console.print(s, markup=False, highlight=False), progress=bar,
        )  # fmt: skip
    write_results(args.output / RESULTS_FILE, "capacity", payload, options=options_of(args))
    path = write_report(args.output)
    out.print(path.read_text(), markup=False, highlight=False)
    out.print(f"wrote {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    serializers = list(SERIALIZERS)
    cap = sub.add_parser(
        "capacity",
        help="three layers in one run: codec cost, transport capacity beside its raw library, "
        "end to end; and the cores a peak visit to N brokers needs",
        description="(a) µs to encode and decode per serialization; (b) pre-encoded payloads "
        "from one publisher to N subscriber processes through each transport and through the "
        "raw library it is built on (socket, pyzmq, grpcio, confluent-kafka), interleaved, "
        "repeated; (c) with --end-to-end-seconds, each combination's maximum sustainable rate "
        "with the codec in the loop. Starts its own servers (a local Kafka), loopback only.",
    )
    cap.add_argument(
        "--transports", type=_kinds, default=None,
        help="comma-separated transport kinds (default: every one that runs across processes)",
    )  # fmt: skip
    cap.add_argument(
        "--serializers", type=_names(serializers, "serializer"), default=None,
        help="comma-separated serializers for (a) and the cores table (default: "
        f"{', '.join(serializers)})",
    )  # fmt: skip
    cap.add_argument("--alerts", type=positive_int, default=2000, help="alerts per capacity run")
    cap.add_argument("--subscribers", type=positive_int, default=5, help="full-stream subscribers")
    cap.add_argument("--repeats", type=positive_int, default=3, help="repeats of every figure")
    cap.add_argument("--pool", type=positive_int, default=50, help="distinct simulated alerts")
    cap.add_argument("--seed", type=int, default=1)
    cap.add_argument("--partitions", type=positive_int, default=3, help="Kafka topic partitions")
    cap.add_argument(
        "--end-to-end-seconds", type=non_negative_float, default=0.0,
        help="seconds per step of layer (c)'s rate search (0: leave layer (c) out)",
    )  # fmt: skip
    cap.add_argument(
        "--end-to-end-serializers", type=_names(serializers, "serializer"), default=None,
        help="serializers for layer (c) (default: those of --serializers)",
    )  # fmt: skip
    cap.add_argument("-o", "--output", type=output_folder, default=Path("out/capacity"),
                     help="the run's folder (results.json, report.md, plots)")  # fmt: skip
    cap.set_defaults(func=cmd_capacity)
