"""Declarative workloads and the paced runner: LSST's schedule, not a burst as fast as possible.

A workload file (``harness/workloads/*.yaml``) says how many visits (or for how long visits
repeat), how many alerts each, the cadence, the window in which the 189 per-CCD bursts of a visit
fall, the time compression, the number of subscribers (full streams out), how the stream is laid
out on a cluster (partitions, replication factor) and how long to warm it first. The runner gives
every alert an *intended* send time from that schedule and sends it then (or as soon as it can,
if it is behind); latency runs from the intended time to after decode at each subscriber, so a
producer that falls behind shows up as latency instead of hiding it (coordinated omission).

The layout and the warm-up are the workload's, not each transport's, so that two transports run
the same file are compared on the same terms: the same partitions and replication on a Kafka
cluster, the same off-the-record traffic through the stream before the clock starts. A layout
the file does not state is not imposed: an existing topic is used as it is laid out, and one the
run creates gets the harness's defaults (3 partitions, replication factor 1), as before the
workload could say. Only a stated layout an existing topic does not have is refused.

``producers`` above 1 runs that many publisher processes, each sending a disjoint share of the
alerts (:mod:`.engine`), on transports whose publishers join one stream through a broker (Kafka).

The run itself is the engine's (:mod:`.engine`): a workload is one more schedule. Subscribers
run as processes of their own by default, as they would in production (their own interpreter,
so decoding does not compete with the publisher for one GIL), each reporting its CPU seconds
and peak memory; the publisher is this process; servers are the transport's own processes (the
Kafka JVM) or, for gRPC and VTP, threads of this one. ``roles="threads"`` keeps every
subscriber in this process.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from alertbench.harness.engine import (
    DEFAULT_PARTITIONS,
    RunSpec,
    Schedule,
    open_stream,
    run,
    several_publishers_refusal,
)
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.transports.base import get_transport, transport_class

from alertbench.errors import AlertbenchError, ConfigError, TransportError

WORKLOADS_DIR = Path(__file__).with_name("workloads")
CONNECT_S = 15.0
"""How long the runner waits for a local stream's broker to count the subscribers in."""

DEFAULT_REPLICATION = 1
"""Replication factor of a topic the run creates when the workload states none (what
``KafkaTransport.prepare`` has always created)."""

_INTEGERS = ("ccds", "subscribers", "alert_pool", "producers")
"""Fields that count something, each at least 1."""
_LAYOUT = ("partitions", "replication_factor")
"""Counts a workload may leave unstated (None), each at least 1 when it states them."""
_POSITIVE = ("alerts_per_visit", "cadence_s", "time_compression")
_NON_NEGATIVE = ("burst_window_s", "alerts_per_visit_sigma", "warm_up_s")


