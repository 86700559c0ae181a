"""Declarative workloads and the paced runner: LSST's schedule, not a burst as fast as possible.

A workload file (``harness/workloads/*.yaml``) says how many visits, how many alerts each, the
cadence, the window in which the 189 per-CCD bursts of a visit fall, the time compression and the
number of subscribers (full streams out). The runner gives every alert an *intended* send time
from that schedule and sends it then (or as soon as it can, if it is behind); latency runs from
the intended time to after decode at each subscriber, so a producer that falls behind shows up as
latency instead of hiding it (coordinated omission).

Roles run as separate processes by default, as they would in production: each subscriber is a
child process (its own interpreter, so decoding does not compete with the publisher for one
GIL) that reports its HdrHistogram, CPU seconds and peak memory; the publisher is this process;
servers are the transport's own processes (the Kafka JVM) or, for gRPC, threads of this one.
``roles="threads"`` keeps everything in this process, as the matrix's bursts do.
"""

from __future__ import annotations

import resource
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from alertbench.harness.visit_bench import (
    LSST_RATE,
    PERCENTILES,
    ChildSubscriber,
    alert_pool,
    shared_counter,
    with_alert_id,
)
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.transports.base import Envelope, get_transport
from hdrh.histogram import HdrHistogram

from alertbench.errors import AlertbenchError

WORKLOADS_DIR = Path(__file__).with_name("workloads")


