"""The maximum sustainable rate of a transport x serialization, found as OpenMessaging does.

A rate is *sustainable* when, offered at a constant R alerts/s for a while, the publisher keeps to
the schedule (at most 1% of alerts sent late by more than 50 ms), nothing is lost, and latency
from the intended send time stays bounded (p99 under ``latency_bound_s``). The search doubles R
from ``start`` until a rate fails, then bisects between the last good and the first bad rate.
The answer is what the ranking's headroom should be measured against: a burst's throughput is
not a rate a stream can hold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from alertbench.harness.visit_bench import LSST_RATE, ChildSubscriber, alert_pool, with_alert_id
from alertbench.refimpl.codecs.base import get_serializer
from alertbench.transports.base import Envelope, get_transport
from hdrh.histogram import HdrHistogram

LATE_NS = 50_000_000


@dataclass
class Step:
    rate: float
    sent: int
    received: int
    late_fraction: float
    p99_ms: float
    max_ms: float
    sustainable: bool


def offer(
    url: str,
    serializer: str,
    rate: float,
    seconds: float,
    pool: list[dict],
    latency_bound_s: float,
    subscriber_process: bool = False,
) -> Step:
    """Offer ``rate`` alerts/s for ``seconds`` to one subscriber; is it sustainable?

    ``subscriber_process`` runs the subscriber in a child process (see ``run_visit``)."""
    codec = get_serializer(serializer)
    transport = get_transport(url)
    if hasattr(transport, "ensure_topic"):
        transport.ensure_topic(partitions=3)
    n = max(1, int(rate * seconds))
    idle = max(5.0, latency_bound_s * 2)
    child = ChildSubscriber(url, serializer, n, idle, {}) if subscriber_process else None
    sub: Any = child if child is not None else transport.open_subscriber()
    pub = transport.open_publisher()
    wait = getattr(pub, "wait_for_subscribers", None)
    if wait is not None:
        wait(1, timeout=10)
    histogram = HdrHistogram(1, 600_000_000, 3)
    got: set[int] = set()
    intended_by_id: dict[int, int] = {}  # for transports that carry only the packet (VTP)

    def consume() -> None:
        while child is None and len(got) < n:
            item = sub.poll(idle)
            if item is None:
                return
            codec.loads(item.envelope.payload)
            alert_id = item.envelope.alert_id
            intended = item.envelope.t_intended_ns or intended_by_id.get(alert_id, time.time_ns())
            histogram.record_value(max(1, (time.time_ns() - intended) // 1000))
            got.add(item.envelope.alert_id)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    t0 = time.time_ns() + 100_000_000
    late = 0
    for i in range(n):
        intended = t0 + int(i * 1e9 / rate)
        intended_by_id[i] = intended
        delay = (intended - time.time_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        elif -delay * 1e9 > LATE_NS:
            late += 1
        pub.publish(
            Envelope(
                payload=codec.dumps(with_alert_id(pool[i % len(pool)], i)),
                content_type=codec.content_type,
                alert_id=i,
                t_intended_ns=intended,
                sequence=i,
            )
        )
    pub.flush(60)
    thread.join(timeout=seconds + 60)
    if child is not None:
        for alert_id, t_received, t_envelope in child.finish(seconds + 120)["received"]:
            intended = t_envelope or intended_by_id.get(alert_id, t_received)
            histogram.record_value(max(1, (t_received - intended) // 1000))
            got.add(alert_id)
    sub.close()
    pub.close()
    p99 = histogram.get_value_at_percentile(99.0) / 1e3
    step = Step(
        rate=rate,
        sent=n,
        received=len(got),
        late_fraction=late / n,
        p99_ms=p99,
        max_ms=histogram.get_max_value() / 1e3,
        sustainable=False,
    )
    step.sustainable = (
        step.received == n and step.late_fraction <= 0.01 and p99 <= latency_bound_s * 1e3
    )
    return step


def find_max_rate(
    url_for_step,
    serializer: str,
    start: float = 50.0,
    seconds: float = 6.0,
    latency_bound_s: float = 1.0,
    max_steps: int = 10,
    pool_size: int = 100,
    seed: int = 1,
    progress: Any = None,
    subscriber_process: bool = False,
) -> dict[str, Any]:
    """Search the maximum sustainable rate; ``url_for_step()`` gives a fresh URL per step."""
    pool = alert_pool(pool_size, seed)
    steps: list[Step] = []
    good, bad = 0.0, None
    rate = start
    for _ in range(max_steps):
        url = url_for_step()
        step = offer(
            url, serializer, rate, seconds, pool, latency_bound_s,
            subscriber_process=subscriber_process,
        )  # fmt: skip
        steps.append(step)
        if progress is not None:
            progress.console.print(
                f"  {rate:,.0f} alerts/s: {'sustained' if step.sustainable else 'not sustained'}"
                f" (received {step.received}/{step.sent}, late {step.late_fraction:.1%}, p99 "
                f"{step.p99_ms:,.0f} ms)",
                markup=False,
            )
        if step.sustainable:
            good = rate
        else:
            bad = rate
        if bad is None:
            rate *= 2
        elif bad - good <= max(5.0, 0.1 * bad):
            break
        else:
            rate = (good + bad) / 2 if good else bad / 2
    return {
        "serializer": serializer,
        "max_sustainable_rate": good,
        "headroom_over_lsst": good / LSST_RATE,
        "latency_bound_s": latency_bound_s,
        "seconds_per_step": seconds,
        "steps": [asdict(s) for s in steps],
        "subscriber_process": subscriber_process,
    }
