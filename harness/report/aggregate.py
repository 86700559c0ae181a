"""``alertbench aggregate out/tox``: the run JSONs the tox bench environments wrote, as one report.

``tox -m bench`` runs every ``bench-<transport>-<serializer>`` environment; each writes
``out/tox/<env>.json``, one ``workload-run`` results document (``alertbench run -o``). This reads
every ``*.json`` of a folder, refuses anything that is not such a document (a one-line
:class:`~alertbench.errors.ConfigError`, exit status 2 at the CLI), and writes one
``results.json`` with a row per transport x serialization (its key figures and the machine,
versions and commit of the run that produced it) and a ``report.md`` rendered from it, with a
latency plot when matplotlib is installed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alertbench.harness.environment import environment, git_commit
from alertbench.harness.report.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    command_line,
    load_results,
)

from alertbench.errors import ConfigError

KIND = "bench-aggregate"
REPORT_FILE = "report.md"
PLOT_FILE = "latency.png"


def _row(doc: dict[str, Any], source: Path) -> dict[str, Any]:
    lat = doc.get("latency_us") or {}
    env = doc.get("environment") or {}
    versions = env.get("versions") or {}
    try:
        return {
            "transport": str(doc["transport"]),
            "serializer": str(doc["serializer"]),
            "workload": str((doc.get("workload") or {}).get("name", "?")),
            "alerts_sent": int(doc["alerts_sent"]),
            "offered_alerts_per_second": float(doc["offered_alerts_per_second"]),
            "delivered_alerts_per_second": float(doc["delivered_alerts_per_second"]),
            "latency_ms": {k: float(v) / 1e3 for k, v in lat.items()},
            "within_60s_fraction": float(doc["within_60s_fraction"]),
            "lost": int(doc["lost"]),
            "duplicates": int(doc.get("duplicates", 0)),
            "aborted": doc.get("aborted") or None,
            "source": source.name,
            "machine": str(env.get("machine", "?")),
            "cpus": env.get("cpus"),
            "python": str(env.get("python", "?")),
            "versions": dict(versions),
            "git_commit": str(doc.get("git_commit", "unknown")),
            "when_utc": str(doc.get("when_utc", "?")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: not a complete alertbench run result (missing {exc})"
        ) from exc


def collect(folder: Path) -> list[dict[str, Any]]:
    """One row per run JSON in ``folder``, sorted by transport then serialization."""
    if not folder.exists():
        raise ConfigError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; give the folder the bench runs wrote")
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise ConfigError(f"{folder}: no run JSON (*.json) to aggregate; run 'tox -m bench'")
    rows = []
    for path in files:
        doc = load_results(path)
        if doc["kind"] != "workload-run":
            raise ConfigError(f"{path}: a {doc['kind']} result, not an 'alertbench run' result")
        rows.append(_row(doc, path))
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (r["transport"], r["serializer"])
        if key in seen:
            raise ConfigError(
                f"{folder}: {seen[key]} and {r['source']} both hold {key[0]} x {key[1]}"
            )
        seen[key] = r["source"]
    return sorted(rows, key=lambda r: (r["transport"], r["serializer"]))


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def render(doc: dict[str, Any]) -> str:
    """``report.md`` from the aggregate's ``results.json`` alone."""
    rows: Sequence[dict[str, Any]] = doc["rows"]
    lines = [
        "# Bench environments: every transport x serialization",
        "",
        f"{len(rows)} run(s) from `{doc['source']}`, aggregated {doc['when_utc']} at commit "
        f"{doc['git_commit'][:12]}. Command: `{doc['command']}`",
        "",
        "| transport | serialization | workload | alerts | offered/s | delivered/s | p50 ms "
        "| p90 ms | p99 ms | max ms | within 60 s | lost | duplicates |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        cells = [
            r["transport"],
            r["serializer"],
            r["workload"],
            f"{r['alerts_sent']:,}",
            _num(r["offered_alerts_per_second"]),
            _num(r["delivered_alerts_per_second"]),
            *(_num(lat[k]) if k in lat else "?" for k in ("p50", "p90", "p99", "max")),
            f"{r['within_60s_fraction'] * 100:.2f}%",
            f"{r['lost']:,}",
            f"{r['duplicates']:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    aborted = [r for r in rows if r["aborted"]]
    if aborted:
        lines += ["", *(f"- {r['source']} aborted: {r['aborted']}" for r in aborted)]
    lines += [
        "",
        "## Provenance of each run",
        "",
        "| run | machine | CPUs | Python | commit | when (UTC) | versions |",
        "|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(r["versions"].items()) if v)
        lines.append(
            f"| {r['source']} | {r['machine']} | {r['cpus']} | {r['python']} "
            f"| {r['git_commit'][:12]} | {r['when_utc']} | {versions} |"
        )
    if doc.get("plot"):
        lines += ["", f"![latency per transport x serialization]({doc['plot']})"]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    try:
        from alertbench.harness.report.plots import _pyplot, _save
    except ImportError:  # pragma: no cover - plots are optional
        return False
    try:
        plt = _pyplot()
    except ImportError:
        return False
    labels = [f"{r['transport']} x {r['serializer']}" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    y = range(len(rows))
    for key, colour in (("p99", "tab:red"), ("p50", "tab:blue")):
        ax.barh(list(y), [r["latency_ms"].get(key, 0.0) for r in rows], color=colour, label=key)
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("latency, ms (from each alert's intended send time)")
    ax.legend()
    _save(fig, path)
    return True


def aggregate(folder: Path, out: Path) -> Path:
    """Write ``out/results.json`` and ``out/report.md`` from the runs in ``folder``; the report."""
    rows = collect(folder)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "source": str(folder),
        "rows": rows,
        "environment": environment(),
        "command": command_line(),
        "git_commit": git_commit(),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plot": PLOT_FILE if plot(rows, out / PLOT_FILE) else None,
    }
    (out / RESULTS_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    report = out / REPORT_FILE
    report.write_text(render(doc))
    return report
