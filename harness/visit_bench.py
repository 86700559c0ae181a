"""One visit of realistic alerts through a transport: throughput and end-to-end latency.

The first slice of the load harness: it publishes one visit (10,000 alerts by default) as a
burst, as Rubin's per-CCD workers do, while a subscriber in the same process consumes it, and
reports alerts/s, MB/s and end-to-end latency (send -> receive, one clock, microseconds, in an
HdrHistogram). Payloads are pre-encoded before the clock starts, so the figures are the
transport's, not the codec's; the codec's cost is measured by ``make bench``.

Payload pool: simulating 10,000 alerts takes ~35 s here, so a pool of distinct realistic alerts
(500 by default) is simulated once and cycled, each message with its own alert id. A pool far
larger than a producer batch (1 MB, ~8 alerts) keeps Kafka's compression from seeing repeats
within a batch, so compression ratios are not flattered.
"""

from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.transports.base import Envelope, Received, Start, get_transport
from hdrh.histogram import HdrHistogram

from alertbench.errors import AlertbenchError

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
CDF_PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9, 99.99, 100)
"""Where the latency CDF is sampled for plots (value at each percentile, microseconds)."""


def latency_cdf(histogram: Any) -> list[list[float]]:
    """``[[percentile, latency_us], ...]`` from an HdrHistogram: enough to draw its CDF."""
    if not histogram.get_total_count():
        return []
    return [[p, float(histogram.get_value_at_percentile(p))] for p in CDF_PERCENTILES]


LSST_RATE = 10_000 / 39.0
"""LSST's average alert rate: 10,000 alerts per ~39 s visit (DMTN-102)."""


@dataclass
class VisitResult:
    transport_url: str
    options: dict[str, Any]
    alerts_sent: int
    alerts_received: int
    duplicates: int
    payload_bytes: int
    publish_seconds: float
    end_to_end_seconds: float
    alerts_per_second: float
    megabytes_per_second: float
    latency_us: dict[str, float]
    cpu_seconds: float = 0.0
    """CPU time of this process (publisher, subscriber, in-process servers) during the run."""
    server_cpu_seconds: float = 0.0
    """CPU time of external server processes (the Kafka JVMs) during the run."""
    decode_errors: int = 0
    client_wire_bytes: int = 0
    """Bytes the publisher and subscriber moved on their sockets, both ways, where the transport
    counts them (VTP: events, acks and iamalives); 0 where it does not."""
    latency_cdf_us: list[list[float]] = field(default_factory=list)
    """[[percentile, microseconds], ...] for the latency CDF plot."""
    subscriber_peak_rss_mb: float | None = None
    """Peak memory of the subscriber's own process, when it ran in one."""


def payload_pool(count: int, seed: int, serializer_name: str = "avro") -> tuple[list[bytes], str]:
    """``count`` distinct realistic encoded alerts and their content type."""
    serializer = get_serializer(serializer_name)
    payloads = [serializer.dumps(alert) for alert in alert_pool(count, seed)]
    return payloads, serializer.content_type


def alert_pool(count: int, seed: int) -> list[dict]:
    """``count`` distinct realistic alerts (one simulated visit's first ``count``)."""
    sim = AlertSimulator(
        SimulationConfig(seed=seed, alerts_per_visit_mean=count, alerts_per_visit_sigma=0)
    )
    return list(sim.visit(0).alerts(count))


def with_alert_id(alert: dict, alert_id: int) -> dict:
    """A pool alert re-labelled as alert ``alert_id``, so cycled alerts stay distinct packets.

    Transports that de-duplicate by content (a VTP broker naks bytes it has seen) or carry no
    metadata besides the packet (VTP: the id comes from the IVORN) need every alert unique.
    """
    return dict(
        alert, diaSourceId=alert_id, diaSource=dict(alert["diaSource"], diaSourceId=alert_id)
    )


def take(item: Received, codec: Any, seen: set[int], counts: dict[str, int]) -> int | None:
    """Decode a received alert (when ``codec``) and note it once: its receive time (after
    decode) if it is new; None, counted as a duplicate or a decode error, otherwise."""
    if codec is not None:
        try:
            codec.loads(item.envelope.payload)
        except AlertbenchError:
            counts["decode_errors"] = counts.get("decode_errors", 0) + 1
            return None
    now = time.time_ns()
    if item.envelope.alert_id in seen:
        counts["duplicates"] = counts.get("duplicates", 0) + 1
        return None
    seen.add(item.envelope.alert_id)
    return now