@dataclass(frozen=True, kw_only=True)
class Workload:
    name: str
    visits: int | None = None
    """How many visits; None in a file that gives ``duration_s`` instead, and then the count
    that duration holds once constructed, so every reader sees a number."""
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
    duration_s: float | None = None
    """Sky seconds (like ``cadence_s``; compressed as it is) over which visits repeat, one per
    cadence: a night's length is how Rubin states a load, not a visit count. The run holds the
    whole cadence slots that fit, so the wall time is about ``duration_s / time_compression``."""
    partitions: int | None = None
    """Partitions of the stream's topic where the transport has topics (Kafka): they bound how
    many consumers share the work, so every transport compared must get the same number.
    None (not stated): an existing topic is used as it is, a new one gets 3."""
    replication_factor: int | None = None
    """Copies of each partition on a Kafka cluster: replication costs the brokers CPU and the
    publisher acknowledgement time, so a run on a real cluster states it. The local stream is
    one broker, so above 1 needs ``kafka://HOST:PORT/TOPIC`` of a cluster that has the brokers;
    transports without topics record that it did not apply (``topic`` None). None (not
    stated): an existing topic is used as it is, a new one gets 1."""
    warm_up_s: float = 0.0
    """Wall seconds of the workload's own schedule sent through the same stream before the
    measured run and kept off its record: the first run of a fresh JVM, socket or codec pays
    for JIT, page cache and connection set-up that a night-long service does not."""
    producers: int = 1
    """Publisher processes, as Rubin's 189 CCD workers publish in parallel: process ``k`` of
    ``N`` sends alerts ``k, k + N, ...`` at their intended times, so ids stay disjoint and the
    subscribers' accounting is unchanged; each process's CPU is recorded. Above 1 needs a
    transport whose publishers share one stream (Kafka); a tcp, zmq or VTP publisher binds the
    stream's port, so more than 1 is refused there rather than run with one."""
    description: str = ""

    def __post_init__(self) -> None:
        # One line per mistake: the CLI prints a ConfigError as it is and exits 2.
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.description, str):
            raise ConfigError(f"description must be a string, not {self.description!r}")
        for name in _INTEGERS:
            _check(name, getattr(self, name), integer=True, low=1)
        for name in _LAYOUT:
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), integer=True, low=1)
        for name in _POSITIVE:
            _check(name, getattr(self, name), low=0, above=True)
        for name in _NON_NEGATIVE:
            _check(name, getattr(self, name), low=0)
        _check("seed", self.seed, integer=True, low=0)
        _check("cutout_fraction", self.cutout_fraction, low=0, high=1)
        if self.burst_window_s > self.cadence_s:
            raise ConfigError(
                f"burst_window_s {self.burst_window_s:g} is longer than cadence_s "
                f"{self.cadence_s:g}: a visit's bursts would fall into the next visit"
            )
        if self.duration_s is None:
            if self.visits is None:
                raise ConfigError("a workload gives visits or duration_s (visits every cadence_s)")
            _check("visits", self.visits, integer=True, low=1)
            return
        _check("duration_s", self.duration_s, low=0, above=True)
        held = math.floor(self.duration_s / self.cadence_s + 1e-9)
        if held < 1:
            raise ConfigError(
                f"duration_s {self.duration_s:g} is shorter than one cadence ({self.cadence_s:g} "
                "s): not one visit fits"
            )
        if self.visits is None:
            object.__setattr__(self, "visits", held)  # frozen: set once, here
        elif self.visits != held:
            raise ConfigError(
                f"visits {self.visits!r} and duration_s {self.duration_s:g} disagree (that "
                f"duration holds {held} visits of {self.cadence_s:g} s): give one of them"
            )

    @property
    def new_topic_layout(self) -> dict[str, int]:
        """How a topic the run creates is laid out: the stated values, else the defaults."""
        return {
            "partitions": DEFAULT_PARTITIONS if self.partitions is None else self.partitions,
            "replication_factor": (
                DEFAULT_REPLICATION if self.replication_factor is None else self.replication_factor
            ),
        }

    @property
    def visit_count(self) -> int:
        """``visits`` as a number for the type checker: __post_init__ has resolved it."""
        assert self.visits is not None
        return self.visits

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
        try:
            data = yaml.safe_load(candidate.read_text())
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"{candidate}: not valid YAML{line}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{candidate}: a workload is a mapping of fields, not {data!r}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise AlertbenchError(f"{candidate}: unknown workload fields {sorted(unknown)}")
        missing = [f for f in ("name", "alerts_per_visit") if f not in data]
        if missing:
            raise ConfigError(f"{candidate}: missing workload fields {missing}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{candidate}: {exc}") from None

    def schedule(self, visits: int | None = None) -> list[tuple[int, float]]:
        """(visit index, intended send offset in seconds) of every alert, in send order.

        ``visits``: that many visits instead of the workload's (the warm-up's, which may go
        past them), the first ones identical, since each visit is drawn in turn."""
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
        for v in range(self.visit_count if visits is None else visits):
            visit = sim.visit(v)
            start = v * self.cadence_s / self.time_compression
            window = self.burst_window_s / self.time_compression
            # each CCD's worker finishes at its own moment in the window and emits its burst
            finish = np.sort(rng.uniform(0.0, window, len(visit.ccd_counts)))
            for ccd_time, count in zip(finish, visit.ccd_counts, strict=True):
                out.extend((v, start + float(ccd_time)) for _ in range(count))
        return out

    def warm_up_schedule(self) -> Schedule | None:
        """The first ``warm_up_s`` wall seconds of this workload's pacing (visits go on past
        the workload's own if it is shorter), at least one alert; None without a warm-up.
        Its own pacing, not a burst, so the stream is warmed at the load it is measured at."""
        if not self.warm_up_s:
            return None
        slot = self.cadence_s / self.time_compression
        visits = max(1, math.ceil(self.warm_up_s / slot))
        offsets = np.array([o for _, o in self.schedule(visits)], dtype=np.float64)
        kept = offsets[offsets < self.warm_up_s] if offsets.size else offsets
        if not kept.size:
            kept = offsets[:1] if offsets.size else np.zeros(1)
        return Schedule(f"warm-up {self.warm_up_s:g} s of {self.name}", len(kept), kept)


