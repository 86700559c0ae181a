"""``alertbench serve grpc|vtp``: a standalone server in the foreground, as ``twistd -n comet``.

It logs a line per subscriber (and author) that connects or leaves, a counters line every
``--stats-every`` seconds and at exit, writes ``--pidfile`` and removes it, and stops cleanly on
SIGTERM or SIGINT with exit status 0.

``serve tcp`` and ``serve zmq`` are refused, on purpose: those transports have no broker. Their
publisher binds the port and subscribers connect to it, so the server *is* ``alertbench publish
FILE tcp://HOST:PORT`` (which waits for ``--wait-subscribers``), and a relay here would be a new
transport with its own semantics, measured by nobody.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from alertbench.harness.cli.console import positive_float, positive_int

from alertbench.errors import ConfigError
from alertbench.resources import pid_alive

BROKERLESS = {
    "tcp": "tcp://",
    "zmq": "zmq+tcp://",
}


def port_number(text: str) -> int:
    """A TCP port, 0 meaning one the OS chooses (printed at start)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


port_number.__name__ = "port"


def _log(text: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} {text}", flush=True)


def _counters_line(counts: dict[str, int]) -> str:
    return "counters: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def _remove_own_pidfile(path: Path | None) -> None:
    """Remove the pidfile only if it names this process: one refused because another live
    server owns it must stay, or that server could no longer be found and stopped."""
    if path is None:
        return
    try:
        if int(path.read_text().strip() or "0") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _write_pidfile(path: Path | None) -> None:
    if path is None:
        return
    if path.exists():
        try:
            pid = int(path.read_text().strip() or "0")
        except ValueError:
            pid = 0
        if pid_alive(pid):
            raise ConfigError(f"--pidfile {path}: process {pid} is running and owns it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def run_until_stopped(
    name: str,
    counters: Callable[[], dict[str, int]],
    watched: tuple[str, ...],
    stats_every: float,
    pidfile: Path | None,
    stop_server: Callable[[], None],
) -> int:
    """Serve until SIGTERM/SIGINT: a line when a ``watched`` counter (peers connected now)
    changes, a counters line every ``stats_every`` s and at exit; 0 once stopped."""
    stopped = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _write_pidfile(pidfile)
        last = {key: counters().get(key, 0) for key in watched}
        next_stats = time.monotonic() + stats_every
        while not stopped.wait(0.2):
            now = counters()
            for key in watched:
                before, after = last[key], now.get(key, 0)
                if after != before:
                    what = "connected" if after > before else "disconnected"
                    _log(f"{name}: {abs(after - before)} of {key} {what} ({after} now)")
                    last[key] = after
            if time.monotonic() >= next_stats:
                _log(f"{name} {_counters_line(now)}")
                next_stats = time.monotonic() + stats_every
        _log(f"{name}: stopping")
        stop_server()
        _log(f"{name} {_counters_line(counters())}")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _remove_own_pidfile(pidfile)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.kind in BROKERLESS:
        scheme = BROKERLESS[args.kind]
        raise ConfigError(
            f"serve {args.kind}: {args.kind} has no broker to serve (its publisher binds and "
            f"subscribers connect): run 'alertbench publish FILE {scheme}HOST:PORT "
            f"--wait-subscribers N' and 'alertbench subscribe {scheme}HOST:PORT'"
        )
    if args.kind == "grpc":
        return _serve_grpc(args)
    return _serve_vtp(args)


def _serve_grpc(args: argparse.Namespace) -> int:
    from alertbench.transports.grpc import AlertStreamServer

    if args.receive_port is not None:
        raise ConfigError("serve grpc: --receive-port is for vtp (gRPC serves one port)")
    server = AlertStreamServer(f"{args.host}:{args.port or 0}", window=args.window)
    server.start()
    _log(f"gRPC alert stream serving on {server.url} (retaining {args.window:,} alerts)")

    def counters() -> dict[str, Any]:
        counts = dict(server.counters())
        counts["subscribers"] = server.connected_subscribers()
        counts["publishers"] = max(0, counts.get("streams", 0) - counts["subscribers"])
        return counts

    return run_until_stopped(
        "grpc", counters, ("subscribers", "publishers"), args.stats_every, args.pidfile, server.stop
    )


def _serve_vtp(args: argparse.Namespace) -> int:
    from alertbench.transports.vtp import VtpBroker

    broker = VtpBroker(
        args.host,
        receive_port=args.receive_port or 0,
        broadcast_port=args.port or 0,
    )
    _log(
        f"VTP broker: authors publish to {args.host}:{broker.receive_port}, subscribers "
        f"connect to {args.host}:{broker.broadcast_port} ({broker.url})"
    )
    return run_until_stopped(
        "vtp",
        broker.counters,
        ("subscribers", "authors"),
        args.stats_every,
        args.pidfile,
        broker.stop,
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    srv = sub.add_parser(
        "serve",
        help="run a standalone gRPC or VTP server in the foreground",
        description="Run a server in the foreground until SIGTERM or Ctrl-C: grpc (the "
        "alert-stream service: publishers and subscribers both connect) or vtp (a VOEvent "
        "broker: authors send to the receive port, subscribers connect to the broadcast port). "
        "tcp and zmq have no broker: their publisher ('alertbench publish') binds the port.",
    )
    srv.add_argument("kind", choices=["grpc", "vtp", "tcp", "zmq"])
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="gRPC port, or VTP broadcast port (default: one the OS chooses, printed)",
    )
    srv.add_argument(
        "--receive-port",
        type=port_number,
        default=None,
        help="VTP receive port, where authors publish (default: one the OS chooses)",
    )
    srv.add_argument(
        "--window",
        type=positive_int,
        default=100_000,
        help="gRPC: alerts retained for replay (default 100,000)",
    )
    srv.add_argument(
        "--stats-every",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds between counters lines (default 10)",
    )
    srv.add_argument("--pidfile", type=Path, default=None, help="write the process id here")
    srv.set_defaults(func=cmd_serve)
