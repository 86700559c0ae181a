"""What each codec costs per realistic alert, every engine measured in the same run.

The codec, not the network, bounds an alert stream: a Rubin alert is ~130 KB, 87% cutouts, but
almost all of a codec's time goes on the ~3,800 light-curve values. This runs every registered
serialization (and every Avro engine: native, cavro, fastavro) over the same simulated alerts,
one after another in this process (never concurrently: the timings are CPU-bound on a small
machine), and reports microseconds per alert to encode, to decode to dicts and, for the native
engine, to decode a batch into columns; bytes per alert; alerts per second per core for encode
plus decode; and the ratios to cavro and fastavro. Each figure is the median of ``repeats``
passes over the pool, with the fastest and slowest pass beside it.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from alertbench.harness.pool import alert_pool
from alertbench.refimpl import _native
from alertbench.refimpl.codecs import get_serializer
from alertbench.refimpl.codecs.columns import decode_columns

CODECS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # (label, serializer name, options)
    ("avro (native)", "avro", {"engine": "native"}),
    ("avro (cavro)", "avro", {"engine": "cavro"}),
    ("avro (fastavro)", "avro", {"engine": "fastavro"}),
    ("protobuf (native)", "protobuf", {"engine": "native"}),
    ("protobuf (upb)", "protobuf", {"engine": "upb"}),
    ("json", "json", {}),
    ("voevent (XML)", "voevent", {}),
    ("voevent (compact)", "voevent", {"mode": "compact"}),
    ("voevent3 (native)", "voevent3", {"engine": "native"}),
    ("voevent3 (cavro)", "voevent3", {"engine": "cavro"}),
    ("voevent3-json", "voevent3", {"binding": "json"}),
    ("voevent3-protobuf", "voevent3", {"binding": "protobuf"}),
)
TARGETS = {"encode": 10.0, "decode": 2.5, "columns": 8.0}
"""The native engine's targets: this many times faster than cavro per alert (issue 13)."""
TARGET_ALERTS_PER_CORE = 2_000
TARGET_PROTOBUF_DECODE = 3.0
NATIVE_THREADS_ENV = "ALERTBENCH_NATIVE_THREADS"
"""Set to 1 for a run whose columnar figure is per core (the engine parses large batches on two
threads otherwise); read once, when the engine first parses a batch."""
"""Protobuf decode: this many times faster than the upb-plus-Python conversion (issue 13)."""


def _timed(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, float]:
    """µs per alert of ``fn`` (one pass over ``n`` alerts): median, min, max of ``repeats``."""
    fn()  # warm-up: lazily built plans, caches
    passes = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        passes.append((time.perf_counter() - t0) / n * 1e6)
    return {
        "median": statistics.median(passes),
        "min": min(passes),
        "max": max(passes),
        "passes": passes,
    }


STOCK_VTP_FRAME = 99_999
"""The largest frame a stock Twisted-based VTP peer (Comet 3.1.0) accepts; larger ones it drops
without a word (transports/vtp.py)."""


def _sizes(encoded: list[bytes]) -> dict[str, float]:
    """The distribution of message sizes: a mean hides the alerts that do not fit a frame."""
    sizes = sorted(len(e) for e in encoded)
    return {
        "median": statistics.median(sizes),
        "p99": sizes[min(len(sizes) - 1, int(0.99 * len(sizes)))],
        "max": sizes[-1],
        "fit_stock_vtp": sum(1 for n in sizes if n <= STOCK_VTP_FRAME) / len(sizes),
    }


def run_codec_bench(
    n_alerts: int = 100, seed: int = 11, repeats: int = 5, announce: Any = print
) -> dict[str, Any]:
    """Every codec over the same ``n_alerts`` simulated alerts; the results payload."""
    announce(f"simulating {n_alerts} realistic alerts (seed {seed})...")
    alerts = alert_pool(n_alerts, seed)
    rows: list[dict[str, Any]] = []
    for label, name, options in CODECS:
        announce(f"  {label}")
        codec = get_serializer(name, **options)
        encoded = [codec.dumps(a) for a in alerts]
        row: dict[str, Any] = {
            "codec": label,
            "serializer": name,
            "options": options,
            "bytes_per_alert": statistics.mean(len(e) for e in encoded),
            "bytes": _sizes(encoded),
            "encode_us": _timed(lambda c=codec: [c.dumps(a) for a in alerts], n_alerts, repeats),
            "decode_us": _timed(lambda c=codec, e=encoded: [c.loads(m) for m in e], n_alerts,
                                repeats),
        }  # fmt: skip
        if name == "avro" and options.get("engine") == "native":
            row["columns_us"] = _timed(lambda e=encoded: decode_columns(e), n_alerts, repeats)
        row["alerts_per_second_per_core"] = 1e6 / (
            row["encode_us"]["median"] + row["decode_us"]["median"]
        )
        rows.append(row)
    by_label = {r["codec"]: r for r in rows}
    native, cav, fast = (by_label[f"avro ({e})"] for e in ("native", "cavro", "fastavro"))
    ratios = {
        "encode_vs_cavro": cav["encode_us"]["median"] / native["encode_us"]["median"],
        "decode_vs_cavro": cav["decode_us"]["median"] / native["decode_us"]["median"],
        "columns_vs_cavro": cav["decode_us"]["median"] / native["columns_us"]["median"],
        "encode_vs_fastavro": fast["encode_us"]["median"] / native["encode_us"]["median"],
        "decode_vs_fastavro": fast["decode_us"]["median"] / native["decode_us"]["median"],
        "columns_vs_fastavro": fast["decode_us"]["median"] / native["columns_us"]["median"],
        "protobuf_decode_vs_upb": by_label["protobuf (upb)"]["decode_us"]["median"]
        / by_label["protobuf (native)"]["decode_us"]["median"],
        "protobuf_encode_vs_upb": by_label["protobuf (upb)"]["encode_us"]["median"]
        / by_label["protobuf (native)"]["encode_us"]["median"],
    }
    targets = {
        "encode": ratios["encode_vs_cavro"] >= TARGETS["encode"],
        "decode": ratios["decode_vs_cavro"] >= TARGETS["decode"],
        "columns": ratios["columns_vs_cavro"] >= TARGETS["columns"],
        "alerts_per_core": native["alerts_per_second_per_core"] >= TARGET_ALERTS_PER_CORE,
        "protobuf_decode": ratios["protobuf_decode_vs_upb"] >= TARGET_PROTOBUF_DECODE,
    }
    return {
        "alerts": n_alerts,
        "seed": seed,
        # What the native engine did in this process, which every engine shares: its
        # thread count for batches, and whether it set glibc to keep freed heap (cavro and
        # fastavro, measured in the same process, benefit from that too).
        "native_threads": os.environ.get(NATIVE_THREADS_ENV, "auto (2 for large batches)"),
        "native_malloc_keeps_freed": bool(_native.MALLOC_KEEPS_FREED),
        "repeats": repeats,
        "rows": rows,
        "native_ratios": ratios,
        "targets": {
            "ratios_vs_cavro": TARGETS,
            "alerts_per_core": TARGET_ALERTS_PER_CORE,
            "protobuf_decode_vs_upb": TARGET_PROTOBUF_DECODE,
        },
        "targets_met": targets,
    }


