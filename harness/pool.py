"""The alerts a run sends: a pool of distinct realistic alerts, cycled, each with its own id.

Simulating 10,000 realistic alerts takes ~35 s here, so a run simulates a pool of distinct
alerts (a few hundred) once and cycles it, re-labelling each alert it sends with its own id. A
pool far larger than a producer batch (1 MB, ~8 alerts) keeps Kafka's compression from seeing
repeats within a batch, so compression ratios are not flattered; unique ids keep transports
that de-duplicate by content (a VTP broker) or carry only the packet (VTP: the id comes from
the IVORN) seeing distinct alerts.
"""

from __future__ import annotations

import functools

import numpy as np
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import get_serializer

CACHED_POOL_MAX = 1000
"""Pools up to this many alerts (~130 MB) are simulated once per process and reused: a max-rate
search or a matrix asks for the same pool at every step. Bigger ones are never kept."""

CUTOUTS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")


@functools.lru_cache(maxsize=4)
def _simulated(count: int, seed: int) -> tuple[dict, ...]:
    sim = AlertSimulator(
        SimulationConfig(seed=seed, alerts_per_visit_mean=count, alerts_per_visit_sigma=0)
    )
    return tuple(sim.visit(0).alerts(count))


def alert_pool(count: int, seed: int, cutout_fraction: float = 1.0) -> list[dict]:
    """``count`` distinct realistic alerts (one simulated visit's first ``count``).

    ``cutout_fraction`` is the alert-size mix: that share of alerts keep their three FITS
    cutouts (~80% of an alert's bytes), the rest go without, chosen at random from ``seed``.
    The alerts may be shared with other callers: copy before changing one (:func:`with_alert_id`
    does).
    """
    if count <= CACHED_POOL_MAX:
        alerts = list(_simulated(count, seed))
    else:
        sim = AlertSimulator(
            SimulationConfig(seed=seed, alerts_per_visit_mean=count, alerts_per_visit_sigma=0)
        )
        alerts = list(sim.visit(0).alerts(count))
    if cutout_fraction >= 1.0:
        return alerts
    keep = np.random.default_rng(seed + 1).random(len(alerts)) < cutout_fraction
    bare = dict.fromkeys(CUTOUTS)
    return [a if k else dict(a, **bare) for a, k in zip(alerts, keep, strict=True)]


def with_alert_id(alert: dict, alert_id: int) -> dict:
    """A pool alert re-labelled as alert ``alert_id``, so cycled alerts stay distinct packets."""
    return dict(
        alert, diaSourceId=alert_id, diaSource=dict(alert["diaSource"], diaSourceId=alert_id)
    )


def payload_pool(count: int, seed: int, serializer_name: str = "avro") -> tuple[list[bytes], str]:
    """``count`` distinct realistic alerts, encoded, and their content type."""
    serializer = get_serializer(serializer_name)
    return [serializer.dumps(a) for a in alert_pool(count, seed)], serializer.content_type
