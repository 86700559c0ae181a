"""Where the project's files are, installed or in a checkout: package data and the cache.

Package data (the .proto files, generated schemas, workloads, the Kafka pom) is read through
importlib.resources, so a wheel installed anywhere finds it; nothing here assumes a checkout.
The cache (Kafka's jars, Comet's environment, stubs of uncommitted schema versions) lives outside
the installed tree: ``$ALERTBENCH_CACHE`` if set (the Makefile sets it to ``.cache/`` in the
checkout), else the user cache directory that platformdirs names.
"""

from __future__ import annotations

import os
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

import platformdirs


def package_data(package: str, *parts: str) -> Traversable:
    """A file or folder shipped inside ``package`` (e.g. ``alertbench.proto``)."""
    node = files(package)
    for part in parts:
        node = node.joinpath(part)
    return node


def package_path(package: str, *parts: str) -> Path:
    """A real filesystem path to package data, for tools that need one (protoc, Maven).

    Wheels install as directories, so this is the installed file itself; it is never a
    temporary extraction that could vanish while a subprocess reads it.
    """
    with as_file(package_data(package, *parts)) as path:
        return Path(path)


def proto_dir() -> Path:
    """The folder of the project's .proto files."""
    return package_path("alertbench.proto")


def schemas_dir() -> Path:
    """The folder of the project's schema documents and generated schemas."""
    return package_path("alertbench.schemas")


def cache_dir() -> Path:
    """``$ALERTBENCH_CACHE``, or the user cache directory: jars, environments, stubs."""
    root = os.environ.get("ALERTBENCH_CACHE")
    path = Path(root) if root else Path(platformdirs.user_cache_dir("alertbench"))
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner alone (0600), from the first byte:
    files holding passwords (a cluster's accounts, a broker's JAAS line) are never 0644, not
    even between creation and a chmod."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as fp:
        fp.write(text)


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a database that will hold
    secrets: its engine then keeps the mode), and tighten it to 0600 if it does."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts: it is alive). The
    pid and state files of the servers a command leaves running are checked with this."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
