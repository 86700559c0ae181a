"""Access to the official Rubin alert schemas shipped by ``lsst-alert-packet``.

The schema is loaded through ``lsst.alert.packet`` itself (so we use exactly what Rubin's own
consumers use) and parsed with fastavro once per version: fastavro re-parses a raw schema on every
call otherwise, which costs more than encoding a small record.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import fastavro
import lsst.alert.packet as lsst_packet

from alertbench.errors import SchemaError


def available_versions() -> list[str]:
    """Every alert schema version the installed lsst-alert-packet ships, oldest first."""
    root = lsst_packet.get_schema_root()
    found: list[tuple[int, int]] = []
    for major in os.listdir(root):
        if not major.isdigit():
            continue
        for minor in os.listdir(os.path.join(root, major)):
            avsc = os.path.join(root, major, minor, f"lsst.v{major}_{minor}.alert.avsc")
            if minor.isdigit() and os.path.exists(avsc):
                found.append((int(major), int(minor)))
    return [f"{a}.{b}" for a, b in sorted(found)]


def latest_version() -> str:
    """The version lsst-alert-packet declares as latest (its ``latest.txt``)."""
    major, minor = lsst_packet.get_latest_schema_version()
    return f"{major}.{minor}"


def schema_id_for(major: int, minor: int) -> int:
    """Rubin's registry id since 2024: major*100 + minor (11.1 -> 1101)."""
    return major * 100 + minor


@dataclass(frozen=True)
class AlertSchema:
    """One version of the Rubin alert schema, resolved and parsed once."""

    version: str
    major: int
    minor: int
    schema_id: int
    definition: dict[str, Any] = field(repr=False)
    resolved: dict[str, Any] = field(repr=False)
    """The definition with every named-type reference replaced by the type itself."""
    parsed: Any = field(repr=False)
    lsst: Any = field(repr=False)

    @property
    def namespace(self) -> str:
        return f"lsst.v{self.major}_{self.minor}"

    def record(self, name: str) -> dict[str, Any]:
        """The record definition named ``name`` (e.g. ``diaSource``) wherever it is nested."""
        found = _find_record(self.definition, name)
        if found is None:
            raise SchemaError(f"schema {self.version} has no record named {name!r}")
        return found

    def validate(self, alert: dict[str, Any]) -> None:
        """Raise fastavro's ValidationError naming every offending field if ``alert`` is invalid."""
        fastavro.validation.validate(alert, self.parsed, raise_errors=True, strict=True)


def resolve_names(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``definition`` in which references to named types are the types themselves.

    Avro lets a record type be written out once and referred to by name afterwards (Rubin's
    schema does this for ``diaSource`` inside ``prvDiaSources``); codecs that walk the schema
    want the structure, not the name.
    """
    names: dict[str, Any] = {}
    primitives = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in primitives:
                return node
            full = node if "." in node else f"{namespace}.{node}"
            return names.get(full, names.get(node, node))
        if isinstance(node, list):
            return [walk(n, namespace) for n in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = node.get("namespace", namespace)
            full = node["name"] if "." in node["name"] else f"{ns}.{node['name']}"
            out = dict(node)
            names[full] = out
            if kind == "record":
                out["fields"] = [dict(f, type=walk(f["type"], ns)) for f in node["fields"]]
            return out
        if kind == "array":
            return dict(node, items=walk(node["items"], namespace))
        if kind == "map":
            return dict(node, values=walk(node["values"], namespace))
        if isinstance(kind, (dict, list)):
            return dict(node, type=walk(kind, namespace))
        return node

    return walk(definition, definition.get("namespace", ""))


def _find_record(node: Any, name: str) -> dict[str, Any] | None:
    if isinstance(node, dict):
        if node.get("type") == "record" and node.get("name", "").split(".")[-1] == name:
            return node
        for value in node.values():
            hit = _find_record(value, name)
            if hit is not None:
                return hit
    elif isinstance(node, list):
        for value in node:
            hit = _find_record(value, name)
            if hit is not None:
                return hit
    return None


@functools.cache
def load_schema(version: str | None = None) -> AlertSchema:
    """Load ``version`` ("MAJOR.MINOR"; default: the latest shipped) once per process."""
    version = version or latest_version()
    try:
        major_s, minor_s = version.split(".")
        major, minor = int(major_s), int(minor_s)
    except ValueError:
        raise SchemaError(f"schema version must look like '11.1', got {version!r}") from None
    if version not in available_versions():
        raise SchemaError(
            f"lsst-alert-packet ships no schema {version}; available: "
            + ", ".join(available_versions())
        )
    path = os.path.join(
        lsst_packet.get_schema_path(major, minor), f"lsst.v{major}_{minor}.alert.avsc"
    )
    lsst_schema = lsst_packet.Schema.from_file(path)
    definition = lsst_schema.definition
    parsed = fastavro.parse_schema(definition)
    return AlertSchema(
        version=version,
        major=major,
        minor=minor,
        schema_id=schema_id_for(major, minor),
        definition=definition,
        resolved=resolve_names(definition),
        parsed=parsed,
        lsst=lsst_schema,
    )


def schema_for_id(schema_id: int) -> AlertSchema:
    """The shipped schema whose Rubin registry id is ``schema_id``."""
    major, minor = divmod(schema_id, 100)
    version = f"{major}.{minor}"
    if version not in available_versions():
        raise SchemaError(f"unknown Rubin alert schema id {schema_id}")
    return load_schema(version)
