"""What ran a benchmark: the machine, and the version of everything that shapes a figure.

Recorded beside every figure (results.json's ``environment``, written by
:mod:`alertbench.harness.report.results`), so a number read years later still says which
codec build, which Kafka client and which broker produced it. A library that is not installed
is recorded as None rather than left out: its absence is a fact about the run too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DISTRIBUTIONS = (
    "alertbench",
    "cavro",
    "fastavro",
    "protobuf",
    "grpcio",
    "pyzmq",
    "confluent-kafka",
    "lxml",
    "numpy",
    "lsst-alert-packet",
)
"""The Python distributions whose version can change a figure (codecs, transports' clients,
the alert schema's package), by their names on PyPI."""


def _from_module(module: str, get: Callable[[Any], object]) -> str | None:
    """``get(module)`` as text, or None when the module is not installed."""
    try:
        return str(get(importlib.import_module(module)))
    except ImportError:
        return None


def versions() -> dict[str, str | None]:
    """Version of every library (and server) that shapes a figure; None when not installed.

    Beyond the distributions: the C libraries under two clients (librdkafka, libzmq), the
    alert schema version the simulator writes by default, the Kafka release the launcher runs,
    and the native Avro engine when it is built.
    """
    found: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    found["librdkafka"] = _from_module("confluent_kafka", lambda m: m.libversion()[0])
    found["libzmq"] = _from_module("zmq", lambda m: m.zmq_version())
    found["alert-schema"] = _from_module(
        "alertbench.refimpl.alert.schema", lambda m: m.latest_version()
    )
    found["kafka"] = _from_module(
        "alertbench.transports.servers.kafka_cluster", lambda m: m.KAFKA_VERSION
    )
    native = _from_module(
        "alertbench.refimpl._native", lambda m: getattr(m, "__version__", "built")
    )
    if native is not None:  # not built: no native engine shaped any figure
        found["alertbench-native"] = native
    return found


def environment() -> dict[str, Any]:
    """The machine and the versions, recorded beside every figure."""
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "work_tree": work_tree(),
    }


def _git(*args: str) -> str | None:
    """``git ARGS`` run beside this file; its output, or None outside a checkout."""
    try:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str:
    """The commit of the code that ran (``unknown`` outside a checkout)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() if out is not None else "unknown"


def work_tree() -> str:
    """``clean``, or how many tracked files differ from the commit: a figure from a modified
    tree says so instead of passing for the commit's."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    if out is None:
        return "unknown"
    changed = out.splitlines()
    return f"modified: {len(changed)} tracked file(s)" if changed else "clean"
