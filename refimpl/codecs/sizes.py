"""The size of encoded alerts, and what it is made of.

Sizes drive every bandwidth and throughput figure, so they are measured on encoded bytes, split
into the three parts Rubin's sizing note (DMTN-102) budgets separately: cutouts, history
(``prvDiaSources`` + ``prvDiaForcedSources``) and the rest (triggering source, object, ids).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from alertbench.refimpl.codecs.base import Alert, Serializer
from astropy.io import fits

CUTOUT_FIELDS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")
HISTORY_FIELDS = ("prvDiaSources", "prvDiaForcedSources")


@dataclass
class SizeReport:
    """Per-alert byte counts of one serialization over a sample of alerts."""

    serializer_name: str
    total: list[int] = field(default_factory=list)
    cutouts: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)
    n_prv_sources: list[int] = field(default_factory=list)
    n_prv_forced: list[int] = field(default_factory=list)
    cutout_sides: list[int] = field(default_factory=list)

    def add(self, alert: Alert, serializer: Serializer) -> None:
        full = len(serializer.dumps(alert))
        bare = dict(alert)
        for name in HISTORY_FIELDS:
            if name in bare:
                bare[name] = None
        self.total.append(full)
        self.history.append(full - len(serializer.dumps(bare)))
        self.cutouts.append(sum(len(alert.get(name) or b"") for name in CUTOUT_FIELDS))
        self.n_prv_sources.append(len(alert.get("prvDiaSources") or ()))
        self.n_prv_forced.append(len(alert.get("prvDiaForcedSources") or ()))
        self.cutout_sides.append(cutout_side(alert.get("cutoutDifference")))

    @staticmethod
    def stats(values: list[int]) -> dict[str, float]:
        a = np.asarray(values, dtype=float)
        if a.size == 0:
            return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "mean": float(a.mean()),
            "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)),
            "max": float(a.max()),
        }

    def summary(self) -> dict[str, dict[str, float]]:
        rest = [t - c - h for t, c, h in zip(self.total, self.cutouts, self.history, strict=True)]
        return {
            "encoded alert (bytes)": self.stats(self.total),
            "cutouts, three FITS (bytes)": self.stats(self.cutouts),
            "history: prvDiaSources + prvDiaForcedSources (bytes)": self.stats(self.history),
            "rest: diaSource, diaObject, ids (bytes)": self.stats(rest),
            "prvDiaSources per alert": self.stats(self.n_prv_sources),
            "prvDiaForcedSources per alert": self.stats(self.n_prv_forced),
            "cutout side (pixels)": self.stats(self.cutout_sides),
        }


def cutout_side(cutout: bytes | None) -> int:
    """Side in pixels of a FITS cutout's image plane (0 when there is no cutout)."""
    if not cutout:
        return 0
    with fits.open(io.BytesIO(cutout)) as hdus:
        image = next(h for h in hdus if h.data is not None)
        return int(image.data.shape[0])
