"""One module and one registry line: a new transport or codec is held to the shared suites and
offered by the matrix and the CLI, with no other file changed.

The throwaway transport and codec live in tests/support/throwaway/ (modules the project does
not ship); a pytest plugin there adds one line to each registry. The suites run in a fresh
interpreter with that plugin, exactly as a third party's package would register itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THROWAWAY = ROOT / "tests" / "support" / "throwaway"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(THROWAWAY), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _pytest(*args: str) -> tuple[int, int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "throwaway_plugin", "-q", "-p", "no:cacheprovider",
         *args],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600,
    )  # fmt: skip
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) (failed|error)", tail)) else 0
    return passed, failed, result.stdout[-3000:] + result.stderr[-2000:]


def test_a_registered_transport_is_held_to_the_conformance_suite() -> None:
    passed, failed, output = _pytest("tests/conformance/test_transports.py", "-k", "throwaway")
    assert failed == 0 and passed >= 10, output


def test_a_registered_serializer_is_held_to_the_serializer_suite() -> None:
    passed, failed, output = _pytest("tests/unit/test_serializers.py", "-k", "throwaway")
    assert failed == 0 and passed >= 3, output


@pytest.mark.parametrize("command", ["matrix", "run"])
def test_the_matrix_and_the_cli_offer_what_is_registered(command: str) -> None:
    code = (
        "import throwaway_plugin\n"
        "from alertbench.harness import matrix\n"
        "from alertbench.transports.base import kinds\n"
        "assert 'throwaway' in kinds(), kinds()\n"
        "from alertbench.harness.cli import main\n"
        f"main([{command!r}, '--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "throwaway" in result.stdout, result.stdout
