"""The ``alertbench`` command line.

Every sub-command is a thin layer over the library (parse, one library call, print): the same
functions are what the tests and the harness call, so what the CLI prints is what the code
measures. The commands are grouped by concern, one module each, and none imports another's:

- :mod:`.alerts`: simulate, inspect, convert, generate, sizes, schemas (no server);
- :mod:`.kafka`: a local Kafka for the user (fetch, start, status, stop);
- :mod:`.bench`: the benchmarks and their reports (kafka-visit, matrix, run, max-rate,
  vtp-bench, evidence, report, compare);
- :mod:`.capacity`: the three-layer comparison (codec, transport beside its raw library,
  end to end) and the cores a peak visit needs;
- :mod:`.minibroker`: the mini-broker's service, users, filters and benchmark;
- :mod:`.play`: a visit replayed into Kafka at LSST's cadence, and a consumer group's lag;
- :mod:`.transfer`: the users' commands: publish, subscribe, vtp send;
- :mod:`.servers`: serve grpc|vtp, standalone servers in the foreground;
- :mod:`.console`: what they share (consoles, progress, argument types) and the one error
  handler: a user's mistake is one line on stderr and exit status 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from alertbench.harness.cli import (
    alerts,
    bench,
    capacity,
    kafka,
    minibroker,
    play,
    servers,
    transfer,
)
from alertbench.harness.cli.console import PROG, Parser, run

from alertbench import __version__


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description=(
            "Testbed and reference implementation for distributing astronomical alerts at "
            "Rubin/LSST scale: realistic Rubin alerts, interchangeable serializations and "
            "transports, and a load harness that ranks them against LSST's requirements."
        ),
        epilog="Run 'alertbench COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    alerts.add_parsers(sub)
    kafka.add_parsers(sub)
    bench.add_parsers(sub)
    capacity.add_parsers(sub)
    minibroker.add_parsers(sub)
    play.add_parsers(sub)
    transfer.add_parsers(sub)
    servers.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run one command; its exit status (2: a user's mistake)."""
    return run(build_parser, argv)
