"""The benchmark matrix: every transport x serialization on the same alerts, ranked against LSST.

Each combination is one run of the engine (:mod:`.engine`): a burst of realistic alerts with the
codec in the loop (the publisher encodes each alert, the subscriber, in a process of its own,
decodes it and only then stamps it received), so the numbers are what a producer and a
broker's consumer would see end to end. Every stream comes from its transport's own
local-stream recipe (the registry: a new transport is offered here without touching this
file): a Kafka topic on one local cluster (KRaft, 1 broker) started once for the matrix, a gRPC
server or a VTP broker in this process, a free port for ZeroMQ and TCP.

Ranking (:func:`rank`, shared with the report): a combination must lose nothing and deliver the
visit within Rubin's 60 s budget; then it is ordered by headroom over LSST's average rate
(10,000 per 39 s): the maximum sustainable rate when the run searched it (``--max-rate
SECONDS``, see :mod:`.max_rate`), else the burst's alerts/s (which overstates what a stream can
hold, and the report says so). Also reported: cores needed per full stream at LSST's rate (CPU
seconds per alert x rate: publisher, subscriber and server processes), bandwidth per full
stream, and whether brokers can replay.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from alertbench.harness.engine import RunResult, RunSpec, Schedule, run
from alertbench.harness.metrics import LSST_RATE
from alertbench.harness.report.render import explain, rank
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer
from alertbench.transports.base import kinds, transport_class

__all__ = [
    "explain",
    "matrix_row",
    "rank",
    "run_matrix",
    "transport_kinds",
    "valid_combination",
    "write_report",
    "write_results",
]

WARMUP_ALERTS = 300
"""Alerts sent, off the record, through a shared server (a Kafka cluster) before the first
combination that uses it, so that combination does not pay for the server's cold start (group
coordinator, producer ids, JIT)."""


def transport_kinds() -> list[str]:
    """The kinds the matrix offers: every registered transport whose publisher and subscribers
    may live in different processes (read from the registry each time, so a transport
    registered at run time is offered)."""
    return kinds(interprocess=True)


def serializer_names() -> list[str]:
    """Every registered serialization, in registry order."""
    return list(SERIALIZERS)


def valid_combination(kind: str, content_type: str) -> bool:
    """Whether the transport carries that content type (VTP: VOEvent XML only)."""
    return transport_class(kind).capabilities.carries(content_type)


def run_matrix(
    transports: list[str],
    serializers: list[str],
    n_alerts: int,
    pool_size: int = 200,
    seed: int = 1,
    progress: Any = None,
    bootstrap_servers: str | None = None,
    max_rate_seconds: float | None = None,
    subscriber_processes: bool = True,
    serializer_options: dict[str, dict[str, Any]] | None = None,
    transport_options: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every combination: one engine run (a burst of ``n_alerts``, the codec in the loop, one
    subscriber in a process of its own, or a thread with ``subscriber_processes=False``) on a
    fresh local stream of the transport; then, with ``max_rate_seconds``, its maximum
    sustainable rate searched with steps of that many seconds, which becomes the ranking's
    headroom. ``serializer_options`` are keyword options per serializer name (``{"avro":
    {"engine": "cavro"}}``), recorded in each row.

    A transport whose streams share a server (Kafka: one cluster, a topic per run) starts it
    once for the matrix, or uses ``bootstrap_servers`` (Kafka's recipe option) if given.
    ``transport_options`` are keyword options per transport kind (``{"kafka": {"user": ...,
    "ca_file": ...}}``: how to reach a cluster that is not ours), given to every transport of
    that kind and to its recipe, which creates the topics with them.
    """
    role = "process" if subscriber_processes else "thread"
    by_kind = {kind: dict((transport_options or {}).get(kind, {})) for kind in transports}
    rows: list[dict[str, Any]] = []
    options = {name: dict((serializer_options or {}).get(name, {})) for name in serializers}
    content_type = {
        name: get_serializer(name, **options[name]).content_type for name in serializers
    }
    with ExitStack() as stack:
        shared: dict[str, Any] = {}
        stream_options: dict[str, dict[str, Any]] = {}
        for kind in dict.fromkeys(transports):
            shared[kind], stream_options[kind] = _shared_for(
                stack, kind, bootstrap_servers, by_kind[kind]
            )
            carried = [n for n in serializers if valid_combination(kind, content_type[n])]
            if carried and (shared[kind] is not None or stream_options[kind]):
                # a server that outlives one run: warmed off the record
                run(
                    RunSpec(
                        kind, carried[0], Schedule.burst(WARMUP_ALERTS), payload="pre-encoded",
                        subscriber_role=role, pool_size=min(pool_size, 50), seed=seed,
                        transport_options=by_kind[kind], stream_options=stream_options[kind],
                        label=f"warming {kind}",
                    ),
                    shared=shared[kind],
                )  # fmt: skip
        for serializer_name in serializers:
            for kind in transports:
                if not valid_combination(kind, content_type[serializer_name]):
                    continue
                if progress is not None:
                    progress.console.print(f"[bold]{kind} x {serializer_name}[/bold]")
                spec = RunSpec(
                    kind,
                    serializer_name,
                    Schedule.burst(n_alerts),
                    payload="codec",
                    serializer_options=options[serializer_name],
                    subscriber_role=role,
                    idle_timeout=15.0,
                    pool_size=pool_size,
                    seed=seed,
                    transport_options=by_kind[kind],
                    stream_options=stream_options[kind],
                    label=f"{kind} x {serializer_name}",
                )
                row = matrix_row(kind, run(spec, progress, shared=shared[kind]))
                if options[serializer_name]:
                    row["serializer_options"] = options[serializer_name]
                if max_rate_seconds:
                    _add_max_rate(row, spec, shared[kind], max_rate_seconds, progress)
                rows.append(row)
    return rows


