"""Every serializer on the same 50 simulated alerts: bytes, encode and decode time per alert.

Two variants: ``full`` alerts, and ``no-cutouts`` (the three FITS stamps nulled), the numeric
part of the packet, where the formats differ most and which is what a VOEvent with cutouts by
reference carries. Ratios against Avro (medians of the same run) are printed at the end of the
session and added to the JSON output by ``tests/benchmarks/conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.base import SERIALIZERS, get_serializer

N = 50
CODECS = sorted(SERIALIZERS)
VARIANTS = ("full", "no-cutouts")


@pytest.fixture(scope="module")
def samples() -> dict[str, list[dict]]:
    sim = AlertSimulator(
        SimulationConfig(seed=11, alerts_per_visit_mean=N, alerts_per_visit_sigma=0)
    )
    full = list(sim.visit(0).alerts())
    bare = [dict(a, cutoutDifference=None, cutoutScience=None, cutoutTemplate=None) for a in full]
    return {"full": full, "no-cutouts": bare}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CODECS)
def test_encode(benchmark, samples, name, variant) -> None:
    codec = get_serializer(name)
    sample = samples[variant]
    sizes = [len(codec.dumps(a)) for a in sample]
    benchmark.group = f"serializers: encode {N} alerts ({variant})"
    benchmark.extra_info.update(
        codec=name,
        phase="encode",
        variant=variant,
        alerts_per_round=N,
        bytes_per_alert_mean=float(np.mean(sizes)),
    )
    benchmark(lambda: [codec.dumps(a) for a in sample])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CODECS)
def test_decode(benchmark, samples, name, variant) -> None:
    codec = get_serializer(name)
    blobs = [codec.dumps(a) for a in samples[variant]]
    benchmark.group = f"serializers: decode {N} alerts ({variant})"
    benchmark.extra_info.update(
        codec=name,
        phase="decode",
        variant=variant,
        alerts_per_round=N,
        bytes_per_alert_mean=float(np.mean([len(b) for b in blobs])),
    )
    benchmark(lambda: [codec.loads(b) for b in blobs])
