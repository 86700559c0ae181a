"""The matrix's plots: each is drawn, named by the report, plots the ranking key, and is the
same bytes when drawn again (a published PNG is checked by rendering it again, like the text)."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest
from alertbench.harness.metrics import LatencyHistogram
from alertbench.harness.report import plots
from alertbench.harness.report.render import LSST_RATE, rank, write_report
from alertbench.harness.report.results import load_results, write_results

RESULTS = Path(__file__).resolve().parents[2] / "results"
REDESIGN = RESULTS / "2026-12-02-matrix-redesign" / "native-1"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
MATRIX_PNGS = (plots.HEATMAP_PNG, plots.THROUGHPUT_PNG, plots.CDF_PNG, plots.SIZES_PNG)


def _histogram(scale_us: int) -> dict:
    """A latency histogram with a long tail, as a run records it (HdrHistogram's encoding)."""
    h = LatencyHistogram()
    h.record_many_us([scale_us + i for i in range(990)])
    h.record_many_us([scale_us * 50 + 1000 * i for i in range(10)])
    return h.to_dict()


def _row(transport: str, serializer: str, headroom: float, lost: int = 0, **extra) -> dict:
    rate = headroom * LSST_RATE
    return {
        "transport": transport,
        "serializer": serializer,
        "alerts_per_second": rate,
        "headroom": headroom,
        "lost": lost,
        "decode_errors": 0,
        "visit_seconds_at_lsst_size": 10_000 / rate,
        "bytes_per_alert": 130_000.0,
        "cores_per_stream_at_lsst_rate": 0.5,
        "mbit_per_stream_at_lsst_rate": 266.0,
        "megabytes_per_second": rate * 0.13,
        "alerts_sent": 1000,
        "alerts_received": 1000 - lost,
        "latency_us": {
            "p50": 1000.0,
            "p90": 2000.0,
            "p99": 30000.0,
            "p99.9": 40000.0,
            "max": 50000.0,
        },
        "capabilities": {"replay": transport == "kafka"},
        **extra,
    }


def _synthetic() -> list[dict]:
    cdf = [[1, 200.0], [50, 1000.0], [90, 2000.0], [99, 30000.0], [99.9, 40000.0], [100, 5e4]]
    return [
        _row("tcp", "avro", 11.0, latency_histogram=_histogram(2_000)),
        _row("kafka", "avro", 1.9, latency_cdf_us=cdf),
        _row("kafka", "protobuf", 0.05, latency_cdf_us=cdf),  # a visit takes ~780 s: fails
        _row("tcp", "protobuf", 3.0, lost=4, latency_histogram=_histogram(500)),  # fails
        _row("vtp", "voevent", 0.9),  # vtp carries VOEvent only: the other cells are n/a
    ]


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def _assert_renders_every_plot_twice_alike(folder: Path) -> None:
    text = write_report(folder).read_text()
    named = IMAGE.findall(text)
    assert named[0] == plots.HEATMAP_PNG  # the at-a-glance picture comes first
    assert sorted(named) == sorted(MATRIX_PNGS)
    first = _pngs(folder)
    assert set(first) == set(MATRIX_PNGS)
    assert all(len(data) > 10_000 for data in first.values())
    for name in first:
        (folder / name).unlink()
    assert write_report(folder).read_text() == text
    assert _pngs(folder) == first, "the same JSON must draw the same PNG bytes"


def test_a_synthetic_matrix_draws_every_plot_and_draws_it_again_to_the_same_bytes(
    tmp_path,
) -> None:
    write_results(tmp_path, "matrix", {"results": _synthetic(), "alerts_per_combination": 1000},
                  command="alertbench matrix --alerts 1000")  # fmt: skip
    _assert_renders_every_plot_twice_alike(tmp_path)


def test_a_published_matrix_run_draws_every_plot_and_draws_it_again_alike(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(REDESIGN / "results.json", folder)
    assert any(r.get("latency_histogram") for r in load_results(folder)["results"])
    _assert_renders_every_plot_twice_alike(folder)


def test_percentiles_from_a_histogram_increase_to_p99_9_and_keep_the_tail() -> None:
    points = plots.percentile_points({"latency_histogram": _histogram(2_000)})
    percentiles = [p for p, _ in points]
    latencies = [v for _, v in points]
    assert percentiles[0] == 0.0 and percentiles[-1] == 99.9
    assert all(a < b for a, b in itertools.pairwise(percentiles))
    assert all(a <= b for a, b in itertools.pairwise(latencies))
    assert sum(p >= 90 for p in percentiles) >= 20  # the tail is sampled, not one point
    assert latencies[-1] == pytest.approx(108_000, rel=0.01)  # the 999th of 1,000 values
    assert latencies[len(latencies) // 2] < 3_000  # the body stays where it was recorded


def test_percentiles_fall_back_to_the_cdf_samples_and_stop_at_p99_9() -> None:
    row = {"latency_cdf_us": [[50, 1000.0], [1, 200.0], [99.9, 4000.0], [100, 5000.0]]}
    assert plots.percentile_points(row) == [(1.0, 200.0), (50.0, 1000.0), (99.9, 4000.0)]
    assert plots.percentile_points({}) == []
    assert not plots.has_percentiles([{"latency_us": {}}])


def test_the_heatmap_and_bars_plot_the_ranking_key(tmp_path, monkeypatch) -> None:
    """What each cell and bar shows is the headroom the table ranks by; failing cells say so."""
    ranked = rank(_synthetic())
    texts: list[str] = []
    bars: list[float] = []
    import matplotlib.axes

    real_text, real_barh = matplotlib.axes.Axes.text, matplotlib.axes.Axes.barh

    def text(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return real_text(self, x, y, s, *args, **kwargs)

    def barh(self, y, width, *args, **kwargs):
        bars.append(list(width))
        return real_barh(self, y, width, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "text", text)
    monkeypatch.setattr(matplotlib.axes.Axes, "barh", barh)
    plots.matrix_heatmap(ranked, tmp_path / "h.png", LSST_RATE)
    cells = [t for t in texts if t.endswith("x") or "fails" in t or t == "n/a"]
    assert sorted(cells) == sorted(
        ["11.0x", "1.9x", "0.1x\nfails", "3.0x\nfails", "0.9x", "n/a", "n/a", "n/a", "n/a"]
    )
    plots.matrix_throughput(ranked, tmp_path / "t.png", LSST_RATE)
    assert bars[0] == [r["headroom"] for r in ranked]