def _shared_for(
    stack: ExitStack, kind: str, bootstrap_servers: str | None, options: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """(shared resources, stream options) for ``kind``'s streams in this matrix; ``options``
    (the kind's transport options) go to its recipe too, when there are any."""
    cls = transport_class(kind)
    extra = {"transport_options": options} if options else {}
    if bootstrap_servers and "bootstrap_servers" in inspect.signature(cls.local_stream).parameters:
        return None, {"bootstrap_servers": bootstrap_servers, **extra}
    return stack.enter_context(cls.shared_resources()), extra


def _add_max_rate(
    row: dict[str, Any], spec: RunSpec, shared: Any, seconds: float, progress: Any
) -> None:
    from alertbench.harness.max_rate import find_max_rate

    found = find_max_rate(
        spec.transport, spec.serializer, start=64.0, seconds=seconds, max_steps=7,
        progress=progress, subscriber_role=spec.subscriber_role, shared=shared,
        stream_options=spec.stream_options, transport_options=spec.transport_options,
    )  # fmt: skip
    row.update(
        max_sustainable_rate=found["max_sustainable_rate"],
        max_rate_steps=found["steps"],
        max_rate_seconds_per_step=seconds,
        burst_headroom=row["headroom"],
        headroom=found["max_sustainable_rate"] / LSST_RATE,
    )


def matrix_row(kind: str, result: RunResult) -> dict[str, Any]:
    """The engine's result as a matrix row: its fields plus what the ranking and the report
    read (``transport`` is the kind; headroom, cores and bandwidth per stream at LSST's rate,
    the time a 10,000-alert visit would take)."""
    row = result.row()
    rate = result.alerts_per_second
    row.update(
        transport=kind,
        headroom=rate / LSST_RATE,
        mbit_per_stream_at_lsst_rate=result.bytes_per_alert * LSST_RATE * 8 / 1e6,
        visit_seconds_at_lsst_size=10_000 / rate if rate else float("inf"),
    )
    return row


def write_results(
    rows: list[dict[str, Any]], env: dict[str, Any] | None, out_dir: Path, n_alerts: int
) -> Path:
    """results.json (kind ``matrix``, the one results schema) and report.md from it."""
    from alertbench.harness.report import render
    from alertbench.harness.report import results as schema

    payload = {"alerts_per_combination": n_alerts, "results": rows}
    schema.write_results(out_dir / schema.RESULTS_FILE, "matrix", payload, env=env)
    return render.write_report(out_dir)


def write_report(out_dir: Path) -> Path:
    """report.md and plots from ``out_dir``'s results.json alone (report/render.py)."""
    from alertbench.harness.report.render import write_report as render_folder

    return render_folder(out_dir)
