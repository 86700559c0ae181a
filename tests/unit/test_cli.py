"""The CLI a user runs: simulate, inspect, sizes, --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
