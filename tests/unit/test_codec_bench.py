"""codec-bench's results document and report, on a tiny pool (structure, never timings)."""

from __future__ import annotations

from alertbench.harness.codec_bench import CODECS, STOCK_VTP_FRAME, render_codecs, run_codec_bench


def test_every_codec_is_measured_with_its_size_distribution() -> None:
    doc = run_codec_bench(n_alerts=4, seed=3, repeats=1, announce=lambda *_: None)
    assert [r["codec"] for r in doc["rows"]] == [label for label, _, _ in CODECS]
    for row in doc["rows"]:
        sizes = row["bytes"]
        assert 0 < sizes["median"] <= sizes["p99"] <= sizes["max"]
        assert 0.0 <= sizes["fit_stock_vtp"] <= 1.0
    by_codec = {r["codec"]: r["bytes"] for r in doc["rows"]}
    # Embedded cutouts never fit a stock VTP frame; the compact mode always does.
    assert by_codec["voevent (XML)"]["fit_stock_vtp"] == 0.0
    assert by_codec["voevent (compact)"]["max"] <= STOCK_VTP_FRAME
    report = render_codecs(doc, ["provenance line"])
    assert "## Message sizes" in report and "fits a stock VTP frame" in report
