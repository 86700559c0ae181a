"""The reports' plots (matplotlib, Agg: no display needed), drawn from results alone.

Each function takes rows as they are in a results.json and a path, and writes one PNG without
a timestamp or software tag, so the same JSON gives the same image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

THROUGHPUT_PNG = "throughput-latency.png"
CDF_PNG = "latency-cdf.png"
SIZES_PNG = "sizes.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _pyplot().close(fig)


def matrix_cdf(ranked: Sequence[dict[str, Any]], path: Path) -> None:
    """End-to-end latency CDF of every combination (the tail is where they differ)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = {"avro": "-", "protobuf": "--", "voevent": ":", "voevent3": "-."}
    for r in ranked:
        points = r.get("latency_cdf_us") or []
        if not points:
            continue
        ax.plot(
            [v / 1e3 for _, v in points],
            [p for p, _ in points],
            styles.get(r["serializer"], "-"),
            label=f"{r['transport']} x {r['serializer']}",
            linewidth=1.2,
        )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency, ms (intended send time to after decode)")
    ax.set_ylabel("percentile of alerts")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.set_title("Latency CDF per transport x serialization")
    _save(fig, path)


def matrix_sizes(ranked: Sequence[dict[str, Any]], path: Path, lsst_rate: float) -> None:
    """Bytes per alert and bandwidth per full stream at LSST's rate, per serialization."""
    plt = _pyplot()
    by_serializer: dict[str, dict[str, Any]] = {}
    for r in ranked:
        by_serializer.setdefault(r["serializer"], r)
    names = sorted(by_serializer)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax1.bar(names, [by_serializer[n]["bytes_per_alert"] / 1e3 for n in names], color="tab:blue")
    ax1.set_ylabel("KB per alert")
    ax1.set_title("Alert size")
    ax2.bar(
        names,
        [by_serializer[n]["mbit_per_stream_at_lsst_rate"] for n in names],
        color="tab:orange",
    )
    ax2.set_ylabel("Mbit/s per full stream")
    ax2.set_title(f"Bandwidth at LSST's rate ({lsst_rate:.0f} alerts/s)")
    _save(fig, path)


def matrix_throughput(ranked: Sequence[dict[str, Any]], path: Path, lsst_rate: float) -> None:
    """Burst alerts/s (green: meets the requirements) and p50/p99 latency per combination."""
    plt = _pyplot()
    labels = [f"{r['transport']}\n{r['serializer']}" for r in ranked]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(ranked) * 0.6), 8))
    colors = ["tab:green" if r["meets_requirements"] else "tab:red" for r in ranked]
    ax1.bar(range(len(ranked)), [r["alerts_per_second"] for r in ranked], color=colors)
    ax1.axhline(lsst_rate, color="k", linestyle="--", label=f"LSST average ({lsst_rate:.0f}/s)")
    ax1.set_ylabel("alerts/s (burst)")
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(ranked)), labels, fontsize=7)
    ax1.legend()
    ax1.set_title("Throughput (green: meets requirements)")
    _latency_bars(ax2, ranked, labels)
    _save(fig, path)


def _spans_decades(values: Sequence[float]) -> bool:
    """A log axis only when the values span more than ~an order of magnitude: on a narrow range
    log-scaled bars exaggerate small differences."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > 20


def _latency_bars(
    ax: Any, rows: Sequence[dict[str, Any]], labels: list[str], log: bool | None = True
) -> None:
    ax.bar(
        [i - 0.2 for i in range(len(rows))],
        [r["latency_us"]["p50"] / 1e3 for r in rows],
        width=0.4,
        label="p50",
    )
    ax.bar(
        [i + 0.2 for i in range(len(rows))],
        [r["latency_us"]["p99"] / 1e3 for r in rows],
        width=0.4,
        label="p99",
    )
    values = [r["latency_us"][p] for r in rows for p in ("p50", "p99")]
    if log is None:
        log = _spans_decades(values)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("end-to-end latency, ms")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.legend()


def rate_and_latency(
    rows: Sequence[dict[str, Any]],
    labels: list[str],
    path: Path,
    title: str,
    lsst_rate: float | None = None,
) -> None:
    """Alerts/s and p50/p99 latency of a few named runs (kafka-visit codecs, vtp transports)."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7, len(rows) * 1.6), 7))
    ax1.bar(range(len(rows)), [r["alerts_per_second"] for r in rows], color="tab:blue")
    if lsst_rate is not None:
        ax1.axhline(lsst_rate, color="k", linestyle="--", label=f"LSST average ({lsst_rate:.0f}/s)")
        ax1.legend()
    ax1.set_ylabel("alerts/s")
    if _spans_decades([r["alerts_per_second"] for r in rows]):
        ax1.set_yscale("log")
    ax1.set_xticks(range(len(rows)), labels, fontsize=8)
    ax1.set_title(title)
    _latency_bars(ax2, rows, labels, log=None)
    _save(fig, path)


def serializer_ratios(ratios: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Bytes, encode and decode time of each codec relative to Rubin Avro, per variant."""
    plt = _pyplot()
    variants = list(ratios)
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4), squeeze=False)
    measures = (
        ("bytes_vs_avro", "bytes"),
        ("encode_vs_avro", "encode"),
        ("decode_vs_avro", "decode"),
    )
    for ax, variant in zip(axes[0], variants, strict=True):
        rows = ratios[variant]
        width = 0.8 / len(measures)
        for k, (key, label) in enumerate(measures):
            ax.bar(
                [i + (k - 1) * width for i in range(len(rows))],
                [r[key] for r in rows],
                width=width,
                label=label,
            )
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(rows)), [r["codec"] for r in rows])
        ax.set_ylabel("x Rubin Avro")
        ax.set_title(f"{variant}")
        ax.legend(fontsize=8)
    _save(fig, path)


def max_rate_steps(steps: Sequence[dict[str, Any]], path: Path, lsst_rate: float) -> None:
    """Each offered rate of the search and its p99 latency (green: sustained)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(
        [s["rate"] for s in steps],
        [max(s["p99_ms"], 1e-3) for s in steps],
        c=["tab:green" if s["sustainable"] else "tab:red" for s in steps],
    )
    for i, s in enumerate(steps, 1):
        ax.annotate(str(i), (s["rate"], max(s["p99_ms"], 1e-3)), fontsize=7)
    ax.axvline(lsst_rate, color="k", linestyle="--", label=f"LSST average ({lsst_rate:.0f}/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate, alerts/s (numbers: order of the search)")
    ax.set_ylabel("p99 latency, ms")
    ax.legend()
    ax.set_title("Maximum-rate search (green: sustained)")
    _save(fig, path)


def codec_costs(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Encode and decode µs per alert of each codec (log scale: XML and native differ 50x),
    with the fastest-slowest pass as an error bar."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 1.1), 4.5))
    width = 0.38
    for k, (key, label) in enumerate((("encode_us", "encode"), ("decode_us", "decode"))):
        med = [r[key]["median"] for r in rows]
        spread = [
            [m - r[key]["min"] for m, r in zip(med, rows, strict=True)],
            [r[key]["max"] - m for m, r in zip(med, rows, strict=True)],
        ]
        ax.bar(
            [i + (k - 0.5) * width for i in range(len(rows))],
            med,
            width=width,
            yerr=spread,
            capsize=2,
            label=label,
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r["codec"] for r in rows], rotation=25, ha="right")
    ax.set_ylabel("µs per alert (median, log)")
    ax.legend(fontsize=8)
    _save(fig, path)
