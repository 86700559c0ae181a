"""Rubin alerts as JSON, described by a JSON Schema generated from the Avro schema, and back.

Why JSON at all: it is what a web service, a notebook or a JavaScript broker client reads with no
schema registry and no Avro library; this codec says exactly what that costs (bytes and time) and
what it keeps. The mapping, one decision per Avro type (the generated JSON Schema in
``schemas/json/`` states each one where a consumer reads it):

* The document is one JSON object with the Avro field names. Its first member is ``"$schema"``, the
  ``$id`` of the JSON Schema it follows (one per Rubin schema version), so a consumer picks the
  schema from the message itself, as the Avro wire format's schema id lets it.
* ``int`` and ``long`` are JSON integers, so ids stay numbers as in Avro. Rubin's 64-bit ids exceed
  2**53: Python, Go, Rust, Java and this codec read them exactly, but JavaScript's ``JSON.parse``
  rounds them to the nearest double; a JS consumer needs a 64-bit-aware parser. Strings would have
  spared JS that at the cost of a second type for every id in every other language; the schema's
  ``description`` of each ``long`` says so.
* ``float`` (float32) and ``double`` are JSON numbers written as the shortest decimal that reads
  back to the same double: for a float32 field that is the double the Avro decoders return
  (fastavro, the native engine), so a JSON round trip is exact with ``==`` and agrees with Avro.
* NaN and the infinities, which JSON has not, are the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"`` (the proto3 JSON mapping's choice): null stays null, distinct from NaN.
* ``bytes`` (the FITS cutouts) are base64 strings; timestamps (``timestamp-micros``) are RFC 3339
  strings in UTC with microseconds when the alert holds a datetime (as Avro readers return), and
  the integer microseconds when it holds the Avro number (as the simulator fills older schemas'
  timestamps), so each reads back as it was; booleans are JSON booleans; null is null.

The library is msgspec, measured against orjson on the 100-alert pool (seed 11) on one machine:
raw encode 280 vs 240 us an alert, raw untyped decode 407 vs 314 us, msgspec's typed decode 437 us
(type checks included). msgspec wins once checking is counted: it encodes bytes and datetimes
itself and decodes *typed*, into the exact dicts the Avro path gives, checking every type and range
in C while it parses; orjson leaves bytes, datetimes and every type check to a Python walk of
thousands of values. The typed decoder takes
numbers only in float fields, so a document without NaN needs no walk at all; one that holds
``"NaN"`` fails that decoder and is decoded again by one that also accepts the three strings.

``dumps`` checks only what JSON cannot carry as is (non-finite floats): an alert of the wrong
shape gives a document that ``loads`` refuses (the Avro codec refuses it at ``dumps``).

Untrusted input: documents over ``max_bytes`` are refused unread; every number out of its Avro
range (int32, int64, double), a wrong type anywhere, a missing field, bad base64, invalid UTF-8,
truncation or nesting where the schema has none ends in a :class:`DecodeError` keeping the bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
import re
from collections.abc import Callable
from itertools import chain
from typing import Annotated, Any, Literal, TypedDict

import msgspec
from alertbench.refimpl.alert.records import FieldSpec, field_specs
from alertbench.refimpl.alert.schema import AlertSchema, available_versions, load_schema
from alertbench.refimpl.codecs.base import Alert

from alertbench.errors import ConfigError, DecodeError, EncodeError

MEDIA_TYPE = "application/vnd.rubin.alert+json"
SCHEMA_URI_BASE = "https://alertbench.example/schemas/json"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = 3.4028234663852886e38
_PREFIX = re.compile(rb'\s*\{\s*"\$schema"\s*:\s*"([^"\\]{1,200})"')


def schema_file(schema: AlertSchema) -> str:
    """The JSON Schema's file name in ``schemas/json/`` for one Rubin schema version."""
    return f"lsst.v{schema.major}_{schema.minor}.alert.schema.json"


def schema_uri(schema: AlertSchema) -> str:
    """The JSON Schema's ``$id``, which every alert document names in its ``"$schema"``."""
    return f"{SCHEMA_URI_BASE}/{schema_file(schema)}"


def _is_timestamp(spec: FieldSpec) -> bool:
    return isinstance(spec.inner, dict) and spec.inner.get("logicalType", "").startswith(
        "timestamp-"
    )


