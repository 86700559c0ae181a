"""The maximum sustainable rate of a transport x serialization, found as OpenMessaging does.

A rate controller over the engine: each probe is one engine run with a constant-rate schedule
(R alerts/s for a few seconds, codec in the loop, the subscriber in a process of its own unless
told otherwise: the same layout as every other run). A rate is *sustainable* when nothing is
lost or undecodable, at most 1% of alerts are late (:data:`metrics.LATE_NS`), and p99 latency
from the intended send time stays under ``latency_bound_s``. The search doubles R from ``start``
until a rate fails, then bisects between the last good and the first bad rate. The answer is
what the ranking's headroom should be measured against: a burst's throughput is not a rate a
stream can hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

from alertbench.harness.engine import RunResult, RunSpec, Schedule, run
from alertbench.harness.metrics import LSST_RATE, MAX_LATE_FRACTION
from alertbench.transports.base import transport_class


@dataclass
class Step:
    rate: float
    sent: int
    received: int
    lost: int
    duplicates: int
    decode_errors: int
    late_fraction: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    sustainable: bool

    @classmethod
    def of(cls, rate: float, result: RunResult, latency_bound_s: float) -> Step:
        lat = result.latency_us
        p99_ms = lat["p99"] / 1e3
        return cls(
            rate=rate,
            sent=result.alerts_sent,
            received=result.alerts_received,
            lost=result.lost,
            duplicates=result.duplicates,
            decode_errors=result.decode_errors,
            late_fraction=result.late_fraction,
            p50_ms=lat["p50"] / 1e3,
            p99_ms=p99_ms,
            max_ms=lat["max"] / 1e3,
            sustainable=(
                result.lost == 0
                and result.decode_errors == 0
                and result.alerts_received == result.alerts_sent
                and result.late_fraction <= MAX_LATE_FRACTION
                and p99_ms <= latency_bound_s * 1e3
            ),
        )


def offer(
    transport: str,
    serializer: str,
    rate: float,
    seconds: float,
    latency_bound_s: float,
    *,
    pool_size: int = 100,
    seed: int = 1,
    subscriber_role: str = "process",
    server_pids: tuple[int, ...] = (),
    shared: Any = None,
    stream_options: Mapping[str, Any] | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> Step:
    """Offer ``rate`` alerts/s for ``seconds`` to one subscriber; is it sustainable?

    ``transport`` is a URL or a kind (a fresh local stream for this step; ``shared`` and
    ``stream_options`` as for :func:`.engine.run`)."""
    spec = RunSpec(
        transport=transport,
        serializer=serializer,
        schedule=Schedule.constant_rate(rate, seconds),
        payload="codec",
        subscriber_role=subscriber_role,
        idle_timeout=max(5.0, latency_bound_s * 2),
        pool_size=pool_size,
        seed=seed,
        server_pids=server_pids,
        stream_options=dict(stream_options or {}),
        transport_options=dict(transport_options or {}),
        label=f"{rate:,.0f} alerts/s",
    )
    return Step.of(rate, run(spec, shared=shared), latency_bound_s)


def find_max_rate(
    transport: str | Callable[[], str],
    serializer: str,
    start: float = 50.0,
    seconds: float = 6.0,
    latency_bound_s: float = 1.0,
    max_steps: int = 10,
    pool_size: int = 100,
    seed: int = 1,
    progress: Any = None,
    subscriber_role: str = "process",
    shared: Any = None,
    stream_options: Mapping[str, Any] | None = None,
    transport_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Search the maximum sustainable rate.

    ``transport`` is a transport kind (a fresh local stream per step, from the transport's own
    recipe; what its streams share, such as a Kafka cluster, is started once for the search
    unless the caller passes it as ``shared`` or points ``stream_options`` at a running one),
    a URL, or a callable giving a fresh URL per step."""
    with ExitStack() as stack:
        kind = isinstance(transport, str) and "://" not in transport
        if kind and shared is None and not stream_options:
            shared = stack.enter_context(transport_class(str(transport)).shared_resources())
        steps: list[Step] = []
        good, bad = 0.0, None
        rate = start
        for _ in range(max_steps):
            target = transport() if callable(transport) else transport
            step = offer(
                target, serializer, rate, seconds, latency_bound_s,
                pool_size=pool_size, seed=seed, subscriber_role=subscriber_role,
                shared=shared if kind else None, stream_options=stream_options if kind else None,
                transport_options=transport_options,
            )  # fmt: skip
            steps.append(step)
            if progress is not None:
                progress.console.print(
                    f"  {rate:,.0f} alerts/s: "
                    f"{'sustained' if step.sustainable else 'not sustained'} (received "
                    f"{step.received}/{step.sent}, late {step.late_fraction:.1%}, p99 "
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
        "subscriber_role": subscriber_role,
        "subscriber_process": subscriber_role == "process",
    }
