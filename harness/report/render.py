"""report.md (and its plots) from a results.json, one renderer per kind.

A report is a pure function of its results document: the same JSON gives the same bytes, so a
published report can always be checked by rendering it again (``alertbench report DIR``), and no
number in it is ever typed by hand. Renderers register by kind (:func:`renderer`); one that is
missing is an error, never a silent fallback to another kind's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alertbench.harness.report import plots
from alertbench.harness.report.plots import CDF_PNG, HEATMAP_PNG, SIZES_PNG, THROUGHPUT_PNG
from alertbench.harness.report.results import (
    BENCH_FILE,
    RESULTS_FILE,
    load_results,
    migrate,
)

from alertbench.errors import ConfigError

REPORT_FILE = "report.md"
LSST_RATE = 10_000 / 39.0
"""LSST's average alert rate: 10,000 alerts per ~39 s visit (DMTN-102)."""
VISIT_BUDGET_S = 60.0
"""A visit's alerts must be out within 60 s of shutter close."""

Renderer = Callable[[dict[str, Any], Path | None], str]
"""``fn(doc, out_dir) -> markdown``. The text never depends on ``out_dir``, which only says
where to draw the plots the text names (None: draw none), so ``render(doc)`` is what
``write_report`` writes."""
RENDERERS: dict[str, Renderer] = {}


def renderer(kind: str) -> Callable[[Renderer], Renderer]:
    """Register ``fn(doc, out_dir) -> markdown`` as the renderer of ``kind``; ``out_dir`` is
    where its plots go (None: draw none; the text is the same)."""

    def register(fn: Renderer) -> Renderer:
        RENDERERS[kind] = fn
        return fn

    return register