def _subscribe_in_child(
    url: str,
    serializer_name: str,
    n_alerts: int,
    idle_timeout: float,
    transport_options: dict[str, Any],
    ready: Any,
    results: Any,
    shared: Any,
) -> None:
    """Child process: one subscriber; reports (alert id, receive time, envelope time) per alert.

    Alone (``shared`` None) it stops after ``n_alerts`` or ``idle_timeout`` s of silence; when
    several children split one stream, ``shared`` counts what they received together, and each
    stops once that reaches ``n_alerts`` or after ``idle_timeout`` s without an alert of its own.
    """
    import resource

    codec = get_serializer(serializer_name) if serializer_name else None
    subscriber = get_transport(url, **transport_options).open_subscriber(Start.latest())
    start = resource.getrusage(resource.RUSAGE_SELF)  # not the interpreter's start-up
    ready.set()
    received: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    counts: dict[str, int] = {}
    last = time.monotonic()
    while (len(seen) if shared is None else shared.value) < n_alerts:
        item = subscriber.poll(idle_timeout if shared is None else min(idle_timeout, 1.0))
        if item is None:
            if shared is None or time.monotonic() - last > idle_timeout:
                break
            continue
        last = time.monotonic()
        now = take(item, codec, seen, counts)
        if now is None:
            continue
        envelope = item.envelope
        received.append((envelope.alert_id, now, envelope.t_intended_ns or envelope.t_sent_ns))
        if shared is not None:
            with shared.get_lock():
                shared.value += 1
    duplicates = counts.get("duplicates", 0) + getattr(subscriber, "duplicates", 0)
    decode_errors = counts.get("decode_errors", 0)
    subscriber.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put(
        {
            "received": received,
            "duplicates": duplicates,
            "decode_errors": decode_errors,
            "cpu_seconds": usage.ru_utime + usage.ru_stime - start.ru_utime - start.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        }
    )


_SPAWN = multiprocessing.get_context("spawn")


def shared_counter() -> Any:
    """A counter that several ChildSubscribers splitting one stream update together."""
    return _SPAWN.Value("q", 0)


