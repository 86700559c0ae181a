"""``alertbench compare A B``: the ratios (B/A) of the key figures of two runs of one kind.

Each kind names its key figures once (:data:`FIGURES`): for a matrix, per transport x serializer,
alerts/s, p50 and p99 latency, alerts lost and bytes per alert (and the maximum sustainable rate
when both runs searched it). Two runs of different kinds have no figures in common and are
refused, not compared field by field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alertbench.harness.report.results import load_results

from alertbench.errors import ConfigError

Figures = dict[str, dict[str, float]]
"""``{row key: {figure name: value}}``, e.g. ``{"tcp x avro": {"alerts/s": 512.0}}``."""

FIGURES: dict[str, Callable[[dict[str, Any]], Figures]] = {}


def figures(kind: str) -> Callable[[Callable[[dict[str, Any]], Figures]], Any]:
    def register(fn: Callable[[dict[str, Any]], Figures]) -> Callable[[dict[str, Any]], Figures]:
        FIGURES[kind] = fn
        return fn

    return register


def _latency(row: dict[str, Any]) -> dict[str, float]:
    lat = row.get("latency_us", {})
    return {"p50 ms": lat.get("p50", math.nan) / 1e3, "p99 ms": lat.get("p99", math.nan) / 1e3}


@figures("matrix")
def _matrix(doc: dict[str, Any]) -> Figures:
    out: Figures = {}
    for r in doc["results"]:
        row = {"alerts/s": r["alerts_per_second"], **_latency(r)}
        row["lost"] = r["lost"]
        row["bytes/alert"] = r["bytes_per_alert"]
        if "max_sustainable_rate" in r:
            row["max sustainable/s"] = r["max_sustainable_rate"]
        out[f"{r['transport']} x {r['serializer']}"] = row
    return out


@figures("kafka-visit")
def _kafka_visit(doc: dict[str, Any]) -> Figures:
    return {
        str(r["options"].get("compression", "?")): {
            "alerts/s": r["alerts_per_second"],
            "MB/s": r["megabytes_per_second"],
            **_latency(r),
            "lost": r["alerts_sent"] - r["alerts_received"],
        }
        for r in doc["results"]
    }


@figures("vtp")
def _vtp(doc: dict[str, Any]) -> Figures:
    return {
        r["name"]: {
            "alerts/s": r["alerts_per_second"],
            **_latency(r),
            "lost": r["alerts_sent"] - r["alerts_received"],
            "wire bytes/alert": r.get("wire_bytes_per_alert") or math.nan,
        }
        for r in doc["results"]
    }


@figures("minibroker")
def _minibroker(doc: dict[str, Any]) -> Figures:
    ev, dec, sv = doc["evaluation_ms"], doc["decode_us_per_alert"], doc["service"]
    return {
        "filters": {
            "evaluate ms": ev["filters_median"],
            "columns ms": ev["columns_median"],
            "ns/alert/filter": ev["ns_per_alert_per_filter"],
        },
        "decode": {"full µs": dec["full_median"], "projected µs": dec["projected_median"]},
        "service": {"alerts/s": sv["alerts_per_second"], "deliver s": sv["deliver_seconds"]},
    }


@figures("serializers")
def _serializers(doc: dict[str, Any]) -> Figures:
    return {
        f"{r['codec']} ({variant})": {
            "bytes/alert": r["bytes_per_alert"],
            "encode µs": r["encode_us"],
            "decode µs": r["decode_us"],
        }
        for variant, rows in (doc.get("serializer_ratios_vs_avro") or {}).items()
        for r in rows
    }


@figures("workload-run")
def _workload_run(doc: dict[str, Any]) -> Figures:
    return {
        str(doc.get("workload", {}).get("name", "run")): {
            "delivered/s": doc.get("delivered_alerts_per_second", math.nan),
            **_latency(doc),
            "lost": doc["lost"],
        }
    }


@figures("max-rate")
def _max_rate(doc: dict[str, Any]) -> Figures:
    key = f"{doc.get('transport', '?')} x {doc['serializer']}"
    return {key: {"max sustainable/s": doc["max_sustainable_rate"]}}


@dataclass
class Line:
    key: str
    figure: str
    a: float | None
    b: float | None

    @property
    def ratio(self) -> float | None:
        """B/A; None when either side is missing, 1 when both are 0, inf when only A is."""
        if self.a is None or self.b is None or math.isnan(self.a) or math.isnan(self.b):
            return None
        if self.a == 0:
            return 1.0 if self.b == 0 else math.inf
        return self.b / self.a


@dataclass
class Comparison:
    kind: str
    a: str
    b: str
    lines: list[Line]


def compare(a: Path, b: Path) -> Comparison:
    """The key figures of runs ``a`` and ``b`` (folders or results files), side by side."""
    doc_a, doc_b = load_results(a), load_results(b)
    if doc_a["kind"] != doc_b["kind"]:
        raise ConfigError(
            f"cannot compare a {doc_a['kind']} run ({a}) with a {doc_b['kind']} run ({b}): "
            "compare runs of the same kind"
        )
    kind = doc_a["kind"]
    extract = FIGURES.get(kind)
    if extract is None:
        raise ConfigError(f"no key figures are defined for results of kind {kind!r}")
    fig_a, fig_b = extract(doc_a), extract(doc_b)
    lines = []
    for key in [*fig_a, *(k for k in fig_b if k not in fig_a)]:
        row_a, row_b = fig_a.get(key, {}), fig_b.get(key, {})
        for name in [*row_a, *(n for n in row_b if n not in row_a)]:
            lines.append(Line(key, name, row_a.get(name), row_b.get(name)))
    return Comparison(kind, str(a), str(b), lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    whole = isinstance(value, int) or float(value).is_integer()  # counts: lost, bytes
    return f"{value:,.0f}" if whole or abs(value) >= 100 else f"{value:,.2f}"


def format_comparison(comparison: Comparison) -> str:
    """A plain-text table: one line per key figure, B/A last (``-``: only in one run)."""
    header = ("run", "figure", "A", "B", "B/A")
    rows = [
        (
            line.key,
            line.figure,
            _number(line.a),
            _number(line.b),
            "-" if line.ratio is None else f"{line.ratio:.3f}x",
        )
        for line in comparison.lines
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        left = [str(c).ljust(w) for c, w in zip(row[:2], widths[:2], strict=True)]
        right = [str(c).rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    return "\n".join(
        [
            f"{comparison.kind}: A = {comparison.a}, B = {comparison.b}",
            fmt(header),
            *(fmt(r) for r in rows),
        ]
    )
