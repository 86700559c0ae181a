"""The reports' plots (matplotlib, Agg: no display needed), drawn from results alone.

Each function takes rows as they are in a results.json and a path, and writes one PNG without
a timestamp or software tag, so the same JSON gives the same image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEATMAP_PNG = "headroom-heatmap.png"
THROUGHPUT_PNG = "throughput-latency.png"
"""Headroom (the ranking key) and p50/p99 latency; the name predates headroom being plotted."""
CDF_PNG = "latency-cdf.png"
"""The latency distribution, by percentile on a tail-stretching axis (an inverse CDF)."""
SIZES_PNG = "sizes.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, bottom_inches: float = 0.0) -> None:
    """``bottom_inches`` is kept free below the axes for a figure legend (one outside the axes
    never covers a bar or a line)."""
    fig.tight_layout(rect=(0, bottom_inches / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _pyplot().close(fig)


def _label(row: dict[str, Any]) -> str:
    return f"{row['transport']} × {row['serializer']}"


def _plain(unit: str = "") -> Any:
    """Log-axis ticks as 1, 10, 100 (ms, or 0.1x, 1x, 10x), not 10^0, 10^1: read at a glance,
    not decoded."""
    import matplotlib.ticker

    return matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}{unit}")


def _in_order(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """Names in a fixed order (the known ones first, as listed, then the rest sorted), so a
    transport keeps its colour and its place from one report to the next."""
    unique = sorted(set(names))
    return [n for n in known if n in unique] + [n for n in unique if n not in known]


TRANSPORTS = ("kafka", "grpc", "zmq-pubsub", "zmq-pushpull", "tcp", "vtp")
SERIALIZERS = ("avro", "protobuf", "json", "voevent", "voevent3")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _sustained(rows: Sequence[dict[str, Any]]) -> bool:
    return bool(rows) and all("max_sustainable_rate" in r for r in rows)


def _headroom_basis(rows: Sequence[dict[str, Any]], lsst_rate: float) -> str:
    """What headroom divides, in words: the plots say which rate the ranking used."""
    rate = "maximum sustainable rate" if _sustained(rows) else "burst alerts/s"
    return f"headroom = {rate} / LSST's average ({lsst_rate:.0f} alerts/s)"


def matrix_heatmap(ranked: Sequence[dict[str, Any]], path: Path, lsst_rate: float) -> None:
    """The ranking key (headroom) of every transport × serialization in one grid: which
    transport, which serialization and which pair is best reads off at a glance, a pair that
    fails the requirements is hatched whatever its speed (it ranks below every pair that meets
    them), and a pair the run did not try is grey, not a low score."""
    import matplotlib
    import numpy as np

    plt = _pyplot()
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ranked:  # the best-ranked row of a pair, should a run hold it twice
        cells.setdefault((r["transport"], r["serializer"]), r)
    transports = _in_order([t for t, _ in cells], TRANSPORTS)
    serializers = _in_order([s for _, s in cells], SERIALIZERS)
    grid = np.full((len(transports), len(serializers)), np.nan)
    for (t, s), r in cells.items():
        grid[transports.index(t), serializers.index(s)] = r["headroom"]
    values = [v for v in grid.flat if v == v] or [1.0]
    positive = [v for v in values if v > 0] or [1.0]
    low, high = min(positive), max(positive)
    if _spans_decades(values):
        norm: Any = matplotlib.colors.LogNorm(low, high)
    else:
        low, high = (low * 0.9, high * 1.1) if low == high else (low, high)
        norm = matplotlib.colors.Normalize(0.0 if min(values) <= 0 else low, high)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e0e0e0")
    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * len(serializers), 1.6 + 0.65 * len(transports)))
    shown = np.ma.masked_invalid(np.clip(grid, low, None) if norm.vmin > 0 else grid)
    image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto")
    for i, t in enumerate(transports):
        for j, s in enumerate(serializers):
            row = cells.get((t, s))
            if row is None:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="#606060")
                continue
            red, green, blue, _ = cmap(norm(shown[i, j]))
            ink = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"
            text = f"{row['headroom']:.1f}x"
            if not row["meets_requirements"]:
                text += "\nfails"
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor=ink,
                        linewidth=0, alpha=0.5,
                    )
                )  # fmt: skip
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color=ink,
                    fontweight="bold")  # fmt: skip
    ax.set_xticks(range(len(serializers)), serializers, fontsize=10)
    ax.set_yticks(range(len(transports)), transports, fontsize=10)
    ax.set_xlabel("serialization")
    ax.set_ylabel("transport")
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax, pad=0.03)
    bar.set_label("headroom (x LSST's average rate)")
    if isinstance(norm, matplotlib.colors.LogNorm):
        bar.ax.yaxis.set_major_formatter(_plain("x"))
    notes = []
    if not all(r["meets_requirements"] for r in cells.values()):
        notes.append("hatched: fails the requirements")
    if len(cells) < len(transports) * len(serializers):
        notes.append("n/a: not run")
    if norm.vmin <= 1.0 <= norm.vmax:
        bar.ax.axhline(1.0, color="red", linewidth=1.5)
        notes.append("red line: 1x")
    ax.set_title("\n".join([_headroom_basis(ranked, lsst_rate), "; ".join(notes)]).strip(),
                 fontsize=9)  # fmt: skip
    _save(fig, path)


PERCENTILE_GRID = tuple(round(100 * (1 - 10 ** (-k / 20)), 6) for k in range(61))
"""Percentiles evenly spaced on the 1/(1-q) axis, 20 per decade, from 0 to 99.9: the tail gets
as many points as the body, where a linear grid would spend them all below p90."""


def has_percentiles(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any row carries a latency distribution to draw (older runs kept only p50/p99)."""
    return any(r.get("latency_histogram") or r.get("latency_cdf_us") for r in rows)