def _record_of(spec: FieldSpec) -> dict[str, Any] | None:
    """The record type of a record field or of an array-of-records field."""
    if spec.kind == "record":
        inner: dict[str, Any] = spec.inner
        return inner
    if spec.kind == "array" and isinstance(spec.item, dict):
        item: dict[str, Any] = spec.item
        return item
    return None


# -- the JSON Schema ---------------------------------------------------------------------------


def _number(kind: str) -> dict[str, Any]:
    finite: dict[str, Any] = {"type": "number"}
    if kind == "float":
        finite.update(minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX)
    return {
        "description": (
            f"Avro {kind}: a JSON number (the shortest decimal of the double "
            + ("an Avro reader returns for this float32" if kind == "float" else "it holds")
            + '), or "NaN", "Infinity", "-Infinity", which JSON numbers cannot hold.'
        ),
        "anyOf": [finite, {"enum": list(NON_FINITE)}],
    }


def _field_schema(spec: FieldSpec, defs: dict[str, Any]) -> dict[str, Any]:
    kind = spec.kind
    base: dict[str, Any]
    if _is_timestamp(spec):
        base = {"$ref": "#/$defs/timestamp"}
    elif kind == "int":
        base = {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]}
    elif kind == "long":
        base = {"$ref": "#/$defs/long"}
    elif kind in ("float", "double"):
        base = {"$ref": f"#/$defs/{kind}"}
    elif kind == "boolean":
        base = {"type": "boolean"}
    elif kind == "string":
        base = {"type": "string"}
    elif kind == "bytes":
        base = {"$ref": "#/$defs/bytes"}
    elif kind == "record":
        base = {"$ref": f"#/$defs/{_define(spec.inner, defs)}"}
    elif kind == "array" and isinstance(spec.item, dict):
        base = {"type": "array", "items": {"$ref": f"#/$defs/{_define(spec.item, defs)}"}}
    else:
        raise ConfigError(f"field {spec.name!r}: Avro type {kind!r} has no JSON mapping here")
    out: dict[str, Any] = {"anyOf": [base, {"type": "null"}]} if spec.nullable else base
    if spec.doc:
        out = {"description": spec.doc, **out}
    return out


def _define(record: dict[str, Any], defs: dict[str, Any]) -> str:
    name: str = record["name"].split(".")[-1]
    if name not in defs:
        defs[name] = {}  # placed first: a record that refers to itself finds its name
        specs = field_specs(record)
        body: dict[str, Any] = {"type": "object"}
        if record.get("doc"):
            body["description"] = record["doc"]
        body["properties"] = {s.name: _field_schema(s, defs) for s in specs}
        body["required"] = [s.name for s in specs]
        body["additionalProperties"] = False
        defs[name] = body
    return name


