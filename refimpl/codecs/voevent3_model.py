"""The VOEvent 3 proposal's data model, once, and the bindings generated from it.

Rubin asked for "a data model independent of the XML schema". This module is that model: the
entities of a VOEvent (VOEvent 2.0's sections), their fields with types, units, UCDs and the
VOEvent 2.0 element each one maps from. Every binding is generated from it and from nothing
else, so they cannot drift apart:

* Avro (:func:`avro_schema`): the schema the ``voevent3`` codec has always used; ``what.payload``
  is the Rubin alert record itself.
* JSON (:func:`json_schema`): a JSON Schema (draft 2020-12) whose ``what.payload`` is a ``$ref``
  to the Rubin alert's generated JSON Schema (``schemas/json/``).
* Protobuf (:func:`proto_text`): a .proto that imports the Rubin alert's mirror
  (``proto/lsst_alert_v11_1.proto``) for ``what.payload``.
* The model's own description for people (:func:`model_markdown`), with the mapping.

The type language is deliberately small: ``string``, ``double``, ``float`` (32-bit),
``timestamp`` (UTC, microseconds), an enum, a record of the model, a list of either, and the
payload. A field is either required (with a default where the model has one) or ``optional``
(null when absent). How each binding spells each type is decided here, once per type.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from alertbench.refimpl.alert.schema import AlertSchema

NAMESPACE = "org.ivoa.voevent.v3"
VERSION = "3.0-alertbench-proposal"
SCALARS = ("string", "double", "float", "timestamp")
ENUMS: dict[str, tuple[str, ...]] = {
    "Role": ("observation", "prediction", "utility", "test"),
    "Cite": ("followup", "supersedes", "retraction"),
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    """A scalar of :data:`SCALARS`, an enum of :data:`ENUMS`, an entity's name, ``payload``."""
    doc: str
    voevent2: str
    """The VOEvent 2.0 element or attribute this field carries (XPath from the root)."""
    optional: bool = False
    list: bool = False
    default: Any = None
    """For a required field: its default (``None``: no default); lists default to empty."""
    unit: str | None = None
    ucd: str | None = None


@dataclass(frozen=True)
class Entity:
    name: str
    doc: str
    voevent2: str
    fields: tuple[Field, ...]


MODEL: tuple[Entity, ...] = (
    Entity(
        "VOEvent",
        "One event: who made it, what was seen, where and when, how, why, and what it cites.",
        "/voe:VOEvent",
        (
            Field("ivorn", "string", "Identifier of this event.", "@ivorn"),
            Field("role", "Role", "What the event is: a real observation, or not.", "@role"),
            Field("version", "string", "The standard's version.", "@version", default=VERSION),
            Field("who", "Who", "Who made the event.", "Who"),
            Field("what", "What", "What was measured: the producer's typed record.", "What"),
            Field(
                "whereWhen", "WhereWhen", "Where and when it was seen.", "WhereWhen", optional=True
            ),
            Field("how", "How", "How it was observed.", "How"),
            Field("why", "Why", "What the producer thinks it is.", "Why", optional=True),
            Field(
                "citations",
                "Citation",
                "Earlier events this one follows.",
                "Citations",
                list=True,
            ),
        ),
    ),
    Entity(
        "Who",
        "The event's author.",
        "Who",
        (
            Field("authorIvorn", "string", "Identifier of the author.", "Who/AuthorIVORN"),
            Field("date", "timestamp", "When the event was made, UTC.", "Who/Date"),
            Field(
                "shortName",
                "string",
                "The author's short name.",
                "Who/Author/shortName",
                optional=True,
            ),
            Field(
                "contactEmail",
                "string",
                "Whom to write to.",
                "Who/Author/contactEmail",
                optional=True,
            ),
        ),
    ),
    Entity(
        "What",
        "The measurements: in VOEvent 2.0 name/value Params and Tables of strings, here the "
        "producer's own typed record, its units and UCDs in its schema.",
        "What",
        (
            Field(
                "payloadSchema",
                "string",
                "Full name of the payload record type, e.g. lsst.v11_1.alert.",
                "What/Param/@name (the Params' schema)",
            ),
            Field("payload", "payload", "The producer's record.", "What/Param, What/Table"),
        ),
    ),
    Entity(
        "WhereWhen",
        "One position and one time, the time scale named (no leap seconds in the packet).",
        "WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords",
        (
            Field(
                "coordSystem",
                "string",
                "Coordinate system.",
                "AstroCoords/@coord_system_id",
                default="ICRS",
            ),
            Field(
                "ra",
                "double",
                "Right ascension.",
                "AstroCoords/Position2D/Value2/C1",
                unit="deg",
                ucd="pos.eq.ra",
            ),
            Field(
                "dec",
                "double",
                "Declination.",
                "AstroCoords/Position2D/Value2/C2",
                unit="deg",
                ucd="pos.eq.dec",
            ),
            Field(
                "errorRadius",
                "float",
                "Positional uncertainty.",
                "AstroCoords/Position2D/Error2Radius",
                unit="deg",
                ucd="stat.error;pos.eq",
            ),
            Field(
                "timeScale",
                "string",
                "Time scale of mjd.",
                "AstroCoordSystem/@id (time part)",
                default="TAI",
            ),
            Field(
                "mjd",
                "double",
                "Time of the observation, MJD.",
                "AstroCoords/Time/TimeInstant/ISOTime",
                unit="d",
                ucd="time.epoch",
            ),
        ),
    ),
    Entity(
        "How",
        "Instruments and methods.",
        "How",
        (
            Field("descriptions", "string", "Free text.", "How/Description", list=True),
            Field("references", "Reference", "Links.", "How/Reference", list=True),
        ),
    ),
    Entity(
        "Reference",
        "A link to more information or to data (VOEvent 2.0 <Reference>).",
        "Reference",
        (
            Field("uri", "string", "Where it is.", "Reference/@uri"),
            Field("type", "string", "What it is.", "Reference/@type", optional=True),
            Field("mimetype", "string", "Its media type.", "Reference/@mimetype", optional=True),
            Field("meaning", "string", "Its meaning.", "Reference/@meaning", optional=True),
        ),
    ),
    Entity(
        "Why",
        "The producer's interpretation.",
        "Why",
        (
            Field(
                "importance",
                "float",
                "How much it matters, 0-1.",
                "Why/@importance",
                optional=True,
                ucd="meta.code.qual",
            ),
            Field("inferences", "Inference", "Inferences.", "Why/Inference", list=True),
        ),
    ),
    Entity(
        "Inference",
        "One inference about the event.",
        "Why/Inference",
        (
            Field(
                "probability",
                "float",
                "Its probability, 0-1.",
                "Inference/@probability",
                optional=True,
                ucd="stat.probability",
            ),
            Field("relation", "string", "Relation.", "Inference/@relation", optional=True),
            Field("names", "string", "Names of the object.", "Inference/Name", list=True),
            Field("concepts", "string", "What it is.", "Inference/Concept", list=True),
        ),
    ),
    Entity(
        "Citation",
        "An earlier event this one refers to.",
        "Citations/EventIVORN",
        (
            Field("ivorn", "string", "The earlier event.", "EventIVORN"),
            Field("cite", "Cite", "How it refers to it.", "EventIVORN/@cite"),
        ),
    ),
)
ENTITIES = {entity.name: entity for entity in MODEL}
ROOT = MODEL[0]


