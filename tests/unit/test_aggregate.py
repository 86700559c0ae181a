"""``alertbench aggregate``: real ``alertbench run`` outputs (tcp on 127.0.0.1, 20 alerts each)
gathered into one results.json and report.md; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alertbench.harness.cli import main

TINY = """\
name: tiny
description: one visit of 20 alerts, one subscriber
visits: 1
alerts_per_visit: 20
alerts_per_visit_sigma: 0.0
cadence_s: 1.0
burst_window_s: 0.2
ccds: 4
time_compression: 1.0
subscribers: 1
alert_pool: 5
seed: 3
cutout_fraction: 0.0
"""

SERIALIZERS = ("avro", "json", "protobuf")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``out/tox``-like: what ``alertbench run -o <env>.json`` writes, one file per combination."""
    root = tmp_path_factory.mktemp("bench")
    workload = root / "tiny.yaml"
    workload.write_text(TINY)
    folder = root / "tox"
    for serializer in SERIALIZERS:
        subprocess.run(
            [sys.executable, "-m", "alertbench.harness.cli", "run", str(workload),
             "--transport", "tcp", "--serializer", serializer, "--threads",
             "-o", str(folder / f"bench-tcp-{serializer}.json")],
            check=True, timeout=60, capture_output=True,
        )  # fmt: skip
    return folder


def test_one_row_per_transport_and_serialization(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["aggregate", str(runs), "-o", str(out)]) == 0
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "bench-aggregate"
    rows = doc["rows"]
    assert [(r["transport"], r["serializer"]) for r in rows] == [
        ("tcp", s) for s in sorted(SERIALIZERS)
    ]
    for r in rows:
        source = json.loads((runs / r["source"]).read_text())
        assert r["alerts_sent"] == source["alerts_sent"] == 20
        assert r["lost"] == source["lost"] == 0
        assert r["delivered_alerts_per_second"] == source["delivered_alerts_per_second"] > 0
        assert r["latency_ms"]["p99"] == source["latency_us"]["p99"] / 1e3
        assert r["within_60s_fraction"] == 1.0
        assert r["git_commit"] == source["git_commit"]
        assert r["versions"]["alertbench"] == source["environment"]["versions"]["alertbench"]
        assert r["machine"] == source["environment"]["machine"]
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| tcp |")]
    assert len(table) == len(SERIALIZERS)
    assert "| tcp | avro | tiny | 20 |" in table[0]
    assert "100.00%" in table[0]
    for r in rows:
        assert f"| {r['source']} | {r['machine']} |" in report
    if doc["plot"]:
        assert (out / doc["plot"]).stat().st_size > 0
        assert f"]({doc['plot']})" in report
    # A known kind: 'alertbench report' renders the folder again, to the same bytes.
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report


def _fails(argv: list[str], capsys, expect: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expect in err


def test_missing_folder(tmp_path: Path, capsys) -> None:
    _fails(["aggregate", str(tmp_path / "nope"), "-o", str(tmp_path / "r")], capsys, "no such")
    assert not (tmp_path / "r").exists()


def test_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "tox").mkdir()
    _fails(["aggregate", str(tmp_path / "tox"), "-o", str(tmp_path / "r")], capsys, "no run JSON")


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("not json at all", "not a readable results file"),
        ('{"hello": 1}', "cannot tell which benchmark"),
        ('{"kind": "codecs", "schema_version": 1}', "not an 'alertbench run' result"),
        ('{"kind": "workload-run", "schema_version": 1}', "not a complete alertbench run"),
    ],
)
def test_a_file_that_is_not_a_run(runs: Path, tmp_path: Path, capsys, text, expect) -> None:
    folder = tmp_path / "tox"
    folder.mkdir()
    (folder / "bench-tcp-avro.json").write_bytes((runs / "bench-tcp-avro.json").read_bytes())
    (folder / "other.json").write_text(text)
    _fails(["aggregate", str(folder), "-o", str(tmp_path / "r")], capsys, expect)
    assert not (tmp_path / "r" / "results.json").exists()