def json_schema(schema: AlertSchema | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the alert documents this codec writes for ``schema``."""
    schema = schema or load_schema()
    defs: dict[str, Any] = {
        "long": {
            "description": (
                "Avro long: a JSON integer in the int64 range. Ids are numbers, as in Avro, and "
                "exceed 2**53: read them with a 64-bit-aware parser (JavaScript's JSON.parse "
                "rounds them to the nearest double; Python, Go, Rust and Java do not)."
            ),
            "type": "integer",
            "minimum": INT64[0],
            "maximum": INT64[1],
        },
        "float": _number("float"),
        "double": _number("double"),
        "timestamp": {
            "description": (
                "Avro timestamp-micros: an RFC 3339 date-time in UTC (what an Avro reader "
                "returns, a datetime), or the Avro value itself, integer microseconds since "
                "1970-01-01T00:00:00Z, when the producer's alert held that."
            ),
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]},
            ],
        },
        "bytes": {
            "description": "Avro bytes (the FITS cutouts): standard base64 with padding.",
            "type": "string",
            "contentEncoding": "base64",
            "pattern": "^[A-Za-z0-9+/]*={0,2}$",
        },
    }
    fields = field_specs(schema.resolved)
    root_props: dict[str, Any] = {
        "$schema": {"description": "This schema's $id.", "const": schema_uri(schema)}
    }
    root_props.update({s.name: _field_schema(s, defs) for s in fields})
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_uri(schema),
        "title": f"Rubin alert, Avro schema {schema.version}, as JSON (alertbench)",
        "description": (
            f"Generated from the Rubin Avro alert schema {schema.version} "
            f"({schema.namespace}) by alertbench.refimpl.codecs.jsonalert; do not edit. Content "
            f'type {MEDIA_TYPE}; schema="{schema_uri(schema)}".'
        ),
        "type": "object",
        "properties": root_props,
        "required": ["$schema", *(s.name for s in fields)],
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_text(schema: AlertSchema | None = None) -> str:
    """The JSON Schema as the committed file holds it (``alertbench generate`` writes it)."""
    import json

    return json.dumps(json_schema(schema), indent=2) + "\n"


# -- typed decoding: msgspec types built from the Avro schema -----------------------------------

_NonFinite = Literal["NaN", "Infinity", "-Infinity"]
_Int32 = Annotated[int, msgspec.Meta(ge=INT32[0], le=INT32[1])]
_Int64 = Annotated[int, msgspec.Meta(ge=INT64[0], le=INT64[1])]
_Number = float | _NonFinite


def _msgspec_type(spec: FieldSpec, types: dict[str, Any], lenient: bool) -> Any:
    kind = spec.kind
    base: Any
    if _is_timestamp(spec):
        base = dt.datetime | _Int64
    elif kind == "int":
        base = _Int32
    elif kind == "long":
        base = _Int64
    elif kind in ("float", "double"):
        base = _Number if lenient else float
    elif kind == "boolean":
        base = bool
    elif kind == "string":
        base = str
    elif kind == "bytes":
        base = bytes
    elif kind == "record":
        base = _typed_dict(spec.inner, types, lenient)
    elif kind == "array" and isinstance(spec.item, dict):
        base = list[_typed_dict(spec.item, types, lenient)]  # type: ignore[misc]
    else:
        raise ConfigError(f"field {spec.name!r}: Avro type {kind!r} has no JSON mapping here")
    return base | None if spec.nullable else base


def _typed_dict(record: dict[str, Any], types: dict[str, Any], lenient: bool) -> Any:
    name = record["name"]
    if name not in types:
        fields = {s.name: _msgspec_type(s, types, lenient) for s in field_specs(record)}
        types[name] = TypedDict(name.split(".")[-1], fields)  # type: ignore[operator]
    return types[name]


# -- finding NaN and infinities fast -----------------------------------------------------------


def _values_getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    return operator.itemgetter(*names)


class _RecordPlan:
    """One record type's float fields and nested records, to scan and rewrite non-finite floats.

    Why the scan is shaped so: msgspec writes NaN as null, so ``dumps`` must find non-finite
    floats first, and a simulated alert holds a few thousand (~85 light-curve rows): a Python loop
    over them costs about as much as msgspec's whole encode. ``sum(filter(None, values))`` over
    itemgetter tuples runs in C (~85 us an alert on the pool) and is non-finite exactly when some
    value is (None and 0.0 are dropped and cannot change finiteness; a finite sum that overflows
    only sends the alert to the exact, slower path). Decoding needs no scan: see ``loads``.
    """

    def __init__(self, record: dict[str, Any], plans: dict[str, _RecordPlan]) -> None:
        plans[record["name"]] = self
        specs = field_specs(record)
        self.floats = [s.name for s in specs if s.kind in ("float", "double")]
        self.get_floats = _values_getter(self.floats) if self.floats else None
        self.records: list[tuple[str, bool, _RecordPlan]] = []
        for spec in specs:
            inner = _record_of(spec)
            if inner is not None:
                plan = plans.get(inner["name"]) or _RecordPlan(inner, plans)
                self.records.append((spec.name, spec.kind == "array", plan))

    def finite(self, record: dict[str, Any]) -> bool:
        """Whether every float of ``record`` and of the records in it is finite."""
        if self.get_floats is not None and not math.isfinite(
            sum(filter(None, self.get_floats(record)), 0.0)
        ):
            return False
        for name, many, plan in self.records:
            value = record.get(name)
            if value is None:
                continue
            if not many:
                if not plan.finite(value):
                    return False
            elif plan.records or plan.get_floats is None:  # rows with records of their own
                if not all(map(plan.finite, value)):
                    return False
            elif not math.isfinite(  # flat rows: one pass in C over every row's floats
                sum(filter(None, chain.from_iterable(map(plan.get_floats, value))), 0.0)
            ):
                return False
        return True

    def to_json(self, record: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with non-finite floats as their JSON strings."""
        out = dict(record)
        for name in self.floats:
            value = out.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                out[name] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        for name, many, plan in self.records:
            value = out.get(name)
            if value is not None:
                out[name] = [plan.to_json(v) for v in value] if many else plan.to_json(value)
        return out

    def from_json(self, record: dict[str, Any]) -> None:
        """Turn the strings of non-finite floats back into floats, in place."""
        for name in self.floats:
            value = record.get(name)
            if isinstance(value, str):
                record[name] = NON_FINITE[value]
        for name, many, plan in self.records:
            value = record.get(name)
            if value is None:
                continue
            for item in value if many else (value,):
                plan.from_json(item)


class _Version:
    """Everything compiled once per Rubin schema version: msgspec decoder and the float plan."""

    def __init__(self, schema: AlertSchema) -> None:
        self.schema = schema
        self.uri = schema_uri(schema)
        self.decoder = self._decoder(lenient=False)
        self.lenient_decoder = self._decoder(lenient=True)
        self.plan = _RecordPlan(schema.resolved, {})

    def _decoder(self, lenient: bool) -> msgspec.json.Decoder[Any]:
        """Strict: float fields hold numbers only, so the common document needs no Python walk
        after msgspec; lenient: they may hold the strings of NaN and the infinities too."""
        root = _typed_dict(self.schema.resolved, {}, lenient)
        fields = {"$schema": Literal[self.uri], **root.__annotations__}
        return msgspec.json.Decoder(TypedDict("JsonAlert", fields))  # type: ignore[operator]


@functools.cache
def _version(version: str) -> _Version:
    return _Version(load_schema(version))


@functools.cache
def _versions_by_uri() -> dict[str, str]:
    return {schema_uri(load_schema(v)): v for v in available_versions()}


class JsonSerializer:
    """Rubin alerts as JSON documents that validate against the generated JSON Schema."""

    name = "json"
    media_type = MEDIA_TYPE

    @staticmethod
    def recognizes(data: bytes) -> bool:
        """A JSON object: the first byte that is not white space is ``{``."""
        return bytes(data[:64]).lstrip()[:1] == b"{"

    def __init__(self, schema_version: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.schema = load_schema(schema_version)
        self.max_bytes = max_bytes
        self._own = _version(self.schema.version)
        self.content_type = f'{MEDIA_TYPE}; schema="{self._own.uri}"'
        self._encoder = msgspec.json.Encoder()

    def dumps(self, alert: Alert) -> bytes:
        own = self._own
        try:
            document = {"$schema": own.uri, **alert}
            if not own.plan.finite(alert):
                document = {"$schema": own.uri, **own.plan.to_json(alert)}
            return self._encoder.encode(document)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"alert cannot be written as JSON: {exc}", codec=self.name) from exc

    def _version_of(self, data: bytes) -> _Version:
        """The schema version a document names in its leading ``"$schema"`` member."""
        match = _PREFIX.match(data, 0, 512)
        if match is not None:
            uri = match.group(1).decode("utf-8", "replace")
        else:  # "$schema" is not the first member: read the document once untyped to find it
            try:
                document = msgspec.json.decode(data)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise DecodeError(
                    f"not a JSON alert: {exc}", codec=self.name, raw=data[:1024]
                ) from exc
            if not isinstance(document, dict) or not isinstance(document.get("$schema"), str):
                raise DecodeError(
                    'not a JSON alert: no "$schema" member naming its alert schema',
                    codec=self.name,
                    raw=data[:1024],
                )
            uri = document["$schema"]
        if uri == self._own.uri:
            return self._own
        version = _versions_by_uri().get(uri)
        if version is None:
            raise DecodeError(
                f"unknown alert schema {uri!r} (this installation knows "
                f"{', '.join(sorted(_versions_by_uri()))})",
                codec=self.name,
                raw=data[:1024],
            )
        return _version(version)

    def loads(self, data: bytes) -> Alert:
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise DecodeError(
                f"document of {len(data)} bytes exceeds the {self.max_bytes}-byte limit",
                codec=self.name,
                raw=data[:1024],
            )
        version = self._version_of(data)
        alert: Alert
        try:
            alert = version.decoder.decode(data)
        except msgspec.ValidationError:
            # a string where a float belongs: NaN or an infinity, or a bad document
            alert = self._decode_lenient(version, data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise self._error(version, data, exc) from exc
        del alert["$schema"]
        return alert

    def _decode_lenient(self, version: _Version, data: bytes) -> Alert:
        try:
            alert: Alert = version.lenient_decoder.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError
            raise self._error(version, data, exc) from exc
        version.plan.from_json(alert)
        return alert

    def _error(self, version: _Version, data: bytes, exc: Exception) -> DecodeError:
        return DecodeError(
            f"not a schema {version.schema.version} JSON alert: {exc}",
            codec=self.name,
            raw=data[:1024],
        )