class ChildSubscriber:
    """The subscriber role in a process of its own; ready once its subscription is in place.

    ``wait=False`` returns at once (start several, then :meth:`wait_ready` each); ``finish``
    gives the child's report: per-alert receive times, duplicates, decode errors, CPU seconds
    since it subscribed, peak memory.
    """

    def __init__(
        self,
        url: str,
        serializer_name: str,
        n_alerts: int,
        idle_timeout: float,
        transport_options: dict[str, Any],
        *,
        shared: Any = None,
        wait: bool = True,
    ) -> None:
        self._results = _SPAWN.Queue()
        self._ready = _SPAWN.Event()
        self._process = _SPAWN.Process(
            target=_subscribe_in_child,
            args=(url, serializer_name, n_alerts, idle_timeout, transport_options, self._ready,
                  self._results, shared),
            daemon=True,
        )  # fmt: skip
        self._process.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        if not self._ready.wait(timeout):
            self._process.kill()
            raise AlertbenchError(f"the subscriber process did not subscribe within {timeout} s")

    def finish(self, timeout: float) -> dict[str, Any]:
        report = self._results.get(timeout=timeout)
        self._process.join(30)
        return report

    def close(self) -> None:
        if self._process.is_alive():
            self._process.join(5)


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (e.g. Kafka's JVMs), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_visit(
    url: str,
    payloads: list[bytes],
    content_type: str,
    n_alerts: int = 10_000,
    idle_timeout: float = 30.0,
    progress: Any = None,
    *,
    make_payload: Callable[[int], bytes] | None = None,
    decode: Callable[[bytes], Any] | None = None,
    server_pids: list[int] | None = None,
    wait_ready: Callable[[], None] | None = None,
    subscriber_process: str | None = None,
    **transport_options: Any,
) -> VisitResult:
    """Publish ``n_alerts`` to ``url`` while a subscriber thread consumes them.

    By default the payloads are pre-encoded (``payloads`` cycled), so the transport is measured
    alone; with ``make_payload``/``decode`` the codec runs in the loop (encode before send,
    receive time taken after decode), as a real producer and consumer would.

    ``subscriber_process`` (a serializer name, or ``""`` for no decoding) moves the subscriber
    into a child process of its own, as a broker's consumer would be: its receive times come
    back by alert id and latency is computed here on the same clock; its CPU seconds are added
    to the total and its peak memory is reported.
    """
    transport = get_transport(url, **transport_options)
    if hasattr(transport, "ensure_topic"):
        transport.ensure_topic(partitions=3)
    make = make_payload or (lambda i: payloads[i % len(payloads)])
    histogram = HdrHistogram(1, 120_000_000, 3)  # 1 µs .. 120 s
    received_ids: set[int] = set()
    counters = {"duplicates": 0, "decode_errors": 0, "last_received": 0}
    child = None
    if subscriber_process is not None:
        child = ChildSubscriber(url, subscriber_process, n_alerts, idle_timeout, transport_options)
        subscriber: Any = child
    else:
        subscriber = transport.open_subscriber(Start.latest())
    publisher = transport.open_publisher()
    wait = getattr(publisher, "wait_for_subscribers", None)
    if wait_ready is not None:
        wait_ready()
    elif wait is not None:
        wait(1, timeout=10)
    # Transports that carry no metadata (VTP frames hold only the VOEvent) get their intended
    # send times from here, by alert id: one clock, one process.
    intended_by_id: dict[int, int] = {}

    def consume() -> None:
        while len(received_ids) < n_alerts:
            item = subscriber.poll(idle_timeout)
            if item is None:
                return
            t_received = item.t_received_ns
            if decode is not None:
                try:
                    decode(item.envelope.payload)
                except AlertbenchError:
                    counters["decode_errors"] += 1
                    continue
                t_received = time.time_ns()
            alert_id = item.envelope.alert_id
            if alert_id in received_ids:
                counters["duplicates"] += 1
                continue
            # Latency from the *intended* send time: a producer that falls behind shows up.
            start_ns = (
                item.envelope.t_intended_ns
                or item.envelope.t_sent_ns
                or intended_by_id.get(alert_id, t_received)
            )
            histogram.record_value(max(1, (t_received - start_ns) // 1000))
            received_ids.add(alert_id)
            counters["last_received"] = t_received

    consumer = threading.Thread(
        target=consume if child is None else (lambda: None), name="visit-consumer", daemon=True
    )
    consumer.start()
    task = progress.add_task("publishing", total=n_alerts) if progress else None
    payload_bytes = 0
    cpu0 = time.process_time()
    server0 = process_cpu_seconds(server_pids or [])
    t_start = time.time_ns()
    p_start = time.perf_counter()
    for i in range(n_alerts):
        intended = time.time_ns()
        intended_by_id[i] = intended
        payload = make(i)
        publisher.publish(
            Envelope(
                payload=payload,
                content_type=content_type,
                alert_id=i,
                t_shutter_ns=t_start,
                t_intended_ns=intended,
                sequence=i,
            )
        )
        payload_bytes += len(payload)
        if task is not None and i % 50 == 0:
            progress.update(task, completed=i)
    left = publisher.flush(120)
    publish_seconds = time.perf_counter() - p_start
    if task is not None:
        progress.update(task, completed=n_alerts)
    consumer.join(timeout=idle_timeout + 300)
    cpu = time.process_time() - cpu0
    child_report: dict[str, Any] = {}
    if child is not None:
        child_report = child.finish(idle_timeout + 300)
        cpu += child_report["cpu_seconds"]
        counters["duplicates"] += child_report["duplicates"]
        counters["decode_errors"] += child_report["decode_errors"]
        for alert_id, t_received, t_envelope in child_report["received"]:
            start_ns = t_envelope or intended_by_id.get(alert_id, t_received)
            histogram.record_value(max(1, (t_received - start_ns) // 1000))
            received_ids.add(alert_id)
            counters["last_received"] = max(counters["last_received"], t_received)
    server_cpu = process_cpu_seconds(server_pids or []) - server0
    subscriber.close()
    publisher.close()
    wire = sum(
        getattr(c, "bytes_sent", 0) + getattr(c, "bytes_received", 0)
        for c in (publisher, subscriber)
    )
    e2e = ((counters["last_received"] or time.time_ns()) - t_start) / 1e9
    received = len(received_ids)
    return VisitResult(
        transport_url=url,
        options={**transport_options, "unacknowledged": left},
        alerts_sent=n_alerts,
        alerts_received=received,
        duplicates=counters["duplicates"] + getattr(subscriber, "duplicates", 0),
        payload_bytes=payload_bytes,
        publish_seconds=publish_seconds,
        end_to_end_seconds=e2e,
        alerts_per_second=received / e2e if e2e > 0 else 0.0,
        megabytes_per_second=payload_bytes * received / n_alerts / e2e / 1e6 if e2e > 0 else 0.0,
        latency_us={
            **{f"p{p:g}": float(histogram.get_value_at_percentile(p)) for p in PERCENTILES},
            "max": float(histogram.get_max_value()),
        },
        latency_cdf_us=latency_cdf(histogram),
        subscriber_peak_rss_mb=child_report.get("peak_rss_mb"),
        cpu_seconds=cpu,
        server_cpu_seconds=server_cpu,
        decode_errors=counters["decode_errors"],
        client_wire_bytes=wire,
    )


def environment() -> dict[str, Any]:
    """Machine and versions, recorded beside every figure."""
    import confluent_kafka
    from alertbench.transports.servers.kafka_cluster import KAFKA_VERSION

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "confluent_kafka": importlib.metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka": KAFKA_VERSION,
        "git_commit": commit,
        "command": " ".join(sys.argv),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_report(results: list[VisitResult], env: dict[str, Any], out_dir: Path) -> Path:
    """results.json (raw) and report.md (ranked table generated from it) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "results": [asdict(r) for r in results]}
    (out_dir / "results.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    report = render_report(data)
    path = out_dir / "report.md"
    path.write_text(report)
    return path


def render_report(data: dict[str, Any]) -> str:
    """The Markdown report, from the JSON alone (same JSON, same bytes)."""
    env = data["environment"]
    rows = sorted(data["results"], key=lambda r: -r["alerts_per_second"])
    lines = [
        "# One LSST visit through Kafka, by compression codec",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; "
        f"Python {env['python']}, "
        f"confluent-kafka {env['confluent_kafka']} (librdkafka {env['librdkafka']}), "
        f"Apache Kafka {env['kafka']} (1 broker, KRaft); commit {env['git_commit'][:12]}; "
        f"{env['when_utc']}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "Ranked by alerts/s. LSST's average rate is 10,000 alerts per 39 s visit (256 alerts/s); "
        "a visit must be out within 60 s of shutter close. Latency is send -> receive on one "
        "clock, in milliseconds.",
        "",
        "| rank | compression | alerts | received | alerts/s | x LSST rate | MB/s | "
        "visit out in (s) | p50 ms | p99 ms | max ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rank, r in enumerate(rows, 1):
        lat = r["latency_us"]
        lines.append(
            f"| {rank} | {r['options'].get('compression', '?')} | {r['alerts_sent']:,} | "
            f"{r['alerts_received']:,} | {r['alerts_per_second']:,.0f} | "
            f"{r['alerts_per_second'] / (10_000 / 39):.1f} | {r['megabytes_per_second']:,.1f} | "
            f"{r['end_to_end_seconds']:.1f} | {lat['p50'] / 1000:,.1f} | "
            f"{lat['p99'] / 1000:,.1f} | {lat['max'] / 1000:,.1f} |"
        )
    best = rows[0]
    lines += [
        "",
        f"Fastest: {best['options'].get('compression')} at {best['alerts_per_second']:,.0f} "
        f"alerts/s, {best['alerts_per_second'] / (10_000 / 39):.1f}x LSST's average rate, "
        f"the visit out in {best['end_to_end_seconds']:.1f} s "
        f"({'within' if best['end_to_end_seconds'] <= 60 else 'over'} the 60 s budget). "
        "One producer and one consumer share two cores with the broker here, so these are a "
        "floor for a real deployment, not a ceiling.",
        "",
    ]
    return "\n".join(lines)
