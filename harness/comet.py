"""Comet, the third-party VTP broker alertbench interoperates with, in its own virtual environment.

Comet 3.1.0 comes from PyPI with current Twisted; it gets a virtual environment of its own (in
the git-ignored cache) so its dependencies never mix with ours.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from refimpl.errors import AlertbenchError
from refimpl.paths import cache_dir

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
