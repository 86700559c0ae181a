"""Where the project's files are: the checkout, its schema documents and its git-ignored cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"
PROTO_DIR = REPO_ROOT / "proto"


def cache_dir() -> Path:
    """$ALERTBENCH_CACHE, or .cache/ in the checkout (git-ignored): jars, generated stubs."""
    root = os.environ.get("ALERTBENCH_CACHE")
    return Path(root) if root else REPO_ROOT / ".cache"