def _check(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    low: float | None = None,
    above: bool = False,
    high: float | None = None,
) -> None:
    """ConfigError, one line, for a field of the wrong type or out of its range."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {what}, not {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, not {value!r}")
    if low is not None and (value <= low if above else value < low):
        bound = f"above {low:g}" if above else f"at least {low:g}"
        raise ConfigError(f"{name} must be {bound}, not {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {value!r}")


def run_workload(
    workload: Workload,
    url: str,
    serializer_name: str,
    progress: Any = None,
    server_pids: list[int] | None = None,
    idle_timeout: float = 30.0,
    roles: str = "processes",
    transport_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``workload`` against ``url`` (or a transport kind); one result row: the engine's
    :class:`~.engine.RunResult` fields plus the workload, the roles' layout, the topic as the
    cluster has it (``topic``: None for transports without topics) and the warm-up
    (``warm_up``: None without one; its alerts are not in the row's figures).

    ``transport_options`` reach a cluster that is not ours (Kafka credentials, TLS). The
    topic of a ``kafka://`` URL that exists is used as it is laid out, unless the workload
    states a layout it does not have (refused rather than measured); a missing one is created
    with the workload's partitions and replication factor, or the defaults where it states
    none. ``producers`` above 1 is refused, before anything starts, on a transport whose
    publishers cannot share one stream."""
    if roles not in ("processes", "threads"):
        raise ConfigError(f"roles must be 'processes' or 'threads', not {roles!r}")
    refusal = several_publishers_refusal(url, workload.producers)
    if refusal:
        raise ConfigError(refusal)
    options = dict(transport_options or {})
    if options and "://" not in url:
        raise ConfigError(
            f"transport options reach a cluster that is not ours: give a URL, not the kind {url!r}"
        )
    role = "process" if roles == "processes" else "thread"
    with _stream(workload, url) as (target, stream):
        topic = _lay_out_topic(workload, target, options)
        pids = [*(server_pids or ()), *(stream.server_pids if stream is not None else ())]
        wait = _broker_count(stream)

        def spec(schedule: Schedule, payload: str, label: str) -> RunSpec:
            return RunSpec(
                transport=target,
                serializer=serializer_name,
                schedule=schedule,
                payload=payload,
                subscribers=workload.subscribers,
                subscriber_role=role,
                idle_timeout=idle_timeout,
                pool_size=workload.alert_pool,
                seed=workload.seed,
                cutout_fraction=workload.cutout_fraction,
                transport_options=options,
                partitions=(topic or workload.new_topic_layout)["partitions"],
                server_pids=tuple(pids),
                wait_for_subscribers=wait,
                label=label,
                publishers=workload.producers,
            )

        warm_up = None
        warm_schedule = workload.warm_up_schedule()
        if warm_schedule is not None:
            # off the record, as the matrix warms a shared server: the transport, not the codec
            warm = run(spec(warm_schedule, "pre-encoded", f"warming {workload.name}")).row()
            warm_up = {
                "done": True,
                "seconds": workload.warm_up_s,
                "schedule": warm["schedule"],
                "alerts_sent": warm["alerts_sent"],
                "alerts_received_per_subscriber": warm["alerts_received_per_subscriber"],
                "lost": warm["lost"],
                "end_to_end_seconds": warm["end_to_end_seconds"],
            }
        row = run(spec(Schedule.from_workload(workload), "codec", workload.name), progress).row()
    row["workload"] = asdict(workload)
    row["roles"] = roles
    row["topic"] = topic
    row["warm_up"] = warm_up
    return row


