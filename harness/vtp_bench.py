"""VTP's cost, measured: the same VOEvent packets through tcp, Kafka, our VTP broker and Comet.

Runs inside a loopback-only network namespace (``alertbench vtp-bench`` re-executes itself under
``unshare -n``) because Comet binds every interface. Everything moves the *same* packets (VOEvent
2.0 XML, cutouts by reference, one distinct packet per alert since VTP brokers refuse bytes they
have seen) with one author/publisher and one subscriber in this process, each transport one
run of the engine (:mod:`.engine`) with the same pre-encoded packets. Comet runs with its
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
from pathlib import Path
from typing import Any

from alertbench.harness import engine
from alertbench.harness.engine import RunResult, RunSpec, Schedule
from alertbench.harness.pool import alert_pool, with_alert_id
from alertbench.refimpl.codecs.voevent import VoeventSerializer
from alertbench.transports.framing import ENVELOPE_HEADER, LENGTH
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.comet import broker_args, twistd_command
from alertbench.transports.servers.kafka_cluster import free_port

CODEC_OPTIONS = {"mode": "reference", "validate": False}
"""VOEvent 2.0 with cutouts by reference (URLs, not embedded FITS), as a VTP stream sends them."""


def packets(n: int, seed: int = 1, pool_size: int = 100) -> list[bytes]:
    """``n`` distinct VOEvent packets (cutouts by reference) cycled from ``pool_size`` alerts."""
    pool = alert_pool(pool_size, seed)
    codec = VoeventSerializer(**CODEC_OPTIONS)  # type: ignore[arg-type]
    return [codec.dumps(with_alert_id(pool[i % len(pool)], i)) for i in range(n)]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _row(name: str, result: RunResult, wire_bytes: float | None) -> dict[str, Any]:
    data = result.row()
    data["name"] = name
    data["wire_bytes_per_alert"] = wire_bytes
    return data


def run(n: int, comet_venv: Path | None, with_kafka: bool = True) -> list[dict[str, Any]]:
    """One row per transport, each one engine run of the same ``n`` packets (a burst)."""
    data = packets(n)
    ctype = VoeventSerializer.content_type

    def spec(transport: str, count: int = n, **kw: Any) -> RunSpec:
        # The subscriber is a thread of this process, as the published report describes
        # ("one author/publisher and one subscriber in one process"); the packets are sent
        # as they are, never decoded, so the figures are the transports'.
        return RunSpec(
            transport, "voevent", Schedule.burst(count), payload="pre-encoded",
            serializer_options=CODEC_OPTIONS, payloads=data, subscriber_role="thread", **kw,
        )  # fmt: skip

    rows = []
    tcp = engine.run(spec("tcp"))
    tcp_header = LENGTH.size + ENVELOPE_HEADER.size + len(ctype)
    rows.append(_row("tcp (baseline)", tcp, tcp.bytes_per_alert + tcp_header))

    if with_kafka:
        with KafkaTransport.shared_resources() as cluster:
            # warm-up, off the record, then the run; Kafka's JVM CPU counts in it
            engine.run(spec("kafka", min(n, 200)), shared=cluster)
            plain = spec("kafka", transport_options={"compression": "none"})
            kafka = engine.run(plain, shared=cluster)
        rows.append(_row("kafka (1 broker, no compression)", kafka, None))

    ours = engine.run(spec("vtp"))  # our VtpBroker, which counts its subscribers
    rows.append(_row("vtp: alertbench broker", ours, ours.client_wire_bytes / n))

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
                # Comet cannot be asked how many subscribers it has: give it time to register
                comet = engine.run(
                    spec(
                        f"vtp://127.0.0.1:{broadcast}?receive={receive}",
                        server_pids=(proc.pid,),
                        wait_for_subscribers=lambda _n: time.sleep(1.5),
                    )
                )
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        rows.append(_row("vtp: Comet 3.1.0 broker", comet, comet.client_wire_bytes / n))
    return rows


def write_report(rows: list[dict[str, Any]], env: dict[str, Any], out_dir: Path, n: int) -> Path:
    """results.json (kind ``vtp``, the one results schema) and report.md from it."""
    from alertbench.harness.report import render
    from alertbench.harness.report import results as schema

    payload = {"alerts": n, "results": rows}
    schema.write_results(out_dir / schema.RESULTS_FILE, "vtp", payload, env=env)
    return render.write_report(out_dir)


def render_report(data: dict[str, Any]) -> str:
    """The Markdown report, from the JSON alone: report/render.py."""
    from alertbench.harness.report.render import render

    return render(data)
