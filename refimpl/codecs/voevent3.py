"""A VOEvent 3 proposal: VOEvent's semantic model as an Avro schema, carrying the Rubin alert.

The design and its reasons are in ``schemas/voevent3/README.md``; in short:

* VOEvent's sections stay (ivorn, role, Who, What, WhereWhen, How, Why, Citations), so the
  semantic model the community knows is unchanged; only the serialization changes.
* ``What`` carries the producer's own typed record (here the Rubin alert, verbatim) instead of
  name/value ``Param`` strings. Units and UCDs move from every message into the schema, as
  ``unit`` and ``ucd`` attributes on the fields: they are said once per schema, not once per
  packet, and a consumer still finds them.
* ``WhereWhen`` keeps one position and one time, with the time scale named (TAI MJD here, as
  Rubin measures it: no leap-second conversion in the packet).
* Binary Avro in the same framing as Rubin's (:mod:`.wire`: ``0x00`` + big-endian schema id).
  VOEvent 3 schema ids are 3,000,000 + the payload's Rubin id (3001101 for a v11.1 payload), so
  they never collide with Rubin's own ids and the payload version can be read off the id.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from alertbench.refimpl.alert.schema import AlertSchema, load_schema
from alertbench.refimpl.codecs.avro import DEFAULT_ENGINE, AvroEngine
from alertbench.refimpl.codecs.base import Alert
from alertbench.refimpl.codecs.voevent import CUTOUTS, DEFAULT_IVORN_BASE, MODES, unit_and_ucd
from alertbench.refimpl.codecs.voevent3_model import ENUMS, VERSION, avro_schema
from alertbench.refimpl.codecs.wire import (
    VOEVENT3_ID_BASE,
    VOEVENT3_PROTOBUF_ID_BASE,
    frame,
    schema_id_of,
    unframe,
)

from alertbench.errors import ConfigError, DecodeError, EncodeError, UnknownSerializerError

ID_BASE = VOEVENT3_ID_BASE
BINDINGS = ("avro", "json", "protobuf")
MEDIA_TYPES = {
    "avro": "application/vnd.ivoa.voevent3+avro",
    "json": "application/vnd.ivoa.voevent3+json",
    "protobuf": "application/vnd.ivoa.voevent3+protobuf",
}
ROLES = list(ENUMS["Role"])
CITES = list(ENUMS["Cite"])


def _annotate(record: dict[str, Any]) -> dict[str, Any]:
    """Add ``unit``/``ucd`` attributes to the fields of the payload's records, recursively."""
    name = record["name"].split(".")[-1]
    for field in record["fields"]:
        unit, ucd = unit_and_ucd(name, field["name"])
        if unit:
            field["unit"] = unit
        if ucd:
            field["ucd"] = ucd
        for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
            if isinstance(branch, dict) and branch.get("type") == "record":
                _annotate(branch)
            elif isinstance(branch, dict) and branch.get("type") == "array":
                items = branch["items"]
                if isinstance(items, dict) and items.get("type") == "record":
                    _annotate(items)
    return record


def voevent3_schema(alert_schema: AlertSchema) -> dict[str, Any]:
    """The VOEvent 3 Avro schema whose ``What`` carries ``alert_schema``'s alert: the Avro
    binding of the model in :mod:`.voevent3_model`."""
    # The unresolved definition: each named type is defined once, as Avro requires.
    return avro_schema(alert_schema, _annotate(copy.deepcopy(alert_schema.definition)))


def _unix_micros(mjd: float | None) -> int:
    """Unix microseconds of an MJD, or 0 (the epoch) when it is not a date in years 1-9999."""
    if mjd is None or not (-678_575.0 < mjd < 2_973_483.0):
        return 0
    return round((mjd - 40_587.0) * 86_400_000_000)


def schema_file(alert_schema: AlertSchema) -> str:
    return f"voevent3-lsst-v{alert_schema.major}_{alert_schema.minor}.avsc"


_KEY_ORDER = (
    "type",
    "name",
    "namespace",
    "doc",
    "fields",
    "items",
    "symbols",
    "logicalType",
    "default",
    "unit",
    "ucd",
)


def _ordered(node: Any) -> Any:
    """The same schema with keys in one fixed order: the loaded Rubin schema's key order varies
    from process to process, and the committed file must not."""
    if isinstance(node, list):
        return [_ordered(n) for n in node]
    if not isinstance(node, dict):
        return node
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    keys = sorted(node, key=lambda k: (rank.get(k, len(rank)), k))
    return {k: _ordered(node[k]) for k in keys}


def schema_json(alert_schema: AlertSchema) -> str:
    return json.dumps(_ordered(voevent3_schema(alert_schema)), indent=2) + "\n"


@functools.cache
def _engine(version: str, engine: str) -> AvroEngine:
    import fastavro

    alert_schema = load_schema(version)
    definition = voevent3_schema(alert_schema)
    shim = AlertSchema(
        version=version,
        major=alert_schema.major,
        minor=alert_schema.minor,
        schema_id=ID_BASE + alert_schema.schema_id,
        definition=definition,
        resolved=definition,
        parsed=fastavro.parse_schema(definition),
        lsst=None,
    )
    return AvroEngine(shim, engine)


