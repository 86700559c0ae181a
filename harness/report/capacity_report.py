"""The report of a ``capacity`` run: three layers and the cores a peak visit needs, from
results.json alone (so ``alertbench report`` on the folder gives the same bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alertbench.harness.report.plots import _pyplot, _save

CAPACITY_PNG = "capacity.png"
CORES_PNG = "cores-for-peak.png"


def _spread(s: dict[str, Any], fmt: str = ",.0f") -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def plot_capacity(rows: list[dict[str, Any]], peak_rate: float, path: Path) -> None:
    """Each transport's alerts/s beside its raw library's, medians with min–max error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(rows) + 1.8))
    ys = range(len(rows))
    for offset, key, color, label in (
        (-0.2, None, "tab:blue", "transport"),
        (0.2, "raw", "tab:gray", "raw library"),
    ):
        med, lo, hi, at = [], [], [], []
        for y, r in zip(ys, rows, strict=True):
            s = (
                r["alerts_per_second"]
                if key is None
                else (r.get("raw") or {}).get("alerts_per_second")
            )
            if not s:
                continue
            at.append(y + offset)
            med.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
        ax.barh(at, med, height=0.38, xerr=[lo, hi], color=color, label=label, capsize=3)
    ax.axvline(
        peak_rate,
        color="k",
        linestyle="--",
        label=f"peak visit to every broker ({peak_rate:.0f}/s)",
    )
    ax.set_yticks(
        list(ys), [f"{r['transport']}\nvs {r.get('baseline') or '—'}" for r in rows], fontsize=8
    )
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(
        f"alerts/s to each of {rows[0]['subscribers']} subscribers (pre-encoded, median, min–max)"
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Transport capacity beside its raw library")
    _save(fig, path)


def plot_cores(rows: list[dict[str, Any]], cpus: int, path: Path) -> None:
    """Cores a peak visit needs per transport x serialization, stacked by role."""
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: r["total_cores"])
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.8))
    ys = list(range(len(rows)))
    pub = [r["publisher_cores"] for r in rows]
    brokers = [r["total_cores"] - r["publisher_cores"] - r["server_cores"] for r in rows]
    server = [r["server_cores"] for r in rows]
    ax.barh(ys, pub, color="tab:blue", label="publisher (encode once, send to all)")
    ax.barh(ys, brokers, left=pub, color="tab:orange", label="brokers (receive, decode)")
    ax.barh(ys, server, left=[a + b for a, b in zip(pub, brokers, strict=True)], color="tab:gray",
            label="server (Kafka)")  # fmt: skip
    ax.axvline(cpus, color="k", linestyle="--", label=f"this machine ({cpus} cores)")
    ax.set_yticks(ys, [f"{r['transport']} × {r['serializer']}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("cores for a 40,000-alert visit in 60 s (log)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Cores a peak visit needs, by role")
    _save(fig, path)


def render(doc: dict[str, Any], out_dir: Path | None, header: list[str]) -> str:
    """The report's Markdown (``header``: the run's machine, command and provenance lines, from
    the renderer every kind shares), and its plots into ``out_dir`` when given."""
    p = doc
    caps, codecs, cores, e2e = p["capacity"], p["codecs"], p["cores_for_peak"], p["end_to_end"]
    if out_dir is not None:
        plot_capacity(caps, p["peak_rate"], out_dir / CAPACITY_PNG)
        if cores:
            plot_cores(cores, p["cpus"], out_dir / CORES_PNG)
    n, subs = p["alerts_per_run"], p["subscribers"]
    lines = [
        "# alertbench capacity: codec, transport and end to end, measured apart",
        "",
        *header,
        f"Every figure is the median of {p['repeats']} runs with its min–max; the transport and "
        "its raw library are interleaved run by run, so a ratio compares runs minutes apart on "
        f"the same machine ({p['cpus']} cores shared by every process).",
        "",
        "## (a) Codec cost per alert",
        "",
        f"{p['pool_size']} simulated alerts (seed {p['seed']}), one core, default engines.",
        "",
        "| codec | bytes/alert | encode µs | decode µs | encode+decode alerts/s per core |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in codecs:
        both = c["encode_us"]["median"] + c["decode_us"]["median"]
        lines.append(
            f"| {c['codec']} | {c['bytes_per_alert']:,.0f} | {_spread(c['encode_us'])} | "
            f"{_spread(c['decode_us'])} | {1e6 / both:,.0f} |"
        )
    lines += [
        "",
        f"## (b) Transport capacity: pre-encoded, one publisher, {subs} subscriber processes",
        "",
        f"A burst of {n:,} pre-encoded alerts per run to each of {subs} full-stream subscribers "
        "(shared consumption for push/pull: the subscribers split them); alerts/s from the first "
        "send to the last receipt; CPU µs per alert per role. The raw library moves the same "
        "payloads with nothing of ours around them (harness/raw.py).",
        "",
        "| transport | payload | KB | alerts/s | raw library | raw alerts/s | ratio | target | "
        f"lost | publisher µs | subscriber µs | ≥ {p['peak_rate']:.0f}/s to each |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in caps:
        raw = r.get("raw")
        target = r.get("efficiency_target")
        met = r.get("meets_efficiency")
        holds = r["holds_peak_rate"]
        lines.append(
            f"| {r['transport']} | {r['payload_codec']} | {r['bytes_per_alert'] / 1e3:,.0f} | "
            f"{_spread(r['alerts_per_second'])} | {r.get('baseline') or '—'} | "
            + (f"{_spread(raw['alerts_per_second'])} | {_spread(r['ratio_to_raw'], '.2f')} | "
               if raw else "— | — | ")
            + (f"{target:.1f}x {'met' if met else 'not met'} | " if target else "— | ")
            + f"{sum(r['lost']):,} | {_spread(r['publisher_cpu_us_per_alert'])} | "
            f"{_spread(r['subscriber_cpu_us_per_alert'])} | "
            + ("shared" if holds is None else "yes" if holds else "no")
            + " |"
        )  # fmt: skip
    lines += ["", f"![capacity beside the raw libraries]({CAPACITY_PNG})", ""]
    lines += _cores_section(p, cores)
    lines += _e2e_section(p, e2e)
    lines += ["## What the numbers say", "", *[f"- {s}" for s in explain(p)], ""]
    return "\n".join(lines)


def _cores_section(p: dict[str, Any], cores: list[dict[str, Any]]) -> list[str]:
    subs = p["subscribers"]
    lines = [
        f"## Cores for a peak visit: {p['peak_visit_alerts']:,} alerts in "
        f"{p['visit_budget_s']:.0f} s to {subs} brokers",
        "",
        "Derived from (a) and (b): the publisher encodes each alert once and sends it to every "
        "broker; each broker receives and decodes every alert. Transport CPU per alert is "
        "measured with the payload of (b) and scaled by bytes to each serialization's size, as "
        "is the rate the transport carries. Fits: publisher and each broker within one core "
        f"and the transport carrying {p['peak_rate']:.0f}/s to every broker.",
        "",
        "| transport | serializer | KB | publisher cores | cores per broker | server cores | "
        "total cores | Mbit/s per broker | fits one core per role | fits this machine |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in cores:
        lines.append(
            f"| {r['transport']} | {r['serializer']} | {r['bytes_per_alert'] / 1e3:,.0f} | "
            f"{r['publisher_cores']:.2f} | {r['broker_cores']:.2f} | {r['server_cores']:.2f} | "
            f"{r['total_cores']:.2f} | {r['mbit_per_broker']:,.0f} | "
            f"{'yes' if r['fits_one_core_per_role'] else 'no'} | "
            f"{'yes' if r['fits_this_machine'] else 'no'} |"
        )
    if cores:
        lines += ["", f"![cores a peak visit needs]({CORES_PNG})", ""]
    return lines


def _e2e_section(p: dict[str, Any], e2e: list[dict[str, Any]]) -> list[str]:
    if not e2e:
        return ["## (c) End to end", "", "Not run (`--end-to-end-seconds 0`).", ""]
    lines = [
        "## (c) End to end, codec in the loop: maximum sustainable rate",
        "",
        f"Constant offered rates of {p['end_to_end_seconds_per_step']:g} s each, doubling then "
        "bisecting, to one subscriber process; sustainable: nothing lost, <=1% of alerts sent "
        ">50 ms late, p99 <= 1 s. Ranked by that rate over LSST's average "
        f"({p['lsst_rate']:.0f}/s).",
        "",
        "| rank | transport | serializer | max sustainable alerts/s | headroom over LSST | steps |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(e2e, 1):
        lines.append(
            f"| {i} | {r['transport']} | {r['serializer']} | {r['max_sustainable_rate']:,.0f} | "
            f"{r['headroom_over_lsst']:.2f}x | {len(r['steps'])} |"
        )
    return [*lines, ""]


def explain(p: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers (nothing typed by hand)."""
    out = []
    for r in p["capacity"]:
        if r.get("ratio_to_raw") and r.get("efficiency_target"):
            ratio, target = r["ratio_to_raw"]["median"], r["efficiency_target"]
            out.append(
                f"{r['transport']} moves {ratio:.2f}x what raw {r['baseline']} moves "
                f"(target {target:.1f}x: {'met' if ratio >= target else 'not met'})."
            )
        if r["holds_peak_rate"] is False:
            out.append(
                f"{r['transport']} carries {r['alerts_per_second']['median']:,.0f} alerts/s to "
                f"each of {r['subscribers']} subscribers, below the {p['peak_rate']:.0f}/s a "
                "peak visit needs."
            )
        if sum(r["lost"]):
            out.append(f"{r['transport']} lost {sum(r['lost']):,} alerts across its runs.")
    fits = [c for c in p["cores_for_peak"] if c["fits_one_core_per_role"]]
    if fits:
        best = min(fits, key=lambda c: c["total_cores"])
        out.append(
            f"Cheapest combination that fits one core per role: {best['transport']} × "
            f"{best['serializer']}, {best['total_cores']:.2f} cores in all for a peak visit "
            f"({best['publisher_cores']:.2f} publisher, {best['broker_cores']:.2f} per broker)."
        )
    costly = [c for c in p["cores_for_peak"] if not c["fits_one_core_per_role"]]
    if costly:
        names = sorted({c["serializer"] for c in costly if c["publisher_cores"] > 1})
        if names:
            out.append(
                "The publisher (encoding once, sending to every broker) needs more than one core "
                "for a peak visit with: "
                + ", ".join(names) + "."
            )  # fmt: skip
    return out