def _field_docs(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if field.unit:
        out["unit"] = field.unit
    if field.ucd:
        out["ucd"] = field.ucd
    return out


# -- Avro ----------------------------------------------------------------------------------------


def avro_schema(alert_schema: AlertSchema, payload: dict[str, Any]) -> dict[str, Any]:
    """The Avro binding, ``payload`` (the Rubin alert record, annotated) as ``what.payload``.

    Avro defines each named type once: the first use of an entity or enum spells it out and
    later uses name it.
    """
    defined: set[str] = set()

    def type_of(name: str) -> Any:
        if name == "payload":
            return copy.deepcopy(payload)
        if name == "timestamp":
            return {"type": "long", "logicalType": "timestamp-micros"}
        if name in SCALARS:
            return name
        if name in defined:
            return name
        defined.add(name)
        if name in ENUMS:
            return {"type": "enum", "name": name, "symbols": list(ENUMS[name])}
        return record(ENTITIES[name])

    def field_of(field: Field) -> dict[str, Any]:
        kind = type_of(field.type)
        out: dict[str, Any] = {"name": field.name, "doc": field.doc}
        if field.list:
            out["type"], out["default"] = {"type": "array", "items": kind}, []
        elif field.optional:
            out["type"], out["default"] = ["null", kind], None
        else:
            out["type"] = kind
            if field.default is not None:
                out["default"] = field.default
        out.update(_field_docs(field))
        return out

    def record(entity: Entity) -> dict[str, Any]:
        return {
            "type": "record",
            "name": entity.name,
            "doc": entity.doc,
            "fields": [field_of(f) for f in entity.fields],
        }

    defined.add(ROOT.name)
    schema = record(ROOT)
    schema["namespace"] = NAMESPACE
    schema["doc"] = (
        f"VOEvent 3 proposal (alertbench): VOEvent's semantic model in Avro; What carries the "
        f"producer's typed record ({alert_schema.namespace}.alert here)."
    )
    return schema


# -- JSON Schema ---------------------------------------------------------------------------------

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NON_FINITE = {"enum": ["NaN", "Infinity", "-Infinity"]}


def json_schema_file(alert_schema: AlertSchema) -> str:
    return f"voevent3-lsst-v{alert_schema.major}_{alert_schema.minor}.schema.json"


def json_schema(alert_schema: AlertSchema, payload_uri: str, uri_base: str) -> dict[str, Any]:
    """The JSON binding's schema: every field present (null for an optional one not given),
    no other members; ``what.payload`` refers to the Rubin alert's JSON Schema at
    ``payload_uri``. Numbers as in the alert's own JSON mapping: NaN and the infinities are
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; timestamps RFC 3339 in UTC."""

    def type_of(name: str) -> dict[str, Any]:
        if name == "payload":
            return {"$ref": payload_uri}
        if name == "string":
            return {"type": "string"}
        if name in ("double", "float"):
            return {"anyOf": [{"type": "number"}, _NON_FINITE]}
        if name == "timestamp":
            return {"type": "string", "format": "date-time"}
        if name in ENUMS:
            return {"enum": list(ENUMS[name])}
        return {"$ref": f"#/$defs/{name}"}

    def field_of(field: Field) -> dict[str, Any]:
        kind = type_of(field.type)
        if field.list:
            kind = {"type": "array", "items": kind}
        elif field.optional:
            kind = {"anyOf": [kind, {"type": "null"}]}
        return {
            "description": f"{field.doc} (VOEvent 2.0: {field.voevent2})",
            **kind,
            **_field_docs(field),
        }

    def record(entity: Entity) -> dict[str, Any]:
        return {
            "type": "object",
            "description": entity.doc,
            "properties": {f.name: field_of(f) for f in entity.fields},
            "required": [f.name for f in entity.fields],
            "additionalProperties": False,
        }

    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{uri_base}/{json_schema_file(alert_schema)}",
        "title": f"VOEvent 3 proposal (alertbench), JSON binding, {alert_schema.namespace}.alert",
    }
    schema.update(record(ROOT))
    schema["$defs"] = {e.name: record(e) for e in MODEL[1:]}
    return schema


