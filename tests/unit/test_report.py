"""The one results schema: what results.json holds, that secrets never reach it, that every
published run renders, and that two runs compare."""

from __future__ import annotations

import difflib
import json
import re
import shutil
from pathlib import Path

import pytest
from alertbench.harness.cli import main
from alertbench.harness.environment import DISTRIBUTIONS
from alertbench.harness.report.compare import compare
from alertbench.harness.report.render import render, write_report
from alertbench.harness.report.results import (
    KINDS,
    SCHEMA_VERSION,
    command_line,
    infer_kind,
    load_results,
    write_results,
)

from alertbench.errors import ConfigError

RESULTS = Path(__file__).resolve().parents[2] / "results"
PUBLISHED = sorted(
    {
        str(p.parent.relative_to(RESULTS))
        for name in ("results.json", "bench.json")  # bench: pytest-benchmark's
        for p in RESULTS.rglob(name)
    }
)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


# --------------------------------------------------------------------------- published runs


def test_every_published_results_json_says_its_kind_and_schema() -> None:
    files = sorted(RESULTS.rglob("results.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        assert data["schema_version"] == SCHEMA_VERSION, path
        assert data["kind"] in KINDS, path
        assert infer_kind({k: v for k, v in data.items() if k != "kind"}) == data["kind"], path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A copy of results/ after ``alertbench report COPY`` (every run folder in one command)."""
    copy = tmp_path_factory.mktemp("published") / "results"
    shutil.copytree(RESULTS, copy)
    assert main(["report", str(copy)]) == 0
    return copy


@pytest.mark.parametrize("run", PUBLISHED)
def test_every_published_run_renders_and_keeps_every_published_line(rendered, run) -> None:
    """Rendering again from the JSON changes no line of a published report (newer renderers
    may only add, e.g. a plot), and every plot the report names is drawn."""
    folder = rendered / run
    text = (folder / "report.md").read_text()
    assert text.startswith("# ")
    assert text == render(load_results(folder))  # the text does not depend on drawing
    for image in IMAGE.findall(text):
        assert (folder / image).stat().st_size > 5_000, image
    published = RESULTS / run / "report.md"
    if published.exists():
        ops = difflib.SequenceMatcher(
            None, published.read_text().splitlines(), text.splitlines(), autojunk=False
        ).get_opcodes()
        changed = [op for op in ops if op[0] in ("replace", "delete")]
        assert not changed, f"{run}: published lines changed by rendering again: {changed}"


def test_published_matrix_reports_are_reproduced_byte_for_byte(rendered) -> None:
    matrices = [p.parent.name for p in RESULTS.glob("*/results.json")
                if json.loads(p.read_text())["kind"] == "matrix"]  # fmt: skip
    assert matrices
    for run in matrices:
        assert (rendered / run / "report.md").read_bytes() == (
            RESULTS / run / "report.md"
        ).read_bytes(), run


def test_the_published_capacity_runs_are_reproduced_byte_for_byte(rendered) -> None:
    """``alertbench report`` regenerates a published three-layer capacity run's report from its
    results.json exactly: every figure in it comes from the JSON, none was typed."""
    runs = [p.parent.name for p in RESULTS.glob("*/results.json")
            if json.loads(p.read_text())["kind"] == "capacity"]  # fmt: skip
    assert runs, "results/ holds no capacity run"
    for run in runs:
        assert (rendered / run / "report.md").read_bytes() == (
            RESULTS / run / "report.md"
        ).read_bytes(), run
        for image in ("capacity.png", "cores-for-peak.png"):
            assert (rendered / run / image).stat().st_size > 5_000, (run, image)


def test_the_published_evidence_regenerates_from_the_published_json() -> None:
    from alertbench.harness.report import evidence

    assert evidence.render(RESULTS) == (RESULTS / "voevent3-evidence.md").read_text()


# --------------------------------------------------------------------------- compare


def test_compare_two_matrix_runs_prints_b_over_a(capsys) -> None:
    a, b = RESULTS / "2026-11-24-matrix-processes", RESULTS / "2026-11-24-matrix-max-rate"
    assert main(["compare", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("matrix: A = ")
    rows_a = {(r["transport"], r["serializer"]): r for r in load_results(a)["results"]}
    rows_b = {(r["transport"], r["serializer"]): r for r in load_results(b)["results"]}
    assert set(rows_a) & set(rows_b)
    for key in set(rows_a) & set(rows_b):
        ratio = rows_b[key]["alerts_per_second"] / rows_a[key]["alerts_per_second"]
        line = next(
            x for x in printed.splitlines() if x.startswith(f"{key[0]} x {key[1]} ") and
            " alerts/s " in x
        )  # fmt: skip
        assert line.endswith(f"{ratio:.3f}x"), line


def test_a_run_compared_with_itself_is_all_ones() -> None:
    run = RESULTS / "2026-11-24-kafka-visit"
    lines = compare(run, run).lines
    assert lines and all(line.ratio == 1.0 for line in lines)


def test_runs_of_different_kinds_are_refused() -> None:
    with pytest.raises(ConfigError, match="cannot compare a kafka-visit run"):
        compare(RESULTS / "2026-11-24-kafka-visit", RESULTS / "2026-11-24-minibroker")


# --------------------------------------------------------------------------- the schema


def test_a_written_document_records_kind_environment_versions_command_and_options(
    tmp_path,
) -> None:
    path = write_results(
        tmp_path / "run", "max-rate", _max_rate_payload(), options={"transport": "tcp"}
    )
    assert path == tmp_path / "run" / "results.json"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "max-rate"
    env = doc["environment"]
    assert env["cpus"] and env["python"] and env["machine"]
    for name in (*DISTRIBUTIONS, "librdkafka", "kafka", "alert-schema"):
        assert name in env["versions"], name
    assert env["versions"]["fastavro"] and env["versions"]["librdkafka"]
    assert doc["command"] and re.fullmatch(r"[0-9a-f]{40}|unknown", doc["git_commit"])
    assert doc["options"] == {"transport": "tcp"}
    assert doc["max_sustainable_rate"] == 512.0  # the figures, untouched


def test_secrets_never_reach_results_json(tmp_path, monkeypatch) -> None:
    url = "kafka://alice:s3cret@127.0.0.1:9092/alerts?password=s3cret&compression=lz4"
    monkeypatch.setattr(
        "sys.argv",
        ["/venv/bin/alertbench", "run", "quick-night", "--transport", url,
         "--kafka-password", "s3cret", "--token=s3cret"],
    )  # fmt: skip
    payload = {
        **_workload_payload(),
        "transport_url": url,
        "options": {"sasl.password": "s3cret", "compression": "lz4", "user": "alice"},
        "notes": [f"connected to {url} as alice"],
    }
    options = {"transport": url, "kafka_password": "s3cret", "api_key": "s3cret", "seed": 1}
    path = write_results(tmp_path / "run.json", "workload-run", payload, options=options)
    text = path.read_text()
    assert "s3cret" not in text
    doc = json.loads(text)
    assert doc["command"] == (
        "alertbench run quick-night --transport "
        "'kafka://alice:***@127.0.0.1:9092/alerts?password=***&compression=lz4' "
        "--kafka-password '***' '--token=***'"
    )
    assert doc["transport_url"] == (
        "kafka://alice:***@127.0.0.1:9092/alerts?password=***&compression=lz4"
    )
    assert doc["options"]["sasl.password"] == doc["options"]["kafka_password"] == "***"
    assert doc["options"]["compression"] == "lz4" and doc["options"]["seed"] == 1
    assert doc["latency_us"]["p99"] == 3000.0  # figures are never taken for secrets


def test_command_line_reads_as_typed() -> None:
    assert command_line(["/x/.venv/bin/alertbench", "matrix", "--alerts", "10"]) == (
        "alertbench matrix --alerts 10"
    )


def test_a_document_of_an_unknown_kind_or_a_newer_schema_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown results kind 'bogus'"):
        write_results(tmp_path, "bogus", {})
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 99, "kind": "matrix"}))
    with pytest.raises(ConfigError, match="newer than this alertbench"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable results file"):
        load_results(tmp_path)


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        ("max-rate", "_max_rate_payload", "Maximum sustainable rate: 512 alerts/s"),
        ("workload-run", "_workload_payload", "| lost | 0 |"),
    ],
)
def test_kinds_without_a_published_run_render_too(tmp_path, kind, payload, expected) -> None:
    write_results(tmp_path, kind, globals()[payload]())
    report = write_report(tmp_path).read_text()
    assert expected in report
    assert report == render(load_results(tmp_path))


def _max_rate_payload() -> dict:
    step = {"rate": 512.0, "sent": 1024, "received": 1024, "lost": 0, "duplicates": 0,
            "decode_errors": 0, "late_fraction": 0.0, "p50_ms": 2.0, "p99_ms": 9.0,
            "max_ms": 12.0, "sustainable": True}  # fmt: skip
    return {
        "transport": "tcp",
        "serializer": "avro",
        "max_sustainable_rate": 512.0,
        "headroom_over_lsst": 2.0,
        "latency_bound_s": 1.0,
        "seconds_per_step": 2.0,
        "steps": [step, {**step, "rate": 1024.0, "sustainable": False, "p99_ms": 1500.0}],
    }


def _workload_payload() -> dict:
    return {
        "transport": "tcp",
        "serializer": "avro",
        "workload": {"name": "quick-night", "subscribers": 2},
        "alerts_sent": 1000,
        "offered_alerts_per_second": 256.0,
        "delivered_alerts_per_second": 255.0,
        "lost": 0,
        "duplicates": 0,
        "decode_errors": 0,
        "sent_behind_schedule": 0,
        "latency_us": {"p50": 1000.0, "p99": 3000.0, "max": 5000.0},
        "within_60s_fraction": 1.0,
        "cores_per_stream_at_lsst_rate": 0.4,
    }