class Voevent3Serializer:
    """The VOEvent 3 proposal: a VOEvent whose What is the Rubin alert, in framed binary Avro."""

    name = "voevent3"
    media_type = "application/vnd.ivoa.voevent3+avro"

    @staticmethod
    def recognizes(data: bytes) -> bool:
        """A Confluent-framed message with an id in the VOEvent 3 range."""
        schema_id = schema_id_of(data)
        return schema_id is not None and ID_BASE <= schema_id < VOEVENT3_PROTOBUF_ID_BASE

    def __init__(
        self,
        schema_version: str | None = None,
        mode: str = "embed",
        ivorn_base: str = DEFAULT_IVORN_BASE,
        cutout_url_base: str = "https://alertbench.example/cutouts",
        engine: str = DEFAULT_ENGINE,
        binding: str = "avro",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"cutout mode must be one of {MODES}, got {mode!r}")
        if binding not in BINDINGS:
            raise ConfigError(f"binding must be one of {BINDINGS}, got {binding!r}")
        self.binding = binding
        self.alert_schema = load_schema(schema_version)
        self.schema_id = ID_BASE + self.alert_schema.schema_id
        self.mode = mode
        self.ivorn_base = ivorn_base
        self.cutout_url_base = cutout_url_base.rstrip("/")
        self._engine = _engine(self.alert_schema.version, engine)
        self.content_type = f"application/vnd.ivoa.voevent3+avro; schema-id={self.schema_id}"
        self._other: Any = None  # the JSON or Protobuf binding (voevent3_bindings), if chosen
        if binding != "avro":
            from alertbench.refimpl.codecs.voevent3_bindings import JsonBinding, ProtobufBinding
        if binding == "json":
            self._other = JsonBinding(self.alert_schema)
            self.media_type = self.content_type = self._other.media_type
        elif binding == "protobuf":
            self._other = ProtobufBinding(self.alert_schema)
            self.schema_id = self._other.schema_id
            self.media_type = self._other.media_type
            self.content_type = f"{self.media_type}; schema-id={self.schema_id}"

    def to_event(self, alert: Alert) -> dict[str, Any]:
        source = alert.get("diaSource") or {}
        source_id = alert.get("diaSourceId", alert.get("alertId"))
        payload = alert
        references = [
            {"uri": "https://dmtn-102.lsst.io", "type": "url", "mimetype": None, "meaning": None}
        ]
        if self.mode == "reference":
            payload = dict(alert)
            for name in CUTOUTS:
                if payload.get(name) is not None:
                    payload[name] = None
                    references.append(
                        {
                            "uri": f"{self.cutout_url_base}/{source_id}/{name}.fits",
                            "type": name,
                            "mimetype": "image/fits",
                            "meaning": None,
                        }
                    )
        errors = [e for e in (source.get("raErr"), source.get("decErr")) if e is not None]
        reliability = source.get("reliability")
        processed = source.get("timeProcessedMjdTai")
        return {
            "ivorn": f"{self.ivorn_base}#{source_id}",
            "role": "observation",
            "version": VERSION,
            "who": {
                "authorIvorn": self.ivorn_base,
                "date": _unix_micros(processed),
                "shortName": "Rubin alert stream (alertbench simulation)",
                "contactEmail": None,
            },
            "what": {"payloadSchema": f"{self.alert_schema.namespace}.alert", "payload": payload},
            "whereWhen": {
                "coordSystem": "ICRS",
                "ra": source["ra"],
                "dec": source["dec"],
                "errorRadius": max(errors) if errors else 0.0,
                "timeScale": "TAI",
                "mjd": source["midpointMjdTai"],
            }
            if "ra" in source and "midpointMjdTai" in source
            else None,
            "how": {
                "descriptions": [
                    "Difference-image detection by the Rubin Observatory LSST alert production "
                    "pipeline (simulated by alertbench)."
                ],
                "references": references,
            },
            "why": {
                "importance": None,
                "inferences": [
                    {
                        "probability": reliability,
                        "relation": None,
                        "names": [],
                        "concepts": ["Transient or variable source"],
                    }
                ],
            },
            "citations": [],
        }

    @classmethod
    def for_content_type(cls, content_type: str, **options: Any) -> Voevent3Serializer:
        """The serializer that reads messages of ``content_type`` (any of the bindings)."""
        media_type = content_type.split(";", 1)[0].strip().lower()
        for binding, known in MEDIA_TYPES.items():
            if media_type == known:
                return cls(**{**options, "binding": binding})
        raise UnknownSerializerError(f"not a VOEvent 3 content type: {content_type!r}")

    def dumps(self, alert: Alert) -> bytes:
        if self._other is not None:
            return self._other.dumps(self.to_event(alert))
        try:
            body = self._engine.encode(self.to_event(alert))
        except Exception as exc:
            raise EncodeError(
                f"alert does not fit the VOEvent 3 schema: {exc}", codec=self.name
            ) from exc
        return frame(self.schema_id, body)

    def loads_event(self, data: bytes) -> dict[str, Any]:
        """The whole VOEvent 3 record (all sections), the same from every binding."""
        if self._other is not None:
            return self._other.loads(data)
        _, body = unframe(data, codec=self.name, expected_id=self.schema_id)
        try:
            return self._engine.decode(body)
        except Exception as exc:
            raise DecodeError(
                f"not a VOEvent 3 event: {type(exc).__name__}: {exc}",
                codec=self.name,
                raw=bytes(data),
            ) from exc

    def loads(self, data: bytes) -> Alert:
        return self.loads_event(data)["what"]["payload"]
