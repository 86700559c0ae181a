"""Skip-or-fail for real components: the one place a test may skip, and never under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str) -> None:
    """A real component (a tool, a peer) is missing: fail under CI=true, skip elsewhere."""
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing dependency is a failure, not a skip)")
    pytest.skip(message)


def require_tools(*tools: str) -> None:
    """The tools a real component needs must be on PATH (see :func:`unavailable`)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable(f"this test needs {', '.join(missing)} on PATH to run real Apache Kafka")