@dataclass(frozen=True)
class Workload:
    name: str
    visits: int
    alerts_per_visit: float
    cadence_s: float = 39.0
    burst_window_s: float = 3.0
    ccds: int = 189
    time_compression: float = 1.0
    subscribers: int = 1
    alerts_per_visit_sigma: float = 0.0
    alert_pool: int = 200
    seed: int = 1
    cutout_fraction: float = 1.0
    """The alert-size mix: the share of alerts that carry their three FITS cutouts (~80% of an
    alert's bytes); the rest go without, as a stamp-less stream would send them."""
    description: str = ""

    def pool(self) -> list[dict]:
        """The distinct alerts the run cycles through, with the workload's size mix."""
        alerts = alert_pool(self.alert_pool, self.seed)
        if self.cutout_fraction >= 1.0:
            return alerts
        keep = np.random.default_rng(self.seed + 1).random(len(alerts)) < self.cutout_fraction
        bare = dict.fromkeys(("cutoutDifference", "cutoutScience", "cutoutTemplate"))
        return [a if k else dict(a, **bare) for a, k in zip(alerts, keep, strict=True)]

    @classmethod
    def load(cls, path: str | Path) -> Workload:
        """A workload from a YAML file (or the name of one in harness/workloads/)."""
        candidate = Path(path)
        if not candidate.exists():
            candidate = WORKLOADS_DIR / f"{path}.yaml"
        if not candidate.exists():
            known = ", ".join(sorted(p.stem for p in WORKLOADS_DIR.glob("*.yaml")))
            raise AlertbenchError(f"no workload {str(path)!r} (known: {known})")
        data = yaml.safe_load(candidate.read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise AlertbenchError(f"{candidate}: unknown workload fields {sorted(unknown)}")
        return cls(**data)

    def schedule(self) -> list[tuple[int, float]]:
        """(visit index, intended send offset in seconds) of every alert, in send order."""
        sim = AlertSimulator(
            SimulationConfig(
                seed=self.seed,
                alerts_per_visit_mean=self.alerts_per_visit,
                alerts_per_visit_sigma=self.alerts_per_visit_sigma,
                ccds=self.ccds,
            )
        )
        rng = np.random.default_rng(self.seed)
        out: list[tuple[int, float]] = []
        for v in range(self.visits):
            visit = sim.visit(v)
            start = v * self.cadence_s / self.time_compression
            window = self.burst_window_s / self.time_compression
            # each CCD's worker finishes at its own moment in the window and emits its burst
            finish = np.sort(rng.uniform(0.0, window, len(visit.ccd_counts)))
            for ccd_time, count in zip(finish, visit.ccd_counts, strict=True):
                out.extend((v, start + float(ccd_time)) for _ in range(count))
        return out


@dataclass
class _Start:
    value: int


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _pid_peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_workload(
    workload: Workload,
    url: str,
    serializer_name: str,
    progress: Any = None,
    server_pids: list[int] | None = None,
    idle_timeout: float = 30.0,
    roles: str = "processes",
) -> dict[str, Any]:
    """Run ``workload`` against ``url``; one result row (the matrix report's format)."""
    if roles not in ("processes", "threads"):
        raise ValueError(f"roles must be 'processes' or 'threads', not {roles!r}")
    codec = get_serializer(serializer_name)
    pool = workload.pool()
    schedule = workload.schedule()
    n = len(schedule)
    transport = get_transport(url)
    if hasattr(transport, "ensure_topic"):
        transport.ensure_topic(partitions=3)
    fanout = transport.capabilities.fanout
    if roles == "processes":
        return _run_with_processes(
            workload, url, serializer_name, codec, pool, schedule, transport, fanout, progress,
            server_pids or [], idle_timeout,
        )  # fmt: skip
    subscribers = [transport.open_subscriber() for _ in range(workload.subscribers)]
    publisher = transport.open_publisher()
    wait = getattr(publisher, "wait_for_subscribers", None)
    if wait is not None:
        wait(len(subscribers), timeout=15)
    histogram = HdrHistogram(1, 600_000_000, 3)
    lock = threading.Lock()
    per_sub: list[dict[str, Any]] = [
        {"ids": set(), "dups": 0, "errors": 0, "last": 0} for _ in subscribers
    ]
    expected_each = n if fanout else None

    def consume(k: int) -> None:
        sub, state = subscribers[k], per_sub[k]
        while True:
            if expected_each is not None and len(state["ids"]) >= expected_each:
                return
            if expected_each is None and sum(len(s["ids"]) for s in per_sub) >= n:
                return
            item = sub.poll(idle_timeout)
            if item is None:
                return
            try:
                codec.loads(item.envelope.payload)
            except AlertbenchError:
                state["errors"] += 1
                continue
            now = time.time_ns()
            alert_id = item.envelope.alert_id
            if alert_id in state["ids"]:
                state["dups"] += 1
                continue
            state["ids"].add(alert_id)
            state["last"] = now
            intended = item.envelope.t_intended_ns
            if not intended and 0 <= alert_id < n:
                intended = start.value + int(schedule[alert_id][1] * 1e9)
            with lock:
                histogram.record_value(max(1, (now - (intended or now)) // 1000))

    # When the schedule starts (shared with the consumers, for transports that carry only the
    # packet, such as VTP: the alert id then says which slot of the schedule it had).
    start = _Start(time.time_ns() + 200_000_000)
    threads = [
        threading.Thread(target=consume, args=(k,), daemon=True) for k in range(len(subscribers))
    ]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    from alertbench.harness.visit_bench import process_cpu_seconds

    server0 = process_cpu_seconds(server_pids or [])
    t0, behind, payload_bytes = _publish_schedule(
        publisher, codec, pool, schedule, progress, workload.name, start
    )
    publisher.flush(120)
    for t in threads:
        t.join(timeout=idle_timeout + 600)
    cpu = time.process_time() - cpu0
    server_cpu = process_cpu_seconds(server_pids or []) - server0
    for sub in subscribers:
        sub.close()
    publisher.close()
    states = [
        {"received": len(st["ids"]), "dups": st["dups"], "errors": st["errors"], "last": st["last"]}
        for st in per_sub
    ]
    row = _result_row(
        workload, url, serializer_name, transport, schedule, fanout, states, histogram,
        t0, behind, payload_bytes, cpu + server_cpu,
    )  # fmt: skip
    row["roles"] = "threads"
    return row


def _fraction_within(histogram: HdrHistogram, limit_us: int) -> float:
    total = histogram.get_total_count()
    if not total:
        return 0.0
    within = sum(
        item.count_added_in_this_iter_step
        for item in histogram.get_recorded_iterator()
        if item.value_iterated_to <= limit_us
    )
    return within / total


def _publish_schedule(
    publisher: Any, codec: Any, pool: list[dict], schedule: list[tuple[int, float]], progress: Any,
    name: str, start_ns: Any = None,
) -> tuple[int, int, int]:  # fmt: skip
    """Send every alert at its intended time; (t0, alerts sent behind schedule, payload bytes)."""
    task = progress.add_task(name, total=len(schedule)) if progress else None
    t0 = start_ns.value if start_ns is not None else time.time_ns() + 200_000_000
    behind = payload_bytes = 0
    for i, (_visit, offset) in enumerate(schedule):
        intended = t0 + int(offset * 1e9)
        delay = (intended - time.time_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.001:
            behind += 1
        payload = codec.dumps(with_alert_id(pool[i % len(pool)], i))
        payload_bytes += len(payload)
        publisher.publish(
            Envelope(
                payload=payload,
                content_type=codec.content_type,
                alert_id=i,
                t_shutter_ns=t0,
                t_intended_ns=intended,
                sequence=i,
            )
        )
        if task is not None and i % 50 == 0:
            progress.update(task, completed=i)
    if task is not None:
        progress.update(task, completed=len(schedule))
    return t0, behind, payload_bytes


def _run_with_processes(
    workload: Workload, url: str, serializer_name: str, codec: Any, pool: list[dict],
    schedule: list[tuple[int, float]], transport: Any, fanout: bool, progress: Any,
    server_pids: list[int], idle_timeout: float,
) -> dict[str, Any]:  # fmt: skip
    from alertbench.harness.visit_bench import process_cpu_seconds

    n = len(schedule)
    shared = None if fanout else shared_counter()
    children = [
        ChildSubscriber(url, serializer_name, n, idle_timeout, {}, shared=shared, wait=False)
        for _ in range(workload.subscribers)
    ]
    for child in children:
        child.wait_ready()
    publisher = transport.open_publisher()
    wait = getattr(publisher, "wait_for_subscribers", None)
    if wait is not None:
        wait(len(children), timeout=15)
    cpu0 = _cpu_seconds()
    server0 = process_cpu_seconds(server_pids)
    t0, behind, payload_bytes = _publish_schedule(
        publisher, codec, pool, schedule, progress, workload.name
    )
    publisher.flush(120)
    publisher_cpu = _cpu_seconds() - cpu0
    reports = [child.finish(idle_timeout + 600) for child in children]
    server_cpu = process_cpu_seconds(server_pids) - server0
    publisher.close()
    histogram = HdrHistogram(1, 600_000_000, 3)
    for report in reports:
        for alert_id, t_received, t_envelope in report["received"]:
            # A transport that carries only the packet (VTP): the schedule says when it was due.
            intended = t_envelope or t0 + int(schedule[alert_id][1] * 1e9)
            histogram.record_value(max(1, (t_received - intended) // 1000))
        report.update(
            dups=report["duplicates"],
            errors=report["decode_errors"],
            last=max((r[1] for r in report["received"]), default=0),
        )
        report["received"] = len(report["received"])
    subscriber_cpu = sum(r["cpu_seconds"] for r in reports)
    row = _result_row(
        workload, url, serializer_name, transport, schedule, fanout, reports, histogram,
        t0, behind, payload_bytes, publisher_cpu + subscriber_cpu + server_cpu,
    )  # fmt: skip
    row["roles"] = "processes"
    row["processes"] = {
        "publisher": {"cpu_seconds": publisher_cpu, "peak_rss_mb": _peak_rss_mb()},
        "subscribers": [
            {"cpu_seconds": r["cpu_seconds"], "peak_rss_mb": r["peak_rss_mb"]} for r in reports
        ],
        "servers": [{"pid": pid, "peak_rss_mb": _pid_peak_rss_mb(pid)} for pid in server_pids],
        "servers_cpu_seconds": server_cpu,
    }
    return row


def _result_row(
    workload: Workload, url: str, serializer_name: str, transport: Any,
    schedule: list[tuple[int, float]], fanout: bool, states: list[dict[str, Any]],
    histogram: HdrHistogram, t0: int, behind: int, payload_bytes: int, cpu_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """One result row (the matrix report's format) from what each subscriber reported."""
    n = len(schedule)
    received = [st["received"] for st in states]
    delivered = sum(received) if not fanout else min(received)
    last = max(st["last"] for st in states) or time.time_ns()
    duration = (last - t0) / 1e9
    lat = {f"p{p:g}": float(histogram.get_value_at_percentile(p)) for p in PERCENTILES}
    lat["max"] = float(histogram.get_max_value())
    streams = workload.subscribers if fanout else 1
    per_alert = cpu_seconds / max(delivered * streams, 1)
    return {
        "workload": asdict(workload),
        "transport_url": url,
        "serializer": serializer_name,
        "capabilities": asdict(transport.capabilities),
        "alerts_sent": n,
        "alerts_received_per_subscriber": received,
        "lost": n - delivered,
        "duplicates": sum(st["dups"] for st in states),
        "decode_errors": sum(st["errors"] for st in states),
        "sent_behind_schedule": behind,
        "offered_alerts_per_second": n / max(schedule[-1][1], 1e-9) if n > 1 else 0.0,
        "delivered_alerts_per_second": delivered / duration if duration > 0 else 0.0,
        "bytes_per_alert": payload_bytes / n,
        "latency_us": lat,
        "within_60s_fraction": _fraction_within(histogram, 60_000_000),
        "cpu_seconds_per_alert": per_alert,
        "cores_per_stream_at_lsst_rate": per_alert * LSST_RATE,
    }
