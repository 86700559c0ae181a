"""Comet, the third-party VTP broker alertbench interoperates with, in its own virtual environment.

Comet 3.1.0 comes from PyPI with current Twisted; it gets a virtual environment of its own (in
the git-ignored cache) so its dependencies never mix with ours.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from alertbench.errors import AlertbenchError
from alertbench.resources import cache_dir

COMET = "Comet==3.1.0"


def comet_venv() -> Path:
    """The virtual environment holding Comet, made (once) if missing."""
    venv = cache_dir() / "comet-3.1.0-venv"
    if (venv / "bin" / "twistd").exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", COMET],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0 or not (venv / "bin" / "twistd").exists():
        shutil.rmtree(venv, ignore_errors=True)
        raise AlertbenchError(f"could not install {COMET} from PyPI:\n{result.stderr[-2000:]}")
    return venv


# Runs twistd with Twisted's frame limit raised from 99,999 bytes to 16 MiB.
COMET_RAISED_LIMIT = (
    "import sys, twisted.protocols.basic as b; b.Int32StringReceiver.MAX_LENGTH = 16 * 2**20; "
    "from twisted.scripts.twistd import run; sys.argv = ['twistd'] + sys.argv[1:]; run()"
)


def twistd_command(venv: Path, args: list[str], raised: bool = False) -> list[str]:
    """Comet in the foreground (``twistd -n comet ARGS``); ``raised`` lifts its frame limit."""
    if raised:
        head = [str(venv / "bin" / "python"), "-c", COMET_RAISED_LIMIT]
    else:
        head = [str(venv / "bin" / "twistd")]
    return [*head, "-n", "--pidfile=", "comet", *args]


def broker_args(receive: int, broadcast: int, eventdb: Path, local_ivo: str) -> list[str]:
    """Comet as a broker on 127.0.0.1: events from local authors out to local subscribers."""
    return [
        f"--local-ivo={local_ivo}",
        "--receive",
        f"--receive-port={receive}",
        "--broadcast",
        f"--broadcast-port={broadcast}",
        "--author-whitelist=127.0.0.1/32",
        "--subscriber-whitelist=127.0.0.1/32",
        f"--eventdb={eventdb}",
        "--broadcast-test-interval=0",
    ]
