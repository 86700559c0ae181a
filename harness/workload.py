"""Declarative workloads and the paced runner: LSST's schedule, not a burst as fast as possible.

A workload file (``harness/workloads/*.yaml``) says how many visits, how many alerts each, the
cadence, the window in which the 189 per-CCD bursts of a visit fall, the time compression and the
number of subscribers (full streams out). The runner gives every alert an *intended* send time
from that schedule and sends it then (or as soon as it can, if it is behind); latency runs from
the intended time to after decode at each subscriber, so a producer that falls behind shows up as
latency instead of hiding it (coordinated omission).

The run itself is the engine's (:mod:`.engine`): a workload is one more schedule. Subscribers
run as processes of their own by default, as they would in production (their own interpreter,
so decoding does not compete with the publisher for one GIL), each reporting its CPU seconds
and peak memory; the publisher is this process; servers are the transport's own processes (the
Kafka JVM) or, for gRPC and VTP, threads of this one. ``roles="threads"`` keeps every
subscriber in this process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from alertbench.harness.engine import RunSpec, Schedule, run
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig

from alertbench.errors import AlertbenchError, ConfigError

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
        return alert_pool(self.alert_pool, self.seed, self.cutout_fraction)

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


def run_workload(
    workload: Workload,
    url: str,
    serializer_name: str,
    progress: Any = None,
    server_pids: list[int] | None = None,
    idle_timeout: float = 30.0,
    roles: str = "processes",
) -> dict[str, Any]:
    """Run ``workload`` against ``url`` (or a transport kind); one result row: the engine's
    :class:`~.engine.RunResult` fields plus the workload and the roles' layout."""
    if roles not in ("processes", "threads"):
        raise ConfigError(f"roles must be 'processes' or 'threads', not {roles!r}")
    spec = RunSpec(
        transport=url,
        serializer=serializer_name,
        schedule=Schedule.from_workload(workload),
        payload="codec",
        subscribers=workload.subscribers,
        subscriber_role="process" if roles == "processes" else "thread",
        idle_timeout=idle_timeout,
        pool_size=workload.alert_pool,
        seed=workload.seed,
        cutout_fraction=workload.cutout_fraction,
        server_pids=tuple(server_pids or ()),
        label=workload.name,
    )
    row = run(spec, progress).row()
    row["workload"] = asdict(workload)
    row["roles"] = roles
    return row
