"""Decode only what the filters read: an Avro reader schema projected onto the used fields.

Decoding is most of the mini-broker's work (a full alert is ~30 earlier detections of ~80 fields
each, plus forced photometry and cutouts), but the filters read a handful of fields. Avro's schema
resolution lets a reader schema that lists fewer fields skip the others while decoding, so the
service decodes every alert with a reader holding just the fields its filters use (plus the ids
it needs) and decodes in full only the few alerts it delivers.

One Avro schema may define a named type once, and Rubin's ``diaSource`` record serves both the
triggering source and the earlier detections, so a named record keeps the union of the fields
wanted wherever it is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cavro
from alertbench.refimpl.alert.schema import AlertSchema
from alertbench.refimpl.codecs.wire import unframe

ALWAYS = (("diaSourceId",), ("diaSource", "visit"), ("diaSource", "diaSourceId"))
"""Fields the service itself needs: the alert id (Kafka key, IVORN) and the visit (batching)."""


def _record_in(avro_type: Any) -> dict[str, Any] | None:
    """The record inside a field type (a record, a nullable record, an array of records)."""
    if isinstance(avro_type, list):
        for branch in avro_type:
            found = _record_in(branch)
            if found is not None:
                return found
        return None
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            return avro_type
        if avro_type.get("type") == "array":
            return _record_in(avro_type["items"])
    return None


def projected_schema(resolved: dict[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    """The alert record reduced to ``paths`` (``("diaSource", "snr")``, ``("prvDiaSources",)``)."""
    wanted: dict[str, set[str]] = {}
    for path in (*paths, *ALWAYS):
        wanted.setdefault(path[0], set()).update(path[1:2])
    keep_by_type: dict[str, set[str]] = {}
    for field in resolved["fields"]:
        record = _record_in(field["type"])
        if field["name"] in wanted and record is not None:
            keep_by_type.setdefault(record["name"], set()).update(wanted[field["name"]])
    emitted: set[str] = set()

    def project(avro_type: Any) -> Any:
        if isinstance(avro_type, list):
            return [project(branch) for branch in avro_type]
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            name = avro_type["name"]
            if name in emitted:
                return name  # defined once; later uses refer to it by name
            emitted.add(name)
            keep = keep_by_type.get(name, set())
            return dict(avro_type, fields=[f for f in avro_type["fields"] if f["name"] in keep])
        if isinstance(avro_type, dict) and avro_type.get("type") == "array":
            return dict(avro_type, items=project(avro_type["items"]))
        return avro_type

    fields = [dict(f, type=project(f["type"])) for f in resolved["fields"] if f["name"] in wanted]
    return dict(resolved, fields=fields)


class ProjectedDecoder:
    """Decodes Confluent-framed alerts of one schema version into just the projected fields."""

    def __init__(self, schema: AlertSchema, paths: Iterable[tuple[str, ...]]) -> None:
        self.schema = schema
        self.paths = sorted(set(paths))
        writer = cavro.Schema(schema.definition, record_decodes_to_dict=True)
        reader = cavro.Schema(
            projected_schema(schema.resolved, self.paths), record_decodes_to_dict=True
        )
        self._resolved = reader.reader_for_writer(writer)

    def decode(self, payload: bytes) -> dict[str, Any] | None:
        """The projected alert, or None if the payload is of another schema version."""
        schema_id, body = unframe(payload, codec="avro")
        if schema_id != self.schema.schema_id:
            return None
        return self._resolved.binary_decode(bytes(body))
