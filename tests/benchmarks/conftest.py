"""Ratios against Avro, computed from the medians of the same benchmark run."""

from __future__ import annotations


def _serializer_rows(config, variant: str) -> dict[tuple[str, str], dict]:
    session = getattr(config, "_benchmarksession", None)
    rows: dict[tuple[str, str], dict] = {}
    for bench in getattr(session, "benchmarks", []) if session else []:
        info = bench.extra_info
        if "codec" in info and bench.stats and info.get("variant") == variant:
            rows[(info["codec"], info["phase"])] = {
                "us_per_alert": bench.stats.median / info["alerts_per_round"] * 1e6,
                "bytes": info["bytes_per_alert_mean"],
            }
    return rows


def _ratios(rows: dict[tuple[str, str], dict]) -> list[dict]:
    out = []
    codecs = sorted({codec for codec, _ in rows})
    base_enc, base_dec = rows.get(("avro", "encode")), rows.get(("avro", "decode"))
    for codec in codecs:
        enc, dec = rows.get((codec, "encode")), rows.get((codec, "decode"))
        if not (enc and dec and base_enc and base_dec):
            continue
        out.append(
            {
                "codec": codec,
                "bytes_per_alert": enc["bytes"],
                "encode_us": enc["us_per_alert"],
                "decode_us": dec["us_per_alert"],
                "bytes_vs_avro": enc["bytes"] / base_enc["bytes"],
                "encode_vs_avro": enc["us_per_alert"] / base_enc["us_per_alert"],
                "decode_vs_avro": dec["us_per_alert"] / base_dec["us_per_alert"],
            }
        )
    return out


VARIANTS = ("full", "no-cutouts")


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    output_json["serializer_ratios_vs_avro"] = {
        v: _ratios(_serializer_rows(config, v)) for v in VARIANTS
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for variant in VARIANTS:
        _print(terminalreporter, variant, _ratios(_serializer_rows(config, variant)))


def _print(tr, variant: str, ratios: list[dict]) -> None:
    if not ratios:
        return
    tr.write_sep("-", f"serializers per alert, {variant} (medians, same run), vs avro")
    tr.write_line(
        f"{'codec':<10}{'bytes':>10}{'enc µs':>10}{'dec µs':>10}{'bytes×':>9}{'enc×':>8}{'dec×':>8}"
    )
    for r in ratios:
        tr.write_line(
            f"{r['codec']:<10}{r['bytes_per_alert']:>10,.0f}{r['encode_us']:>10,.0f}"
            f"{r['decode_us']:>10,.0f}{r['bytes_vs_avro']:>9.2f}{r['encode_vs_avro']:>8.2f}"
            f"{r['decode_vs_avro']:>8.2f}"
        )
