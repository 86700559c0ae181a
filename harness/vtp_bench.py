"""VTP's cost, measured: the same VOEvent packets through tcp, Kafka, our VTP broker and Comet.

Runs inside a loopback-only network namespace (``alertbench vtp-bench`` re-executes itself under
``unshare -n``) because Comet binds every interface. Everything moves the *same* packets (VOEvent
2.0 XML, cutouts by reference, one distinct packet per alert since VTP brokers refuse bytes they
have seen) with one author/publisher and one subscriber in this process. Comet runs with its
frame limit raised to 16 MiB (a stock Twisted peer drops frames of 100,000 bytes or more, and
most Rubin alerts are bigger than that as VOEvent even without cutouts).

Reported per transport: alerts/s, latency from intended send to receipt (p50/p99/max), and bytes
on the wire per alert, counting VTP's per-event connections' acks and any iamalives.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alertbench.harness.visit_bench import alert_pool, run_visit
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.transports.framing import ENVELOPE_HEADER, LENGTH
from alertbench.transports.servers.comet import broker_args, twistd_command
from alertbench.transports.servers.kafka_cluster import KafkaCluster, free_port
from alertbench.transports.vtp import VtpBroker


def packets(n: int, seed: int = 1, pool_size: int = 100) -> list[bytes]:
    """``n`` distinct VOEvent packets (cutouts by reference) cycled from ``pool_size`` alerts."""
    pool = alert_pool(pool_size, seed)
    codec = VoeventSerializer(mode="reference", validate=False)
    out = []
    for i in range(n):
        base = pool[i % len(pool)]
        alert = dict(base, diaSourceId=i, diaSource=dict(base["diaSource"], diaSourceId=i))
        out.append(codec.dumps(alert))
    return out


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _row(name: str, result: Any, wire_bytes: float | None) -> dict[str, Any]:
    data = asdict(result)
    data["name"] = name
    data["wire_bytes_per_alert"] = wire_bytes
    return data


def run(n: int, comet_venv: Path | None, with_kafka: bool = True) -> list[dict[str, Any]]:
    data = packets(n)
    make = data.__getitem__
    ctype = "application/x-voevent+xml"
    rows = []
    payload_bytes = sum(len(p) for p in data) / n

    tcp = run_visit(f"tcp://127.0.0.1:{free_port()}", data, ctype, n_alerts=n, make_payload=make)
    tcp_header = LENGTH.size + ENVELOPE_HEADER.size + len(ctype)
    rows.append(_row("tcp (baseline)", tcp, payload_bytes + tcp_header))

    if with_kafka:
        with KafkaCluster(brokers=1) as cluster:
            url = f"kafka://{cluster.bootstrap_servers}/vtp-bench"
            run_visit(url, data[:200], ctype, n_alerts=200)  # warm-up, off the record
            kafka = run_visit(
                url + "-run",
                data,
                ctype,
                n_alerts=n,
                make_payload=make,
                server_pids=[x.pid for x in cluster.nodes],
                compression="none",
            )
        rows.append(_row("kafka (1 broker, no compression)", kafka, None))

    with VtpBroker() as broker:
        stats: dict[str, Any] = {}
        ours = _vtp_run(broker.url, data, n, lambda: broker.wait_for_subscribers(1), stats)
    rows.append(_row("vtp: alertbench broker", ours, stats["wire"]))

    if comet_venv is not None:
        receive, broadcast = free_port(), free_port()
        with tempfile.TemporaryDirectory() as work:
            args = broker_args(receive, broadcast, Path(work), "ivo://example.test/comet")
            proc = subprocess.Popen(
                twistd_command(comet_venv, [*args, "-q"], raised=True),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=work,
            )
            try:
                wait_port(receive)
                wait_port(broadcast)
                stats = {}
                url = f"vtp://127.0.0.1:{broadcast}?receive={receive}"
                comet = _vtp_run(
                    url, data, n, lambda: time.sleep(1.5), stats, server_pids=[proc.pid]
                )
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        rows.append(_row("vtp: Comet 3.1.0 broker", comet, stats["wire"]))
    return rows


def _vtp_run(
    url: str, data: list[bytes], n: int, ready, stats: dict, server_pids: list[int] | None = None
):
    result = run_visit(
        url,
        data,
        "application/x-voevent+xml",
        n_alerts=n,
        make_payload=data.__getitem__,
        wait_ready=ready,
        server_pids=server_pids,
    )
    stats["wire"] = result.client_wire_bytes / n
    return result


def write_report(rows: list[dict[str, Any]], env: dict[str, Any], out_dir: Path, n: int) -> Path:
    """results.json and report.md (generated from it) in ``out_dir``."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "alerts": n, "results": rows}
    (out_dir / "results.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    path = out_dir / "report.md"
    path.write_text(render_report(data))
    return path


def render_report(data: dict[str, Any]) -> str:
    env, rows = data["environment"], data["results"]
    base = next(r for r in rows if r["name"].startswith("tcp"))
    lines = [
        "# VTP's cost: the same VOEvent packets through tcp, Kafka, our VTP broker and Comet",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; Python "
        f"{env['python']}; commit {env['git_commit'][:12]}; {env['when_utc']}. "
        f"Command: `{env['command']}`.",
        "",
        f"{data['alerts']:,} distinct VOEvent 2.0 packets (cutouts by reference, mean "
        f"{base['payload_bytes'] / data['alerts'] / 1e3:,.1f} KB), one author/publisher and one "
        "subscriber in one process, inside a loopback-only network namespace. VTP counts both "
        "hops (author to broker, broker to subscriber) with every ack and iamalive; tcp counts "
        "its one hop's frames; Kafka's wire bytes are not measured. Comet runs with its frame "
        "limit raised to 16 MiB.",
        "",
        "| transport | received | alerts/s | x tcp | wire bytes/alert | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lat = r["latency_us"]
        wire = f"{r['wire_bytes_per_alert']:,.0f}" if r["wire_bytes_per_alert"] else "n/a"
        lines.append(
            f"| {r['name']} | {r['alerts_received']:,} | {r['alerts_per_second']:,.0f} | "
            f"{r['alerts_per_second'] / base['alerts_per_second']:.3f} | {wire} | "
            f"{lat['p50'] / 1e3:,.1f} | {lat['p99'] / 1e3:,.1f} | {lat['max'] / 1e3:,.1f} |"
        )
    lines.append("")
    for r in rows:
        if r["name"].startswith("vtp") and r["alerts_per_second"]:
            hours = 1e7 / r["alerts_per_second"] / 3600
            lines.append(
                f"- {r['name']}: {r['alerts_per_second']:,.0f} alerts/s; a night of 10^7 alerts "
                f"would take {hours:,.1f} h on one connection (a night is ~10 h)."
            )
    lines.append("")
    return "\n".join(lines)
