"""One results schema for every benchmark: what a results.json holds, how it is written and read.

Every run writes one JSON document with its figures (the payload, whose shape is the kind's own)
beside the same metadata whatever the kind, so a report, a comparison or a reader years later
knows what produced each number:

- ``schema_version`` (:data:`SCHEMA_VERSION`) and ``kind`` (one of :data:`KINDS`): which
  renderer and which comparison apply;
- ``environment``: machine, CPUs, platform, Python, and ``versions`` of every library that shapes
  a figure (codecs, transports' clients, the alert schema, Kafka, the native codec if built;
  measured by :mod:`alertbench.harness.environment`);
- ``command``, ``git_commit``, ``when_utc``; ``options``: the run's resolved options.

Secrets never reach the file: :func:`redact` replaces the value of any option, key, URL query
parameter or command-line flag named like a password, secret, token, credential or API key with
``"***"``, and the password of a URL's ``user:password@``; it runs on the whole document
(command line included) before it is written.

Files published before this schema carry the two fields added by hand and nothing else
changed; a file without them is migrated when read, never rewritten: :func:`load_results` infers
a missing ``kind`` from the shape, and lifts ``command``, ``git_commit`` and ``when_utc`` out of
the old flat ``environment``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alertbench.harness.environment import environment, git_commit

from alertbench.errors import ConfigError
from alertbench.redaction import SECRET, SECRET_KEY, redact_text, redact_url

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
BENCH_FILE = "bench.json"
"""pytest-benchmark's JSON (the serializers run), read as kind ``serializers``."""

KINDS = (
    "matrix",
    "kafka-visit",
    "vtp",
    "minibroker",
    "serializers",
    "workload-run",
    "max-rate",
    "codecs",
    "xml-compression",
    "bench-aggregate",
    "capacity",
)

"""Names of options, query parameters and command-line flags whose value is never written."""

_OLD_ENV_VERSIONS = {"confluent_kafka": "confluent-kafka", "librdkafka": "librdkafka"}
_LIFTED = ("command", "git_commit", "when_utc")


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again (``alertbench ...``), secrets redacted."""
    args = list(sys.argv if argv is None else argv)
    if args and Path(args[0]).name in ("alertbench", "__main__.py", "cli"):
        args[0] = "alertbench"
    return redact_command(shlex.join(args))


# --------------------------------------------------------------------------- redaction


_FLAG = re.compile(r"^--?([A-Za-z0-9_.-]+)(=(.*))?$")


def redact_command(command: str) -> str:
    """A command line with the values of secret flags (``--kafka-password X``) and URLs hidden."""
    try:
        words = shlex.split(command)
    except ValueError:
        return redact_text(command)
    out: list[str] = []
    hide_next = False
    for word in words:
        if hide_next:
            out.append(SECRET)
            hide_next = False
            continue
        flag = _FLAG.match(word)
        if flag and SECRET_KEY.search(flag.group(1)):
            if flag.group(2) is not None:
                out.append(f"{word.split('=', 1)[0]}={SECRET}")
            else:
                out.append(word)
                hide_next = True
            continue
        out.append(redact_url(word) if "://" in word else word)
    return shlex.join(out)


def redact(value: Any, *, under_secret: bool = False) -> Any:
    """A copy of ``value`` safe to publish.

    Mappings: a key named like a secret gets ``"***"`` when its value is text (a figure is never
    a secret, so numbers stay; everything under ``options`` is hidden whatever its type). Text
    that is a URL loses its password and secret query parameters.
    """
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            secret = isinstance(key, str) and bool(SECRET_KEY.search(key))
            if secret and item is not None and (under_secret or not _is_figure(item)):
                out[key] = SECRET
            else:
                out[key] = redact(item, under_secret=under_secret)
        return out
    if isinstance(value, list | tuple):
        return [redact(v, under_secret=under_secret) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_text(value)
    return value


def _is_figure(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) or isinstance(
        value, Mapping | list
    )


# --------------------------------------------------------------------------- write and read


def results_document(
    kind: str,
    payload: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    command: str | None = None,
    env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The document :func:`write_results` writes: payload plus the schema's metadata, redacted.

    The environment is measured here; ``env`` (or the ``environment`` a payload carries, as
    benchmarks that record their own do) is laid over it, so a caller that measured elsewhere
    keeps its values and every document still names every library version. ``command`` is
    this process's command line unless given. ``options`` (the command's) and a payload's own
    ``options`` (a run's resolved transport options) are recorded together, secrets hidden.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown results kind {kind!r}; choose from {', '.join(KINDS)}")
    clashes = {"schema_version", "kind"} & set(payload)
    if clashes:
        raise ConfigError(f"a {kind} payload may not set {', '.join(sorted(clashes))}")
    doc: dict[str, Any] = dict(payload)
    given = dict(env if env is not None else doc.get("environment") or {})
    lifted = {key: given.pop(key) for key in _LIFTED if key in given}
    measured = environment()
    found = {**measured["versions"], **(given.pop("versions", None) or {})}
    doc["environment"] = _normalise_environment({**measured, **given, "versions": found})
    doc["command"] = redact_command(command or command_line())
    doc["git_commit"] = lifted.get("git_commit") or git_commit()
    doc["when_utc"] = lifted.get("when_utc") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_options = doc.get("options")
    merged = {**(run_options if isinstance(run_options, Mapping) else {}), **(options or {})}
    doc["options"] = redact(merged, under_secret=True)
    doc["schema_version"] = SCHEMA_VERSION
    doc["kind"] = kind
    published: dict[str, Any] = redact(doc)
    return published


def write_results(
    out: Path,
    kind: str,
    payload: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    command: str | None = None,
    env: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``payload`` as a results document of ``kind``; returns the file written.

    ``out`` is a folder (``out/results.json``, where reports are rendered beside it) or, when it
    ends in ``.json``, the file itself (``alertbench run -o out/x.json``).
    """
    doc = results_document(kind, payload, options=options, command=command, env=env)
    path = out if out.suffix == ".json" else out / RESULTS_FILE
    if path.exists() and path.is_dir():
        raise ConfigError(f"{path} is a directory; give a folder or a .json file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


def results_path(folder: Path) -> Path:
    """The results file of a run folder (or ``folder`` itself if it is a file)."""
    if folder.is_file():
        return folder
    if not folder.exists():
        raise ConfigError(f"{folder}: no such file or folder")
    for name in (RESULTS_FILE, BENCH_FILE):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"{folder} holds no {RESULTS_FILE}: not a results folder")


