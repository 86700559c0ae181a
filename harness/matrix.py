"""The benchmark matrix: every transport x serialization on the same alerts, ranked against LSST.

Each combination publishes one burst of realistic alerts with the codec in the loop (the
publisher encodes each alert, the subscriber decodes it and only then stamps it received), so
the numbers are what a producer and a broker would see end to end. Servers are started here:
a local Kafka (KRaft, 1 broker) from the project's launcher, a gRPC alert-stream server in this
process; ZeroMQ and TCP need none.

Ranking: a combination must lose nothing and deliver the visit within Rubin's 60 s budget; then
it is ordered by headroom over LSST's average rate (10,000 per 39 s): the maximum sustainable
rate when the run searched it (``--max-rate SECONDS``, see :mod:`harness.max_rate`), else the
burst's alerts/s (which overstates what a stream can hold, and says so in the report). Also
reported: cores needed per full stream at LSST's rate (CPU seconds per alert x rate, this
process plus the Kafka broker), bandwidth per full stream, and whether brokers can replay.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alertbench.harness.visit_bench import LSST_RATE, alert_pool, run_visit, with_alert_id
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.transports.base import get_transport
from alertbench.transports.grpc import AlertStreamServer
from alertbench.transports.servers.kafka_cluster import KafkaCluster, free_port
from alertbench.transports.vtp import VtpBroker

TRANSPORT_KINDS = ("kafka", "grpc", "zmq-pubsub", "zmq-pushpull", "tcp", "vtp")
SERIALIZER_NAMES = ("avro", "protobuf", "voevent", "voevent3")
VISIT_BUDGET_S = 60.0


def valid_combination(kind: str, content_type: str) -> bool:
    """VTP carries VOEvent XML only; every other transport carries any serialization."""
    return kind != "vtp" or content_type == "application/x-voevent+xml"


@contextmanager
def transport_url(kind: str, cluster: KafkaCluster | None) -> Iterator[tuple[str, list[int]]]:
    """A fresh URL for ``kind`` (and the pids of external servers whose CPU counts)."""
    if kind == "kafka":
        assert cluster is not None
        yield (
            f"kafka://{cluster.bootstrap_servers}/matrix-{uuid.uuid4().hex[:8]}",
            [n.pid for n in cluster.nodes],
        )
    elif kind == "grpc":
        with AlertStreamServer(window=200_000) as server:
            yield server.url, []
    elif kind.startswith("zmq"):
        yield f"zmq+tcp://127.0.0.1:{free_port()}?pattern={kind.split('-')[1]}", []
    elif kind == "tcp":
        yield f"tcp://127.0.0.1:{free_port()}", []
    elif kind == "vtp":
        with VtpBroker() as broker:
            yield broker.url, []
    else:
        raise ValueError(f"unknown transport kind {kind!r}; choose from {TRANSPORT_KINDS}")


def run_matrix(
    transports: list[str],
    serializers: list[str],
    n_alerts: int,
    pool_size: int = 200,
    seed: int = 1,
    progress: Any = None,
    bootstrap_servers: str | None = None,
    max_rate_seconds: float | None = None,
    subscriber_processes: bool = False,
) -> list[dict[str, Any]]:
    """Every combination: one burst, then (with ``max_rate_seconds``) its maximum sustainable
    rate searched with steps of that many seconds, which then becomes the ranking's headroom."""
    pool = alert_pool(pool_size, seed)
    cluster = None
    rows: list[dict[str, Any]] = []
    try:
        if "kafka" in transports and bootstrap_servers is None:
            cluster = KafkaCluster(brokers=1).start()
        if "kafka" in transports:
            # Warm the broker (group coordinator, producer ids, JIT) off the record, so the
            # first combination measured does not pay for a cold start.
            url = (
                f"kafka://{bootstrap_servers or cluster.bootstrap_servers}"  # type: ignore
                f"/warmup-{uuid.uuid4().hex[:8]}"
            )
            warm = [get_serializer("avro").dumps(a) for a in pool[:50]]
            run_visit(url, warm, "application/octet-stream", n_alerts=300)
        for serializer_name in serializers:
            codec = get_serializer(serializer_name)
            encoded = [codec.dumps(a) for a in pool]
            for kind in transports:
                if not valid_combination(kind, codec.content_type):
                    continue
                if kind == "kafka" and bootstrap_servers is not None:
                    ctx = _existing(bootstrap_servers)
                else:
                    ctx = transport_url(kind, cluster)
                with ctx as (url, pids):
                    if progress is not None:
                        progress.console.print(f"[bold]{kind} x {serializer_name}[/bold]")
                    result = run_visit(
                        url,
                        encoded,
                        codec.content_type,
                        n_alerts=n_alerts,
                        progress=progress,
                        idle_timeout=15.0,
                        make_payload=lambda i, c=codec: c.dumps(
                            with_alert_id(pool[i % len(pool)], i)
                        ),
                        decode=codec.loads,
                        server_pids=pids,
                        subscriber_process=serializer_name if subscriber_processes else None,
                    )
                caps = get_transport(url).capabilities
                row = _row(kind, serializer_name, result, caps, encoded)
                if max_rate_seconds:
                    bootstrap = bootstrap_servers or (
                        cluster.bootstrap_servers if cluster else None
                    )
                    _add_max_rate(
                        row, kind, bootstrap, cluster, max_rate_seconds, progress,
                        subscriber_processes,
                    )  # fmt: skip
                rows.append(row)
    finally:
        if cluster is not None:
            cluster.stop()
    return rows