@contextlib.contextmanager
def _stream(workload: Workload, url: str) -> Iterator[tuple[str, Any]]:
    """``(url, local stream or None)``: a kind's local stream opened here, not by each run,
    so the warm-up and the measured run go through the same one."""
    if "://" in url:
        yield url, None
        return
    replication = workload.replication_factor
    if (
        replication is not None
        and replication > 1
        and hasattr(transport_class(url), "ensure_topic")
    ):
        raise ConfigError(
            f"replication_factor {replication} needs a cluster of that many brokers; the "
            f"local {url} stream has one: give kafka://HOST:PORT/TOPIC of such a cluster"
        )
    partitions = workload.new_topic_layout["partitions"]
    with open_stream(RunSpec(url, partitions=partitions)) as (target, stream):
        yield target, stream


def _broker_count(stream: Any) -> Callable[[int], None] | None:
    """What the engine would ask for subscribers had it opened the stream itself: the broker
    that counts them where the publisher cannot (gRPC, VTP)."""
    if stream is None or stream.counter is None:
        return None

    def wait(n: int) -> None:
        stream.wait_for_subscribers(None, n, timeout=CONNECT_S)

    return wait


def _lay_out_topic(
    workload: Workload, url: str, options: Mapping[str, Any]
) -> dict[str, int] | None:
    """The topic's partitions and replication as the cluster reports them (None: the
    transport has no topics). A missing topic is created with the workload's layout (the
    defaults for what it does not state); an existing one is adopted as it is, unless the
    workload states a layout it does not have: then its figures would not be the workload's,
    and it is refused."""
    transport = get_transport(url, **options)
    if not hasattr(transport, "ensure_topic"):
        return None
    transport.ensure_topic(**workload.new_topic_layout)  # nothing changes if it exists
    have = _topic_layout(transport)
    stated = {
        name: getattr(workload, name) for name in _LAYOUT if getattr(workload, name) is not None
    }
    wrong = {name: value for name, value in stated.items() if have[name] != value}
    if wrong:
        said = " and ".join(f"{name} {value}" for name, value in wrong.items())
        raise ConfigError(
            f"topic {transport.topic!r} exists with {have['partitions']} partition(s) and "
            f"replication factor {have['replication_factor']}, not the workload's {said}: "
            "name a new topic, or leave the layout out of the workload to use this one"
        )
    return have


def _topic_layout(transport: Any) -> dict[str, int]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(transport.client_config())
    try:
        found = admin.list_topics(topic=transport.topic, timeout=10).topics.get(transport.topic)
    except KafkaException as exc:
        raise TransportError(f"cannot describe topic {transport.topic!r}: {exc}") from None
    if found is None or found.error is not None or not found.partitions:
        raise TransportError(f"topic {transport.topic!r} is not on the cluster after creation")
    return {
        "partitions": len(found.partitions),
        "replication_factor": min(len(p.replicas) for p in found.partitions.values()),
    }
