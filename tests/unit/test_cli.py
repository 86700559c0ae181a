"""The CLI a user runs: simulate, inspect, sizes, --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alertbench.harness.cli import main


def test_console_script_is_installed_and_help_reads_well() -> None:
    exe = Path(sys.executable).parent / "alertbench"  # installed beside this interpreter
    assert exe.exists(), "the alertbench console script is missing: is the package installed?"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("simulate", "inspect", "sizes", "schemas"):
        assert command in result.stdout
    assert "Rubin" in result.stdout


def test_simulate_then_inspect(tmp_path, capsys) -> None:
    path = tmp_path / "night.avro"
    assert (
        main(
            [
                "simulate",
                "--visits",
                "2",
                "--limit",
                "5",
                "--alerts-per-visit",
                "50",
                "--sigma",
                "0",
                "-o",
                str(path),
            ]
        )
        == 0
    )
    assert "wrote 10 alerts from 2 visit(s)" in capsys.readouterr().out
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alerts"] == 10
    assert report["format"] == "avro-ocf"
    assert report["schema"] == "lsst.v11_1.alert"
    assert 30 <= report["first_alert"]["cutout_side_px"] <= 102
    assert report["sizes"]["encoded alert (bytes)"]["mean"] > 50_000


def test_inspect_a_single_framed_alert(tmp_path, alerts, capsys) -> None:
    from alertbench.refimpl.codecs.avro import AvroSerializer

    path = tmp_path / "one.bin"
    path.write_bytes(AvroSerializer().dumps(alerts[0]))
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alerts"] == 1


def test_inspect_rejects_a_file_that_is_not_alerts(tmp_path, capsys) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("hello")
    assert main(["inspect", str(path)]) == 2
    assert "not an alert message" in capsys.readouterr().err


def test_sizes_reports_the_distribution(capsys) -> None:
    assert main(["sizes", "--visits", "1", "--per-visit", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alerts"] == 5
    assert set(report["sizes"]["encoded alert (bytes)"]) == {"mean", "p50", "p90", "p99", "max"}


def test_convert_to_every_format_and_inspect_each(tmp_path, capsys) -> None:
    source = tmp_path / "visit.avro"
    assert (
        main(
            [
                "simulate",
                "--limit",
                "4",
                "--alerts-per-visit",
                "20",
                "--sigma",
                "0",
                "-o",
                str(source),
            ]
        )
        == 0
    )
    for name in ("protobuf", "voevent", "voevent3", "avro"):
        target = tmp_path / f"visit.{name}"
        assert main(["convert", "--to", name, str(source), str(target)]) == 0
        capsys.readouterr()
        assert main(["inspect", str(target), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["serialization"] == name
        assert report["alerts"] == 4
        assert report["schema"] == "lsst.v11_1.alert"


def test_generate_check_passes_on_a_clean_checkout(capsys) -> None:
    assert main(["generate", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_minibroker_commands_register_list_and_refuse(tmp_path, capsys, monkeypatch) -> None:
    db = str(tmp_path / "mb.sqlite")
    assert main(["minibroker", "user", "add", "dave", "--db", db]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(token) > 30
    monkeypatch.setenv("ALERTBENCH_TOKEN", token)
    expression = 'diaSource.snr > 10 and diaSource.band in ("g", "r")'
    assert main(["minibroker", "filter", "add", "bright", expression, "--db", db]) == 0
    assert main(["minibroker", "filter", "list", "--db", db]) == 0
    assert f"bright\t{expression}" in capsys.readouterr().out
    # A hostile filter: refused with the reason and where, exit status 2, nothing stored.
    assert main(["minibroker", "filter", "add", "evil", "().__class__ == 1", "--db", db]) == 2
    assert "names starting with '_' are not allowed" in capsys.readouterr().err
    assert main(["minibroker", "filter", "check", "diaSource.snr > 1"]) == 0
    assert "reads diaSource.snr" in capsys.readouterr().out
    assert main(["minibroker", "filter", "list", "--db", db, "--token", "wrong"]) == 2
    assert "unknown token" in capsys.readouterr().err
    assert main(["minibroker", "filter", "remove", "bright", "--db", db]) == 0
    assert "filter 'bright' removed" in capsys.readouterr().out
    assert main(["minibroker", "filter", "list", "--db", db]) == 0
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- as a user runs it

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "alertbench"


def test_version_names_the_installed_alertbench() -> None:
    import alertbench

    for command in ([str(EXE)], [sys.executable, "-m", "alertbench.harness.cli"]):
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, check=True, timeout=60
        )
        assert result.stdout.strip() == f"alertbench {alertbench.__version__}"


def test_every_command_has_help() -> None:
    """Every parser builds and documents itself (a broken one fails here, not in a user's run)."""
    from alertbench.harness.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    nested = {"minibroker": [["user", "add"], ["filter", "add"], ["serve"], ["bench"]]}
    for name in commands:
        for rest in nested.get(name, [[]]):
            with pytest.raises(SystemExit) as stop:
                main([name, *rest, "--help"])
            assert stop.value.code == 0, name


def _ocf(path: Path, alerts: list[dict]) -> Path:
    from alertbench.refimpl.codecs.avro import write_ocf

    with path.open("wb") as fp:
        write_ocf(fp, iter(alerts))
    return path


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory, alerts) -> dict[str, subprocess.CompletedProcess]:
    """Every user mistake below, each run as its own ``alertbench`` process (all at once: each
    pays the interpreter's start-up, and the machine has two cores)."""
    work = tmp_path_factory.mktemp("mistakes")
    whole = _ocf(work / "visit.avro", alerts[:3]).read_bytes()
    header = len(_ocf(work / "empty.avro", []).read_bytes())  # a valid OCF with no block
    (work / "truncated.avro").write_bytes(whole[: header + (len(whole) - header) // 2])
    (work / "no-results").mkdir()
    (work / "a-folder").mkdir()
    cases = {
        "simulate --limit -5": ["simulate", "--limit", "-5", "-o", str(work / "x.avro")],
        "simulate --visits -1": ["simulate", "--visits", "-1", "-o", str(work / "x.avro")],
        "sizes --per-visit -3": ["sizes", "--per-visit", "-3"],
        "inspect a missing file": ["inspect", str(work / "nothing-here.avro")],
        "inspect a folder": ["inspect", str(work / "a-folder")],
        "inspect a truncated OCF": ["inspect", str(work / "truncated.avro")],
        "inspect an OCF without blocks": ["inspect", str(work / "empty.avro")],
        "convert to a folder": [
            "convert", "--to", "protobuf", str(work / "visit.avro"), str(work / "a-folder")
        ],
        "report a folder without results": ["report", str(work / "no-results")],
        "report a missing folder": ["report", str(work / "nowhere")],
        "--db naming a folder": [
            "minibroker", "filter", "list", "--db", str(work / "a-folder"), "--token", "t"
        ],
        "max-rate --transport URL": ["max-rate", "--transport", "kafka://h:9092/t"],
        "matrix --transports typo": ["matrix", "--transports", "kafak"],
        "run an unknown workload": ["run", "no-such-workload", "--transport", "tcp"],
        "compare runs of different kinds": [
            "compare", str(ROOT / "results/2026-11-24-matrix"), str(ROOT / "results/2026-11-24-vtp")
        ],
        "an unknown command": ["simulat"],
    }  # fmt: skip
    running = {
        name: subprocess.Popen(
            [str(EXE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work
        )
        for name, argv in cases.items()
    }
    done = {}
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done


MISTAKES = {
    "simulate --limit -5": "argument --limit: must be a positive whole number, got -5",
    "simulate --visits -1": "argument --visits: must be a positive whole number, got -1",
    "sizes --per-visit -3": "argument --per-visit: must be a positive whole number, got -3",
    "inspect a missing file": "nothing-here.avro: no such file",
    "inspect a folder": "a-folder: not a file",
    "inspect a truncated OCF": "truncated.avro is truncated",
    "inspect an OCF without blocks": "no alerts in this avro-ocf file",
    "convert to a folder": "a-folder: is a folder",
    "report a folder without results": "holds no results.json",
    "report a missing folder": "nowhere: no such folder",
    "--db naming a folder": "a-folder: is a folder",
    "max-rate --transport URL": "'kafka://h:9092/t' is a URL",
    "matrix --transports typo": "did you mean 'kafka'?",
    "run an unknown workload": "no workload 'no-such-workload'",
    "compare runs of different kinds": "cannot compare a matrix run",
    "an unknown command": "invalid choice: 'simulat'",
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_a_mistake_is_one_line_and_exit_status_2(mistakes, case) -> None:
    result = mistakes[case]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alertbench: error: ")
    assert MISTAKES[case] in lines[0]
    assert result.stdout == ""


def test_an_unexpected_failure_keeps_its_traceback(monkeypatch) -> None:
    """Only a user's mistake is turned into one line; a bug must stay reportable."""
    from alertbench.harness.cli import alerts as alert_commands

    def broken(args) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(alert_commands, "cmd_schemas", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["schemas"])