def render(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The Markdown report of a results document (migrated first, so old files render too)."""
    doc = migrate(doc)
    try:
        fn = RENDERERS[doc["kind"]]
    except KeyError:
        raise ConfigError(f"no report renderer for results of kind {doc['kind']!r}") from None
    return fn(doc, out_dir)


def write_report(folder: Path) -> Path:
    """``folder/report.md`` (and plots) from ``folder``'s results alone."""
    doc = load_results(folder)
    text = render(doc, folder)
    path = folder / REPORT_FILE
    path.write_text(text)
    return path


def write_reports(folder: Path) -> list[Path]:
    """The report of ``folder``, or of every run folder below it, at any depth (``alertbench
    report results/``); a folder with neither is a user's mistake."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder")
    if (folder / RESULTS_FILE).is_file() or (folder / BENCH_FILE).is_file():
        return [write_report(folder)]
    # Any depth: a study publishes its repeats as sub-folders (results/STUDY/before-1, ...).
    runs = sorted({p.parent for name in (RESULTS_FILE, BENCH_FILE) for p in folder.rglob(name)})
    if not runs:
        raise ConfigError(f"{folder} holds no {RESULTS_FILE}, nor any run folder that does")
    return [write_report(run) for run in runs]


# --------------------------------------------------------------------------- shared pieces


def _version(doc: dict[str, Any], name: str) -> str:
    return str(doc["environment"].get("versions", {}).get(name, "?"))


def provenance(doc: dict[str, Any]) -> list[str]:
    """Lines naming every library version and the resolved options, for documents that record
    them (files written before the schema recorded fewer; their reports stay as published)."""
    found = doc["environment"].get("versions", {})
    if "alertbench" not in found:
        return []
    lines = [
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(found.items()) if v) + ".",
        "",
    ]
    if doc["environment"].get("work_tree", "clean") != "clean":
        lines += [f"Work tree at the commit: {doc['environment']['work_tree']}.", ""]
    if doc.get("options"):
        lines += [
            "Options: " + ", ".join(f"`{k}={v}`" for k, v in sorted(doc["options"].items())) + ".",
            "",
        ]
    return lines


def run_header(doc: dict[str, Any], command: bool = True) -> list[str]:
    """The lines every report starts with: machine, Python, commit and time; the versions and
    options (:func:`provenance`); the command line."""
    env = doc["environment"]
    lines = [
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; Python "
        f"{env['python']}; commit {doc['git_commit'][:12]}; {doc['when_utc']}.",
        "",
        *provenance(doc),
    ]
    return [*lines, f"Command: `{doc['command']}`"] if command else lines


# --------------------------------------------------------------------------- matrix


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ordered: requirements met first (nothing lost, visit in budget), then by headroom."""
    for row in rows:
        reasons = []
        if row["lost"] > 0:
            reasons.append(f"lost {row['lost']:,} alerts")
        if row["decode_errors"]:
            reasons.append(f"{row['decode_errors']} undecodable")
        if row["visit_seconds_at_lsst_size"] > VISIT_BUDGET_S:
            reasons.append(
                f"a 10,000-alert visit takes {row['visit_seconds_at_lsst_size']:.0f} s "
                f"(> {VISIT_BUDGET_S:.0f} s)"
            )
        row["meets_requirements"] = not reasons
        row["fails_because"] = reasons
    return sorted(rows, key=lambda r: (not r["meets_requirements"], -r["headroom"]))


def explain(ranked: list[dict[str, Any]]) -> list[str]:
    """Sentences generated from the numbers, for the report."""
    lines = []
    passing = [r for r in ranked if r["meets_requirements"]]
    if passing:
        best = passing[0]
        if "max_sustainable_rate" in best:
            speed = (
                f"sustains {best['max_sustainable_rate']:,.0f} alerts/s "
                f"(bursts at {best['alerts_per_second']:,.0f}/s)"
            )
        else:
            speed = f"{best['alerts_per_second']:,.0f} alerts/s"
        lines.append(
            f"Fastest combination that meets the requirements: {best['transport']} x "
            f"{best['serializer']}, {speed}, "
            f"{best['headroom']:.1f}x LSST's average rate; a 10,000-alert visit would take "
            f"{best['visit_seconds_at_lsst_size']:.1f} s of the 60 s budget."
        )
    by_serializer: dict[str, list[dict]] = {}
    for r in ranked:
        by_serializer.setdefault(r["serializer"], []).append(r)
    for name, group in by_serializer.items():
        best = max(group, key=lambda r: r["headroom"])
        if "max_sustainable_rate" in best:
            speed = f"sustains {best['max_sustainable_rate']:,.0f} alerts/s"
        else:
            speed = f"{best['alerts_per_second']:,.0f} alerts/s"
        lines.append(
            f"{name}: {group[0]['bytes_per_alert'] / 1e3:,.0f} KB per alert, best "
            f"{speed} ({best['transport']}); "
            f"{best['cores_per_stream_at_lsst_rate']:.2f} cores per full stream at LSST's rate."
        )
    replayable = sorted({r["transport"] for r in ranked if r["capabilities"]["replay"]})
    lines.append(
        "Transports that let a broker replay what it missed: " + ", ".join(replayable) + "."
    )
    for r in ranked:
        if not r["meets_requirements"]:
            lines.append(
                f"{r['transport']} x {r['serializer']} fails: "
                + "; ".join(r["fails_because"])
                + "."
            )
    return lines


@renderer("matrix")
def render_matrix(doc: dict[str, Any], out_dir: Path | None) -> str:
    """Every plot of the matrix shows the ranking key or explains it: the heatmap and the bars
    plot headroom itself, so a picture never ranks by another number than the table does."""
    ranked = rank(doc["results"])
    if out_dir is not None:
        plots.matrix_heatmap(ranked, out_dir / HEATMAP_PNG, LSST_RATE)
        plots.matrix_throughput(ranked, out_dir / THROUGHPUT_PNG, LSST_RATE)
        if plots.has_percentiles(ranked):
            plots.matrix_percentiles(ranked, out_dir / CDF_PNG)
        plots.matrix_sizes(ranked, out_dir / SIZES_PNG, LSST_RATE)
    return render_matrix_report(doc, ranked, THROUGHPUT_PNG)


def render_matrix_report(
    data: dict[str, Any], ranked: list[dict[str, Any]], plot_name: str = THROUGHPUT_PNG
) -> str:
    """The matrix's Markdown from its document and its ranked rows."""
    doc = migrate(data)
    env = doc["environment"]
    sustained = any("max_sustainable_rate" in r for r in ranked)
    separate = all(r.get("subscriber_peak_rss_mb") for r in ranked)
    basis = (
        "headroom = maximum sustainable rate (searched as OpenMessaging does: constant offered "
        "rates, nothing lost, <=1% of alerts sent >50 ms late, p99 <= 1 s) over LSST's average "
        if sustained
        else "headroom over LSST's average "
    )
    lines = [
        "# alertbench matrix: transports x serializations, ranked against LSST",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; Python "
        f"{env['python']}; confluent-kafka {_version(doc, 'confluent-kafka')} (librdkafka "
        f"{_version(doc, 'librdkafka')}), Apache Kafka {_version(doc, 'kafka')} (1 broker, "
        f"KRaft); commit {doc['git_commit'][:12]}; {doc['when_utc']}.",
        "",
        *provenance(doc),
        f"Command: `{doc['command']}`",
        "",
        f"Each combination: one burst of {doc['alerts_per_combination']:,} realistic Rubin "
        "alerts (a pool of simulated alerts cycled with unique ids), encoded by the publisher "
        + (
            "and decoded by one subscriber in a process of its own (2 cores shared by "
            "publisher, subscriber and servers). "
            if separate
            else "and decoded by one subscriber in the same process (2 cores shared with the "
            "servers). "
        )
        + "Latency runs from the intended send time to after decode. Requirements: nothing lost, "
        "a 10,000-alert visit out within 60 s; then ranked by "
        f"{basis}rate ({LSST_RATE:.0f} alerts/s). Cores and bandwidth are per full stream at "
        "that rate.",
        "",
        "![headroom per transport and serialization (hatched: fails the requirements)]"
        f"({HEATMAP_PNG})",
        "",
        "| rank | transport | serializer | meets | alerts/s | "
        + ("max sustainable/s | " if sustained else "")
        + "headroom | MB/s | KB/alert | p50 ms | p99 ms | lost | cores/stream | Mbit/s/stream | "
        "replay |",
        "| ---: | --- | --- | --- | ---: | "
        + ("---: | " if sustained else "")
        + "---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(ranked, 1):
        lat = r["latency_us"]
        lines.append(
            f"| {i} | {r['transport']} | {r['serializer']} | "
            f"{'yes' if r['meets_requirements'] else 'no'} | {r['alerts_per_second']:,.0f} | "
            + (f"{r.get('max_sustainable_rate', 0):,.0f} | " if sustained else "")
            + f"{r['headroom']:.1f}x | {r['megabytes_per_second']:,.1f} | "
            f"{r['bytes_per_alert'] / 1e3:,.0f} | {lat['p50'] / 1e3:,.0f} | "
            f"{lat['p99'] / 1e3:,.0f} | {r['lost']:,} | {r['cores_per_stream_at_lsst_rate']:.2f} | "
            f"{r['mbit_per_stream_at_lsst_rate']:,.0f} | "
            f"{'yes' if r['capabilities']['replay'] else 'no'} |"
        )
    lines += ["", "## What the numbers say", ""]
    lines += [f"- {s}" for s in explain(ranked)]
    lines += ["", f"![headroom in rank order, and p50/p99 latency]({plot_name})", ""]
    if plots.has_percentiles(ranked):
        lines += [f"![latency by percentile to p99.9 per combination]({CDF_PNG})", ""]
    lines += [f"![bytes per alert and bandwidth per stream]({SIZES_PNG})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- kafka-visit

KAFKA_VISIT_PNG = "codecs.png"


@renderer("kafka-visit")
def render_kafka_visit(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """One visit through Kafka per compression codec, ranked by alerts/s."""
    doc = migrate(doc)
    env = doc["environment"]
    rows = sorted(doc["results"], key=lambda r: -r["alerts_per_second"])
    lines = [
        "# One LSST visit through Kafka, by compression codec",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; "
        f"Python {env['python']}, "
        f"confluent-kafka {_version(doc, 'confluent-kafka')} (librdkafka "
        f"{_version(doc, 'librdkafka')}), "
        f"Apache Kafka {_version(doc, 'kafka')} (1 broker, KRaft); commit "
        f"{doc['git_commit'][:12]}; {doc['when_utc']}.",
        "",
        *provenance(doc),
        f"Command: `{doc['command']}`",
        "",
        "Ranked by alerts/s. LSST's average rate is 10,000 alerts per 39 s visit (256 alerts/s); "
        "a visit must be out within 60 s of shutter close. Latency is send -> receive on one "
        "clock, in milliseconds.",
        "",
        "| rank | compression | alerts | received | alerts/s | x LSST rate | MB/s | "
        "visit out in (s) | p50 ms | p99 ms | max ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rank_, r in enumerate(rows, 1):
        lat = r["latency_us"]
        lines.append(
            f"| {rank_} | {r['options'].get('compression', '?')} | {r['alerts_sent']:,} | "
            f"{r['alerts_received']:,} | {r['alerts_per_second']:,.0f} | "
            f"{r['alerts_per_second'] / LSST_RATE:.1f} | {r['megabytes_per_second']:,.1f} | "
            f"{r['end_to_end_seconds']:.1f} | {lat['p50'] / 1000:,.1f} | "
            f"{lat['p99'] / 1000:,.1f} | {lat['max'] / 1000:,.1f} |"
        )
    best = rows[0]
    lines += [
        "",
        f"Fastest: {best['options'].get('compression')} at {best['alerts_per_second']:,.0f} "
        f"alerts/s, {best['alerts_per_second'] / LSST_RATE:.1f}x LSST's average rate, "
        f"the visit out in {best['end_to_end_seconds']:.1f} s "
        f"({'within' if best['end_to_end_seconds'] <= VISIT_BUDGET_S else 'over'} the 60 s "
        "budget). One producer and one consumer share two cores with the broker here, so these "
        "are a floor for a real deployment, not a ceiling.",
        "",
    ]
    if out_dir is not None:
        plots.rate_and_latency(
            rows,
            [str(r["options"].get("compression", "?")) for r in rows],
            out_dir / KAFKA_VISIT_PNG,
            "One visit through Kafka, by compression codec",
            LSST_RATE,
        )
    lines += [f"![alerts/s and latency per codec]({KAFKA_VISIT_PNG})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- vtp

VTP_PNG = "transports.png"


@renderer("vtp")
def render_vtp(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The same VOEvent packets through tcp, Kafka, a VTP broker and Comet."""
    doc = migrate(doc)
    env, rows = doc["environment"], doc["results"]
    base = next(r for r in rows if r["name"].startswith("tcp"))
    lines = [
        "# VTP's cost: the same VOEvent packets through tcp, Kafka, our VTP broker and Comet",
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, {env['platform']}; Python "
        f"{env['python']}; commit {doc['git_commit'][:12]}; {doc['when_utc']}. "
        f"Command: `{doc['command']}`.",
        "",
        *provenance(doc),
        f"{doc['alerts']:,} distinct VOEvent 2.0 packets (cutouts by reference, mean "
        f"{base['payload_bytes'] / doc['alerts'] / 1e3:,.1f} KB), one author/publisher and one "
        "subscriber in one process, inside a loopback-only network namespace. VTP counts both "
        "hops (author to broker, broker to subscriber) with every ack and iamalive; tcp counts "
        "its one hop's frames; Kafka's wire bytes are not measured. Comet runs with its frame "
        "limit raised to 16 MiB.",
        "",
        "| transport | received | alerts/s | x tcp | wire bytes/alert | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lat = r["latency_us"]
        wire = f"{r['wire_bytes_per_alert']:,.0f}" if r["wire_bytes_per_alert"] else "n/a"
        lines.append(
            f"| {r['name']} | {r['alerts_received']:,} | {r['alerts_per_second']:,.0f} | "
            f"{r['alerts_per_second'] / base['alerts_per_second']:.3f} | {wire} | "
            f"{lat['p50'] / 1e3:,.1f} | {lat['p99'] / 1e3:,.1f} | {lat['max'] / 1e3:,.1f} |"
        )
    lines.append("")
    for r in rows:
        if r["name"].startswith("vtp") and r["alerts_per_second"]:
            hours = 1e7 / r["alerts_per_second"] / 3600
            lines.append(
                f"- {r['name']}: {r['alerts_per_second']:,.0f} alerts/s; a night of 10^7 alerts "
                f"would take {hours:,.1f} h on one connection (a night is ~10 h)."
            )
    lines.append("")
    if out_dir is not None:
        plots.rate_and_latency(
            rows,
            [r["name"].replace(": ", ":\n").replace(" (", "\n(") for r in rows],
            out_dir / VTP_PNG,
            "The same VOEvent packets, by transport",
            LSST_RATE,
        )
    lines += [f"![alerts/s and latency per transport]({VTP_PNG})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- minibroker


@renderer("minibroker")
def render_minibroker(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """Many users' filters over one visit: evaluation time and the service's throughput."""
    r = migrate(doc)
    ev, sv, env = r["evaluation_ms"], r["service"], r["environment"]
    dec = r["decode_us_per_alert"]
    lines = [
        f"# Mini-broker: {r['filters']} filters of {r['users']} users over a "
        f"{r['alerts']:,}-alert visit",
        "",
        f"Command: `{r['command']}`. Machine: {env.get('machine', '?')}, "
        f"{env.get('cpus', '?')} CPUs, Python {env.get('python', '?')}. Generated from "
        "results.json by `alertbench minibroker bench`; medians of "
        f"{r['repeats']} repeats where repeated.",
        "",
        *provenance(r),
        f"Native engine batch threads: {r.get('native_threads', 'auto')} (auto: two for "
        "large batches on a 2-CPU machine).",
        "",
        "| measure | value |",
        "| --- | ---: |",
        *(
            [
                "| columns for the visit: native columnar decode of the encoded alerts, "
                f"projected onto the {ev['columns_decoded']} columns the filters read | "
                f"{ev['columns_median']:,.1f} ms |",
                "| the same columns built from decoded dicts (the reference path) | "
                f"{ev['columns_from_dicts_median']:,.1f} ms |",
            ]
            if "columns_decoded" in ev
            else [f"| build columns from decoded alerts | {ev['columns_median']:,.1f} ms |"]
        ),
        f"| evaluate all {r['filters']} filters | {ev['filters_median']:,.1f} ms |",
        f"| both (per visit) | {ev['total_median']:,.1f} ms |",
        f"| per alert per filter | {ev['ns_per_alert_per_filter']:,.1f} ns |",
        f"| decode one alert in full | {dec['full_median']:,.0f} µs |",
        f"| decode one alert projected onto the {dec['fields_read_by_filters']} fields the "
        f"filters read | {dec['projected_median']:,.0f} µs |",
        f"| service throughput (Kafka in, decode, filter, deliver) | "
        f"{sv['alerts_per_second']:,.0f} alerts/s |",
        f"| ...of which decoding | {sv['decode_seconds']:,.2f} s |",
        f"| ...of which filtering | {sv['evaluate_seconds']:,.2f} s |",
        f"| ...of which delivering (VOEvent encoding, VTP, Kafka) | "
        f"{sv['deliver_seconds']:,.2f} s |",
        f"| a full visit through the service | {r['service_visit_seconds']} s |",
        f"| service rate / LSST average rate | {r['service_over_lsst_rate']}x |",
        f"| alerts delivered (VTP events received / Kafka) | {r['vtp_events_received']:,} / "
        f"{r['kafka_delivered']:,} |",
        f"| alerts truncated by the per-visit cap | {sum(sv['truncated'].values()):,} |",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- serializers

SERIALIZERS_PNG = "ratios.png"


@renderer("serializers")
def render_serializers(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """Every codec on the same alerts (pytest-benchmark medians), relative to Rubin Avro."""
    doc = migrate(doc)
    ratios = doc.get("serializer_ratios_vs_avro") or {}
    per_round = {
        b["extra_info"].get("alerts_per_round")
        for b in doc.get("benchmarks", [])
        if b.get("extra_info", {}).get("alerts_per_round")
    }
    count = f"{next(iter(per_round)):,} " if len(per_round) == 1 else ""
    lines = [
        "# Serializers: every codec on the same simulated Rubin alerts",
        "",
        *run_header(doc, command=False),
        f"pytest-benchmark medians over the same {count}alerts, per alert; ratios are to Rubin "
        "Avro in the same variant (with cutouts embedded, and without).",
        "",
    ]
    for variant, rows in ratios.items():
        lines += [
            f"## {variant}",
            "",
            "| codec | bytes/alert | encode µs | decode µs | bytes x avro | encode x avro | "
            "decode x avro |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(
                f"| {r['codec']} | {r['bytes_per_alert']:,.0f} | {r['encode_us']:,.0f} | "
                f"{r['decode_us']:,.0f} | {r['bytes_vs_avro']:.3f} | {r['encode_vs_avro']:.2f} | "
                f"{r['decode_vs_avro']:.2f} |"
            )
        lines.append("")
    if ratios:
        if out_dir is not None:
            plots.serializer_ratios(ratios, out_dir / SERIALIZERS_PNG)
        lines += [f"![bytes, encode and decode time relative to Avro]({SERIALIZERS_PNG})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- workload-run


@renderer("workload-run")
def render_workload_run(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """A paced workload over one transport and serialization (``alertbench run``)."""
    doc = migrate(doc)
    workload = doc.get("workload", {})
    lat = doc["latency_us"]
    lines = [
        f"# Workload {workload.get('name', '?')}: {doc.get('transport', doc.get('transport_url'))}"
        f" x {doc.get('serializer', '?')}",
        "",
        *run_header(doc),
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| alerts offered | {doc['alerts_sent']:,} |",
        f"| offered rate | {doc.get('offered_alerts_per_second', 0):,.0f} alerts/s |",
        f"| delivered rate | {doc.get('delivered_alerts_per_second', 0):,.0f} alerts/s |",
        f"| subscribers | {workload.get('subscribers', '?')} |",
        f"| lost | {doc['lost']:,} |",
        f"| duplicates | {doc.get('duplicates', 0):,} |",
        f"| decode errors | {doc.get('decode_errors', 0):,} |",
        f"| sent behind schedule | {doc.get('sent_behind_schedule', 0):,} |",
        f"| latency p50 / p99 / max | {lat['p50'] / 1e3:,.1f} / {lat['p99'] / 1e3:,.1f} / "
        f"{lat['max'] / 1e3:,.1f} ms |",
        f"| within 60 s | {doc.get('within_60s_fraction', 0) * 100:.2f}% |",
        f"| cores per stream at LSST's rate | {doc.get('cores_per_stream_at_lsst_rate', 0):.2f} |",
    ]
    if doc.get("acknowledged") is not None:
        lines += [
            f"| published | {doc['alerts_published']:,} |",
            f"| acknowledged | {doc['acknowledged']:,} |",
            f"| not acknowledged | {doc['unacknowledged']:,} |",
            f"| acknowledged, not delivered | {doc['lost_acknowledged']:,} |",
        ]
    lines.append("")
    if doc.get("aborted"):
        lines += [f"Aborted: {doc['aborted']}", ""]
    roles = doc.get("processes") or {}
    threads = doc.get("roles") == "threads" or any(
        s.get("peak_rss_mb") is None for s in roles.get("subscribers", [])
    )
    if roles.get("publisher") and not threads:
        lines += [
            "CPU seconds and peak memory per role (each subscriber a process of its own):",
            "",
            "| role | CPU s | peak MB |",
            "| --- | ---: | ---: |",
            f"| publisher | {roles['publisher']['cpu_seconds']:.1f} | "
            f"{roles['publisher']['peak_rss_mb']:,.0f} |",
        ]
        for i, sub in enumerate(roles.get("subscribers", []), start=1):
            lines.append(
                f"| subscriber {i} | {sub['cpu_seconds']:.1f} | {sub['peak_rss_mb']:,.0f} |"
            )
        lines += [f"| servers | {roles.get('servers_cpu_seconds', 0.0):.1f} | |", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- max-rate

MAX_RATE_PNG = "steps.png"


@renderer("max-rate")
def render_max_rate(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The maximum-rate search of one transport x serialization, step by step."""
    doc = migrate(doc)
    lines = [
        f"# Maximum sustainable rate: {doc.get('transport', '?')} x {doc['serializer']}",
        "",
        *run_header(doc),
        "",
        f"Maximum sustainable rate: {doc['max_sustainable_rate']:,.0f} alerts/s = "
        f"{doc['max_sustainable_rate'] / LSST_RATE:.2f}x LSST's average rate (nothing lost, "
        f"<=1% of alerts sent late, p99 <= {doc.get('latency_bound_s', '?')} s; steps of "
        f"{doc.get('seconds_per_step', '?')} s).",
        "",
        "| step | offered alerts/s | sent | received | late | p99 ms | max ms | sustained |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, s in enumerate(doc["steps"], 1):
        lines.append(
            f"| {i} | {s['rate']:,.0f} | {s['sent']:,} | {s['received']:,} | "
            f"{s['late_fraction']:.1%} | {s['p99_ms']:,.0f} | {s['max_ms']:,.0f} | "
            f"{'yes' if s['sustainable'] else 'no'} |"
        )
    lines.append("")
    if doc["steps"]:
        if out_dir is not None:
            plots.max_rate_steps(doc["steps"], out_dir / MAX_RATE_PNG, LSST_RATE)
        lines += [f"![the search's steps]({MAX_RATE_PNG})", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- codecs

CODECS_PNG = "codecs.png"


@renderer("codecs")
def render_codecs(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """Every codec and engine per realistic alert (alertbench codec-bench)."""
    from alertbench.harness.codec_bench import render_codecs as text

    if out_dir is not None:
        plots.codec_costs(doc["rows"], out_dir / CODECS_PNG)
    return text(doc, run_header(doc)) + f"\n![encode and decode µs per alert]({CODECS_PNG})\n"


# --------------------------------------------------------------------------- xml-compression


@renderer("xml-compression")
def render_xml_compression(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """Compressed VOEvent XML, per message and in Kafka (alertbench bench xml-compression)."""
    from alertbench.harness import xml_compression

    if out_dir is not None:
        xml_compression.plot(doc, out_dir / xml_compression.PNG)
    return xml_compression.render(doc, run_header(doc))


# --------------------------------------------------------------------------- bench-aggregate


@renderer("bench-aggregate")
def render_bench_aggregate(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The tox bench environments' runs as one table (alertbench aggregate)."""
    from alertbench.harness.report import aggregate

    if out_dir is not None and doc.get("plot"):
        aggregate.plot(doc["rows"], out_dir / aggregate.PLOT_FILE)
    return aggregate.render(doc)


@renderer("capacity")
def render_capacity(doc: dict[str, Any], out_dir: Path | None = None) -> str:
    """The three-layer run (alertbench capacity); its tables and plots live with it."""
    from alertbench.harness.report import capacity_report

    return capacity_report.render(doc, out_dir, [*run_header(doc), ""])