# -- Protobuf ------------------------------------------------------------------------------------


def proto_file(alert_schema: AlertSchema) -> str:
    return f"voevent3_lsst_v{alert_schema.major}_{alert_schema.minor}.proto"


def proto_text(alert_schema: AlertSchema, payload_file: str) -> str:
    """The Protobuf binding: package ``org.ivoa.voevent.v3``, ``what.payload`` the Rubin
    mirror's ``alert`` message (imported from ``payload_file``). Field numbers follow the
    model's order; enums gain the zero value proto3 requires (``ROLE_UNSPECIFIED``: never
    written by us, refused when read); timestamps are int64 microseconds since 1970, UTC."""
    package = f"lsst.v{alert_schema.major}_{alert_schema.minor}"
    proto = {"string": "string", "double": "double", "float": "float", "timestamp": "int64"}
    lines = [
        "// GENERATED by `alertbench generate` from the VOEvent 3 model "
        "(refimpl/codecs/voevent3_model.py). Do not edit: regenerate.",
        'syntax = "proto3";',
        "",
        f"package {NAMESPACE};",
        "",
        f'import "{payload_file}";',
        "",
    ]
    for name, symbols in ENUMS.items():
        lines.append(f"enum {name} {{")
        lines.append(f"  {name.upper()}_UNSPECIFIED = 0;")
        lines += [f"  {symbol} = {i};" for i, symbol in enumerate(symbols, start=1)]
        lines += ["}", ""]
    for entity in MODEL:
        lines.append(f"// {entity.doc}")
        lines.append(f"message {entity.name} {{")
        for number, field in enumerate(entity.fields, start=1):
            if field.type == "payload":
                kind = f".{package}.alert"
            else:
                kind = proto.get(field.type, field.type)
            label = "repeated " if field.list else ""
            if field.optional and field.type in SCALARS:
                label = "optional "
            unit = f" [{field.unit}]" if field.unit else ""
            lines.append(f"  {label}{kind} {field.name} = {number};  // {field.doc}{unit}")
        lines += ["}", ""]
    return "\n".join(lines)


# -- for people ----------------------------------------------------------------------------------


def model_markdown() -> str:
    """schemas/voevent3/model.md: the model, entity by entity, with the VOEvent 2.0 mapping."""
    enums = ", ".join(f"`{name}` ({' / '.join(symbols)})" for name, symbols in ENUMS.items())
    lines = [
        "# The VOEvent 3 data model (alertbench proposal)",
        "",
        "GENERATED by `alertbench generate` from `refimpl/codecs/voevent3_model.py`, the one "
        "description every binding is generated from: Avro (`voevent3-lsst-v11_1.avsc`), JSON "
        "(`voevent3-lsst-v11_1.schema.json`) and Protobuf (`voevent3_lsst_v11_1.proto`). "
        "Types: `string`, `double`, `float` (32-bit), `timestamp` (UTC, microseconds), the "
        f"enums {enums}, an entity "
        "below, a list of either, and `payload`, the producer's own record (the Rubin alert).",
        "",
    ]
    for entity in MODEL:
        lines += [
            f"## {entity.name}",
            "",
            f"{entity.doc} VOEvent 2.0: `{entity.voevent2}`.",
            "",
            "| field | type | unit | UCD | VOEvent 2.0 | meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in entity.fields:
            kind = f"list of {f.type}" if f.list else f.type
            if f.optional:
                kind += ", optional"
            elif f.default is not None:
                kind += f", default `{f.default}`"
            lines.append(
                f"| `{f.name}` | {kind} | {f.unit or ''} | {f.ucd or ''} | `{f.voevent2}` "
                f"| {f.doc} |"
            )
        lines.append("")
    return "\n".join(lines)