def _add_max_rate(
    row: dict[str, Any],
    kind: str,
    bootstrap: str | None,
    cluster: KafkaCluster | None,
    seconds: float,
    progress: Any,
    subscriber_process: bool = False,
) -> None:
    from alertbench.harness.max_rate import find_max_rate

    with ExitStack() as steps:

        def url_for_step() -> str:
            if kind == "kafka" and cluster is None:
                return f"kafka://{bootstrap}/maxrate-{uuid.uuid4().hex[:8]}"
            url, _ = steps.enter_context(transport_url(kind, cluster))
            return url

        found = find_max_rate(
            url_for_step, row["serializer"], start=64.0, seconds=seconds, max_steps=7,
            progress=progress, subscriber_process=subscriber_process,
        )  # fmt: skip
    row.update(
        max_sustainable_rate=found["max_sustainable_rate"],
        max_rate_steps=found["steps"],
        max_rate_seconds_per_step=seconds,
        burst_headroom=row["headroom"],
        headroom=found["max_sustainable_rate"] / LSST_RATE,
    )


@contextmanager
def _existing(bootstrap: str) -> Iterator[tuple[str, list[int]]]:
    yield f"kafka://{bootstrap}/matrix-{uuid.uuid4().hex[:8]}", []


def _row(kind: str, serializer: str, result: Any, caps: Any, encoded: list[bytes]) -> dict:
    data = asdict(result)
    bytes_per_alert = result.payload_bytes / max(result.alerts_sent, 1)
    cpu_per_alert = (result.cpu_seconds + result.server_cpu_seconds) / max(
        result.alerts_received, 1
    )
    data.update(
        transport=kind,
        serializer=serializer,
        capabilities=asdict(caps),
        bytes_per_alert=bytes_per_alert,
        lost=result.alerts_sent - result.alerts_received,
        headroom=result.alerts_per_second / LSST_RATE,
        cpu_seconds_per_alert=cpu_per_alert,
        cores_per_stream_at_lsst_rate=cpu_per_alert * LSST_RATE,
        mbit_per_stream_at_lsst_rate=bytes_per_alert * LSST_RATE * 8 / 1e6,
        visit_seconds_at_lsst_size=10_000 / result.alerts_per_second
        if result.alerts_per_second
        else float("inf"),
    )
    return data


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ordered: requirements met first (nothing lost, visit in budget), then by headroom."""
    for row in rows:
        reasons = []
        if row["lost"] > 0:
            reasons.append(f"lost {row['lost']:,} alerts")
        if row["decode_errors"]:
            reasons.append(f"{row['decode_errors']} undecodable")
        if row["visit_seconds_at_lsst_size"] > VISIT_BUDGET_S:
            reasons.append(
                f"a 10,000-alert visit takes {row['visit_seconds_at_lsst_size']:.0f} s "
                f"(> {VISIT_BUDGET_S:.0f} s)"
            )
        row["meets_requirements"] = not reasons
        row["fails_because"] = reasons
    return sorted(rows, key=lambda r: (not r["meets_requirements"], -r["headroom"]))


def explain(ranked: list[dict[str, Any]]) -> list[str]:
    """Sentences generated from the numbers, for the report."""
    lines = []
    passing = [r for r in ranked if r["meets_requirements"]]
    if passing:
        best = passing[0]
        if "max_sustainable_rate" in best:
            speed = (
                f"sustains {best['max_sustainable_rate']:,.0f} alerts/s "
                f"(bursts at {best['alerts_per_second']:,.0f}/s)"
            )
        else:
            speed = f"{best['alerts_per_second']:,.0f} alerts/s"
        lines.append(
            f"Fastest combination that meets the requirements: {best['transport']} x "
            f"{best['serializer']}, {speed}, "
            f"{best['headroom']:.1f}x LSST's average rate; a 10,000-alert visit would take "
            f"{best['visit_seconds_at_lsst_size']:.1f} s of the 60 s budget."
        )
    by_serializer: dict[str, list[dict]] = {}
    for r in ranked:
        by_serializer.setdefault(r["serializer"], []).append(r)
    for name, group in by_serializer.items():
        best = max(group, key=lambda r: r["headroom"])
        if "max_sustainable_rate" in best:
            speed = f"sustains {best['max_sustainable_rate']:,.0f} alerts/s"
        else:
            speed = f"{best['alerts_per_second']:,.0f} alerts/s"
        lines.append(
            f"{name}: {group[0]['bytes_per_alert'] / 1e3:,.0f} KB per alert, best "
            f"{speed} ({best['transport']}); "
            f"{best['cores_per_stream_at_lsst_rate']:.2f} cores per full stream at LSST's rate."
        )
    replayable = sorted({r["transport"] for r in ranked if r["capabilities"]["replay"]})
    lines.append(
        "Transports that let a broker replay what it missed: " + ", ".join(replayable) + "."
    )
    for r in ranked:
        if not r["meets_requirements"]:
            lines.append(
                f"{r['transport']} x {r['serializer']} fails: "
                + "; ".join(r["fails_because"])
                + "."
            )
    return lines


def write_results(
    rows: list[dict[str, Any]], env: dict[str, Any], out_dir: Path, n_alerts: int
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "alerts_per_combination": n_alerts, "results": rows}
    (out_dir / "results.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return write_report(out_dir)


def write_report(out_dir: Path) -> Path:
    """report.md and plots from results.json alone (the same JSON gives the same report)."""
    data = json.loads((out_dir / "results.json").read_text())
    ranked = rank(data["results"])
    plot = out_dir / "throughput-latency.png"
    _plot(ranked, plot)
    _plot_sizes(ranked, out_dir / SIZES_PNG)
    if any(r.get("latency_cdf_us") for r in ranked):
        _plot_cdf(ranked, out_dir / CDF_PNG)
    (out_dir / "report.md").write_text(render_report(data, ranked, plot.name))
    return out_dir / "report.md"


def render_report(data: dict[str, Any], ranked: list[dict[str, Any]], plot_name: str) -> str:
    env = data["environment"]
    sustained = any("max_sustainable_rate" in r for r in ranked)
    separate = all(r.get("subscriber_peak_rss_mb") for r in ranked)
    basis = (
        "headroom = maximum sustainable rate (searched as OpenMessaging does: constant offered "
        "rates, nothing lost, <=1% of alerts sent >50 ms late, p99 <= 1 s) over LSST's average "
        if sustained
        else "headroom over LSST's average "
    )
    lines = [
        "# alertbench matrix: transports x serializations, ranked against LSST",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; Python "
        f"{env['python']}; confluent-kafka {env['confluent_kafka']} (librdkafka "
        f"{env['librdkafka']}), Apache Kafka {env['kafka']} (1 broker, KRaft); commit "
        f"{env['git_commit'][:12]}; {env['when_utc']}.",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Each combination: one burst of {data['alerts_per_combination']:,} realistic Rubin "
        "alerts (a pool of simulated alerts cycled with unique ids), encoded by the publisher "
        + (
            "and decoded by one subscriber in a process of its own (2 cores shared by "
            "publisher, subscriber and servers). "
            if separate
            else "and decoded by one subscriber in the same process (2 cores shared with the "
            "servers). "
        )
        + "Latency runs from the intended send time to after decode. Requirements: nothing lost, "
        "a 10,000-alert visit out within 60 s; then ranked by "
        f"{basis}rate ({LSST_RATE:.0f} alerts/s). Cores and bandwidth are per full stream at "
        "that rate.",
        "",
        "| rank | transport | serializer | meets | alerts/s | "
        + ("max sustainable/s | " if sustained else "")
        + "headroom | MB/s | KB/alert | p50 ms | p99 ms | lost | cores/stream | Mbit/s/stream | "
        "replay |",
        "| ---: | --- | --- | --- | ---: | "
        + ("---: | " if sustained else "")
        + "---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(ranked, 1):
        lat = r["latency_us"]
        lines.append(
            f"| {i} | {r['transport']} | {r['serializer']} | "
            f"{'yes' if r['meets_requirements'] else 'no'} | {r['alerts_per_second']:,.0f} | "
            + (f"{r.get('max_sustainable_rate', 0):,.0f} | " if sustained else "")
            + f"{r['headroom']:.1f}x | {r['megabytes_per_second']:,.1f} | "
            f"{r['bytes_per_alert'] / 1e3:,.0f} | {lat['p50'] / 1e3:,.0f} | "
            f"{lat['p99'] / 1e3:,.0f} | {r['lost']:,} | {r['cores_per_stream_at_lsst_rate']:.2f} | "
            f"{r['mbit_per_stream_at_lsst_rate']:,.0f} | "
            f"{'yes' if r['capabilities']['replay'] else 'no'} |"
        )
    lines += ["", "## What the numbers say", ""]
    lines += [f"- {s}" for s in explain(ranked)]
    lines += ["", f"![throughput and latency]({plot_name})", ""]
    if any(r.get("latency_cdf_us") for r in ranked):
        lines += [f"![latency CDF per combination]({CDF_PNG})", ""]
    lines += [f"![bytes per alert and bandwidth per stream]({SIZES_PNG})", ""]
    return "\n".join(lines)


CDF_PNG = "latency-cdf.png"
SIZES_PNG = "sizes.png"


def _plot_cdf(ranked: list[dict[str, Any]], path: Path) -> None:
    """End-to-end latency CDF of every combination (the tail is where they differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = {"avro": "-", "protobuf": "--", "voevent": ":", "voevent3": "-."}
    for r in ranked:
        points = r.get("latency_cdf_us") or []
        if not points:
            continue
        ax.plot(
            [v / 1e3 for _, v in points],
            [p for p, _ in points],
            styles.get(r["serializer"], "-"),
            label=f"{r['transport']} x {r['serializer']}",
            linewidth=1.2,
        )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (intended send time to after decode)")
    ax.set_ylabel("percentile of alerts")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.set_title("Latency CDF per transport x serialization")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _plot_sizes(ranked: list[dict[str, Any]], path: Path) -> None:
    """Bytes per alert and bandwidth per full stream at LSST's rate, per serialization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_serializer: dict[str, dict[str, Any]] = {}
    for r in ranked:
        by_serializer.setdefault(r["serializer"], r)
    names = sorted(by_serializer)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax1.bar(names, [by_serializer[n]["bytes_per_alert"] / 1e3 for n in names], color="tab:blue")
    ax1.set_ylabel("KB per alert")
    ax1.set_title("Alert size")
    ax2.bar(
        names,
        [by_serializer[n]["mbit_per_stream_at_lsst_rate"] for n in names],
        color="tab:orange",
    )
    ax2.set_ylabel("Mbit/s per full stream")
    ax2.set_title(f"Bandwidth at LSST's rate ({LSST_RATE:.0f} alerts/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _plot(ranked: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['transport']}\n{r['serializer']}" for r in ranked]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(ranked) * 0.6), 8))
    colors = ["tab:green" if r["meets_requirements"] else "tab:red" for r in ranked]
    ax1.bar(range(len(ranked)), [r["alerts_per_second"] for r in ranked], color=colors)
    ax1.axhline(LSST_RATE, color="k", linestyle="--", label=f"LSST average ({LSST_RATE:.0f}/s)")
    ax1.set_ylabel("alerts/s (burst)")
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(ranked)), labels, fontsize=7)
    ax1.legend()
    ax1.set_title("Throughput (green: meets requirements)")
    ax2.bar(
        [i - 0.2 for i in range(len(ranked))],
        [r["latency_us"]["p50"] / 1e3 for r in ranked],
        width=0.4,
        label="p50",
    )
    ax2.bar(
        [i + 0.2 for i in range(len(ranked))],
        [r["latency_us"]["p99"] / 1e3 for r in ranked],
        width=0.4,
        label="p99",
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("end-to-end latency, ms")
    ax2.set_xticks(range(len(ranked)), labels, fontsize=7)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