def render_codecs(doc: dict[str, Any], provenance: list[str]) -> str:
    """The Markdown report of a codecs run, from its results document alone."""
    rows = doc["rows"]
    lines = [
        f"# Codec cost per realistic Rubin alert ({doc['alerts']} simulated alerts, seed "
        f"{doc['seed']})",
        "",
        *provenance,
        "",
        f"Microseconds per alert, median of {doc['repeats']} passes over the pool "
        "(fastest–slowest pass in brackets), every codec in the same run, one after another. "
        "Columns: a batch of the pool decoded into numpy columns by the native engine.",
        "",
        f"Native engine: batch threads {doc.get('native_threads', 'auto')}; glibc keeps freed "
        f"heap: {'yes' if doc.get('native_malloc_keeps_freed') else 'no'} (process-wide, so "
        "the references measured here share it).",
        "",
        "| codec | bytes | encode µs | decode µs | columns µs | encode+decode alerts/s/core |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(t: dict[str, float] | None) -> str:
        if not t:
            return "–"
        return f"{t['median']:,.0f} ({t['min']:,.0f}–{t['max']:,.0f})"

    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['bytes_per_alert']:,.0f} | {cell(r['encode_us'])} | "
            f"{cell(r['decode_us'])} | {cell(r.get('columns_us'))} | "
            f"{r['alerts_per_second_per_core']:,.0f} |"
        )
    if all("bytes" in r for r in rows):  # runs before the size distribution was recorded
        lines += [
            "",
            "## Message sizes",
            "",
            f"Bytes per message over the {doc['alerts']} alerts; the last column is the share "
            f"a stock Twisted-based VTP peer (Comet 3.1.0) accepts: frames of at most "
            f"{STOCK_VTP_FRAME:,} bytes (larger ones it drops silently).",
            "",
            "| codec | median | p99 | max | fits a stock VTP frame |",
            "| --- | ---: | ---: | ---: | ---: |",
            *(
                f"| {r['codec']} | {r['bytes']['median']:,.0f} | {r['bytes']['p99']:,.0f} | "
                f"{r['bytes']['max']:,.0f} | {r['bytes']['fit_stock_vtp']:.0%} |"
                for r in rows
            ),
        ]
    q = doc["native_ratios"]
    met = doc["targets_met"]
    goal = doc["targets"]["ratios_vs_cavro"]
    native = next(r for r in rows if r["codec"] == "avro (native)")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines += [
        "",
        "## The native engine against the references, in this run",
        "",
        f"- Encode: {q['encode_vs_cavro']:.1f}x cavro, {q['encode_vs_fastavro']:.1f}x fastavro "
        f"(target ≥ {goal['encode']:g}x cavro: {verdict(met['encode'])}).",
        f"- Decode to dicts: {q['decode_vs_cavro']:.1f}x cavro, {q['decode_vs_fastavro']:.1f}x "
        f"fastavro (target ≥ {goal['decode']:g}x cavro: {verdict(met['decode'])}).",
        f"- Columnar decode: {q['columns_vs_cavro']:.1f}x cavro's dict decode, "
        f"{q['columns_vs_fastavro']:.1f}x fastavro's (target ≥ {goal['columns']:g}x cavro: "
        f"{verdict(met['columns'])}).",
        f"- Encode + decode: {native['alerts_per_second_per_core']:,.0f} alerts/s on one core "
        f"(target ≥ {doc['targets']['alerts_per_core']:,}: {verdict(met['alerts_per_core'])}).",
        f"- Protobuf decode, native vs upb plus the Python conversion: "
        f"{q['protobuf_decode_vs_upb']:.1f}x (target ≥ "
        f"{doc['targets']['protobuf_decode_vs_upb']:g}x: {verdict(met['protobuf_decode'])}).",
        *(
            [
                "- Protobuf encode, native vs upb's generated classes: "
                f"{q['protobuf_encode_vs_upb']:.1f}x."
            ]
            if "protobuf_encode_vs_upb" in q
            else []
        ),
        "",
    ]
    return "\n".join(lines)
