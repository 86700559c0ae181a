"""Codec and simulator micro-benchmarks: ``make bench`` / ``tox -e bench`` (not the test run).

Each codec benchmark encodes or decodes the same 100 simulated alerts per round, so a round's
time divided by 100 is the per-alert cost over a realistic size mix; ``extra_info`` records the
per-alert microseconds and bytes so the JSON output carries them directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import ENGINES, AvroSerializer

N = 100


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    sim = AlertSimulator(
        SimulationConfig(seed=11, alerts_per_visit_mean=N, alerts_per_visit_sigma=0)
    )
    return list(sim.visit(0).alerts())


def _record(benchmark, sample, codec, phase: str) -> None:
    sizes = [len(codec.dumps(a)) for a in sample]
    benchmark.extra_info.update(
        {
            "alerts_per_round": len(sample),
            "phase": phase,
            "engine": codec.engine,
            "bytes_per_alert_mean": float(np.mean(sizes)),
            "bytes_per_alert_p50": float(np.median(sizes)),
        }
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_avro_encode(benchmark, sample, engine) -> None:
    codec = AvroSerializer(engine=engine)
    _record(benchmark, sample, codec, "encode")
    benchmark.group = "avro encode (100 alerts per round)"
    benchmark(lambda: [codec.dumps(a) for a in sample])
    benchmark.extra_info["us_per_alert_median"] = benchmark.stats.stats.median / N * 1e6


@pytest.mark.parametrize("engine", ENGINES)
def test_avro_decode(benchmark, sample, engine) -> None:
    codec = AvroSerializer(engine=engine)
    _record(benchmark, sample, codec, "decode")
    blobs = [codec.dumps(a) for a in sample]
    benchmark.group = "avro decode (100 alerts per round)"
    benchmark(lambda: [codec.loads(b) for b in blobs])
    benchmark.extra_info["us_per_alert_median"] = benchmark.stats.stats.median / N * 1e6


def test_simulate_one_10000_alert_visit(benchmark) -> None:
    sim = AlertSimulator(
        SimulationConfig(seed=12, alerts_per_visit_mean=10_000, alerts_per_visit_sigma=0)
    )
    visit = sim.visit(0)
    benchmark.group = "simulator"

    def run() -> int:
        return sum(1 for _ in sim.visit(0).alerts())

    count = benchmark.pedantic(run, rounds=1, iterations=1)
    assert count == visit.n_alerts == 10_000
    benchmark.extra_info["alerts"] = count