def load_results(folder: Path) -> dict[str, Any]:
    """A results document, migrated to the current schema in memory (the file is not changed).

    Raises ConfigError for a folder without results, unreadable JSON, an unknown kind or a
    schema newer than this code.
    """
    path = results_path(folder)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable results file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a results file holds one JSON object")
    return migrate(data, source=str(path))


def migrate(data: dict[str, Any], source: str = "results") -> dict[str, Any]:
    """``data`` in the current schema: kind inferred once if missing, metadata lifted."""
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(
            f"{source}: results schema version {version!r} is newer than this alertbench "
            f"understands ({SCHEMA_VERSION}); upgrade alertbench"
        )
    doc = dict(data)
    kind = doc.get("kind") or infer_kind(doc)
    if kind is None:
        raise ConfigError(f"{source}: cannot tell which benchmark wrote this (no 'kind')")
    if kind not in KINDS:
        raise ConfigError(f"{source}: unknown results kind {kind!r}")
    doc["kind"] = kind
    if kind == "serializers":
        doc.setdefault("environment", _bench_environment(doc))
        doc.setdefault("git_commit", doc.get("commit_info", {}).get("id", "unknown"))
        doc.setdefault("when_utc", doc.get("datetime", "?"))
        doc.setdefault("command", "pytest tests/benchmarks/bench_serializers.py --benchmark-json")
    env = dict(doc.get("environment") or {})
    for key in _LIFTED:
        if key in env:
            doc.setdefault(key, env.pop(key))
        doc.setdefault(key, "unknown")
    doc["environment"] = _normalise_environment(env)
    doc.setdefault("options", {})
    doc["schema_version"] = SCHEMA_VERSION
    return doc


def _normalise_environment(env: Mapping[str, Any]) -> dict[str, Any]:
    """Old flat version keys (``confluent_kafka``, ``librdkafka``, ``kafka``) into ``versions``."""
    out = {k: v for k, v in env.items() if k not in _OLD_ENV_VERSIONS and k != "kafka"}
    found = dict(env.get("versions") or {})
    for old, new in _OLD_ENV_VERSIONS.items():
        if old in env:
            found.setdefault(new, env[old])
    if "kafka" in env:
        found.setdefault("kafka", env["kafka"])
    out["versions"] = found
    return out


def _bench_environment(doc: Mapping[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine_info in the schema's words."""
    info = doc.get("machine_info", {})
    cpu = info.get("cpu", {})
    return {
        "machine": info.get("machine", "?"),
        "cpus": cpu.get("count", "?"),
        "platform": f"{info.get('system', '?')}-{info.get('release', '?')}",
        "python": info.get("python_version", "?"),
        "versions": {"pytest-benchmark": doc.get("version")},
    }


def infer_kind(data: Mapping[str, Any]) -> str | None:
    """The kind of a results file written before ``kind`` existed, from its shape."""
    if "benchmarks" in data and "machine_info" in data:
        return "serializers"
    if "evaluation_ms" in data and "service" in data:
        return "minibroker"
    if "max_sustainable_rate" in data and "steps" in data:
        return "max-rate"
    if "workload" in data and "offered_alerts_per_second" in data:
        return "workload-run"
    if "native_ratios" in data and "rows" in data:
        return "codecs"
    if "per_message" in data and "kafka" in data:
        return "xml-compression"
    if "capacity" in data and "cores_for_peak" in data:
        return "capacity"
    rows = data.get("results")
    if isinstance(rows, list) and rows and isinstance(rows[0], Mapping):
        first = rows[0]
        if "alerts_per_combination" in data and "transport" in first and "serializer" in first:
            return "matrix"
        if "name" in first and "wire_bytes_per_alert" in first:
            return "vtp"
        if "transport_url" in first and "compression" in first.get("options", {}):
            return "kafka-visit"
    return None