def percentile_points(row: dict[str, Any]) -> list[tuple[float, float]]:
    """``[(percentile, latency_us), ...]`` up to p99.9, increasing in percentile.

    Read from the row's HdrHistogram when it has one (any percentile, so the tail is sampled as
    finely as the body; never above the recorded maximum, which a bucket's upper edge can pass),
    else from its coarser ``latency_cdf_us`` samples. Beyond p99.9 a run of a few thousand
    alerts holds a handful of values, too few to draw a line through.
    """
    from alertbench.harness.metrics import LatencyHistogram

    encoded = row.get("latency_histogram")
    if encoded:
        histogram = LatencyHistogram.from_dict(encoded)
        if histogram.count:
            top = float(max(histogram.max_us, 0))
            return [(p, min(histogram.percentile(p), top)) for p in PERCENTILE_GRID]
    points = sorted((float(p), float(v)) for p, v in row.get("latency_cdf_us") or [] if p <= 99.9)
    return [pt for k, pt in enumerate(points) if k == 0 or pt[0] > points[k - 1][0]]


def _tail_axis(q: float) -> float:
    return 1.0 / (1.0 - q / 100.0)


def matrix_percentiles(ranked: Sequence[dict[str, Any]], path: Path) -> None:
    """Latency by percentile, HdrHistogram's way: x is 1/(1-q) on a log axis, so p90, p99 and
    p99.9 are as far apart as p0 and p90 (a linear CDF squeezes the whole tail, where the
    combinations differ, into its top pixel). The legend has a column of its own, in rank order,
    so it never covers a line."""
    plt = _pyplot()
    fig, (ax, key) = plt.subplots(1, 2, figsize=(11, 5.5), gridspec_kw={"width_ratios": [3, 1.25]})
    transports = _in_order([r["transport"] for r in ranked], TRANSPORTS)
    serializers = _in_order([r["serializer"] for r in ranked], SERIALIZERS)
    colours = plt.get_cmap("tab10")
    lines, labels = [], []
    for rank, r in enumerate(ranked, 1):
        points = percentile_points(r)
        if not points:
            continue
        (line,) = ax.plot(
            [_tail_axis(p) for p, _ in points],
            [max(v, 1.0) / 1e3 for _, v in points],  # 0 µs (a clock fault) at the 1 µs floor
            linestyle=LINESTYLES[serializers.index(r["serializer"]) % len(LINESTYLES)],
            color=colours(transports.index(r["transport"]) % 10),
            linewidth=1.4,
        )
        lines.append(line)
        fails = "" if r.get("meets_requirements", True) else ", fails"
        labels.append(f"{rank}. {_label(r)} ({r['headroom']:.1f}x{fails})")
    ticks = (50.0, 90.0, 99.0, 99.9)
    ax.set_xscale("log")
    ax.set_xlim(1.0, _tail_axis(99.9))
    ax.set_xticks([_tail_axis(q) for q in ticks], [f"{q:g}%" for q in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain())
    ax.set_xlabel("percentile of alerts (log 1/(1-q) axis)")
    ax.set_ylabel("end-to-end latency, ms (intended send time to after decode)")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.set_title("Latency by percentile per transport × serialization")
    key.axis("off")
    key.legend(lines, labels, loc="center left", fontsize=7, frameon=False,
               title="rank. combination (headroom)", title_fontsize=8)  # fmt: skip
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
    """The ranking key (headroom) per combination, in rank order, beside its p50/p99 latency.

    Bars are horizontal with one ``transport × serialization`` label each, so twenty-odd labels
    stack instead of overlapping; the plotted length is what the table ranks by (not burst
    alerts/s, which a max-rate run does not rank by), with LSST's 1x marked.
    """
    import matplotlib

    plt = _pyplot()
    n = len(ranked)
    fig, (ax1, ax2) = plt.subplots(
        1, 2, sharey=True, figsize=(11, 1.6 + 0.32 * max(n, 4)),
        gridspec_kw={"width_ratios": [1.3, 1]},
    )  # fmt: skip
    ys = list(range(n))
    headroom = [r["headroom"] for r in ranked]
    meets = [r["meets_requirements"] for r in ranked]
    ax1.barh(
        ys,
        headroom,
        color=["tab:green" if m else "tab:red" for m in meets],
        hatch=["" if m else "//" for m in meets],
        edgecolor="white",
        height=0.7,
    )
    ax1.axvline(1.0, color="k", linestyle="--", linewidth=1)
    if _spans_decades(headroom):
        ax1.set_xscale("log")
        ax1.xaxis.set_major_formatter(_plain("x"))
        ax1.set_xlim(min(v for v in headroom if v > 0) / 1.5, max(headroom) * 2.0)
    else:
        ax1.set_xlim(0, max([*headroom, 1.0]) * 1.18)
    for y, v in zip(ys, headroom, strict=True):
        ax1.annotate(f"{v:.1f}x", (v, y), xytext=(3, 0), textcoords="offset points",
                     va="center", fontsize=7,
                     bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # fmt: skip
    ax1.set_yticks(ys, [f"{i}. {_label(r)}" for i, r in enumerate(ranked, 1)], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel(_headroom_basis(ranked, lsst_rate), fontsize=8)
    ax1.set_title("Ranking key: headroom (rank order)", fontsize=10)
    patch = matplotlib.patches.Patch
    handles = [
        patch(color="tab:green", label="meets the requirements"),
        patch(facecolor="tab:red", hatch="//", edgecolor="white", label="fails them"),
    ]
    _latency_barh(ax2, ranked)
    keys = [
        *(h for h, shown in zip(handles, (any(meets), not all(meets)), strict=True) if shown),
        matplotlib.lines.Line2D([], [], color="k", linestyle="--", label="LSST average, 1x"),
        *ax2.get_legend_handles_labels()[0],
    ]
    fig.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=8, frameon=False)
    _save(fig, path, bottom_inches=0.35)


def _latency_barh(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    """p50 and p99 as horizontal bar pairs, on the rows of the headroom panel beside it."""
    for offset, name in ((-0.2, "p50"), (0.2, "p99")):
        ax.barh(
            [i + offset for i in range(len(rows))],
            [max(r["latency_us"][name], 1.0) / 1e3 for r in rows],
            height=0.4,
            label=f"latency {name}",
        )
    if _spans_decades([r["latency_us"][p] for r in rows for p in ("p50", "p99")]):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_plain())
    ax.set_xlabel("end-to-end latency, ms")
    ax.set_title("Latency p50 / p99", fontsize=10)
    ax.grid(True, axis="x", which="major", alpha=0.3)


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
