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
from alertbench.refimpl.codecs.wire import VOEVENT3_ID_BASE, frame, schema_id_of, unframe

from alertbench.errors import ConfigError, DecodeError, EncodeError

NAMESPACE = "org.ivoa.voevent.v3"
VERSION = "3.0-alertbench-proposal"
ID_BASE = VOEVENT3_ID_BASE
ROLES = ["observation", "prediction", "utility", "test"]
CITES = ["followup", "supersedes", "retraction"]


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
    """The VOEvent 3 Avro schema whose ``What`` carries ``alert_schema``'s alert."""
    # The unresolved definition: each named type is defined once, as Avro requires.
    payload = _annotate(copy.deepcopy(alert_schema.definition))
    string_list = {"type": "array", "items": "string"}
    reference = {
        "type": "record",
        "name": "Reference",
        "doc": "A link to more information or to data (VOEvent 2.0 <Reference>).",
        "fields": [
            {"name": "uri", "type": "string"},
            {"name": "type", "type": ["null", "string"], "default": None},
            {"name": "mimetype", "type": ["null", "string"], "default": None},
            {"name": "meaning", "type": ["null", "string"], "default": None},
        ],
    }
    return {
        "type": "record",
        "name": "VOEvent",
        "namespace": NAMESPACE,
        "doc": "VOEvent 3 proposal (alertbench): VOEvent's semantic model in Avro; What carries "
        f"the producer's typed record ({alert_schema.namespace}.alert here).",
        "fields": [
            {"name": "ivorn", "type": "string", "doc": "Identifier of this event."},
            {"name": "role", "type": {"type": "enum", "name": "Role", "symbols": ROLES}},
            {"name": "version", "type": "string", "default": VERSION},
            {
                "name": "who",
                "type": {
                    "type": "record",
                    "name": "Who",
                    "fields": [
                        {"name": "authorIvorn", "type": "string"},
                        {
                            "name": "date",
                            "type": {"type": "long", "logicalType": "timestamp-micros"},
                            "doc": "When the event was made, UTC.",
                        },
                        {"name": "shortName", "type": ["null", "string"], "default": None},
                        {"name": "contactEmail", "type": ["null", "string"], "default": None},
                    ],
                },
            },
            {
                "name": "what",
                "type": {
                    "type": "record",
                    "name": "What",
                    "fields": [
                        {
                            "name": "payloadSchema",
                            "type": "string",
                            "doc": "Full name of the payload record type, e.g. lsst.v11_1.alert.",
                        },
                        {"name": "payload", "type": payload},
                    ],
                },
            },
            {
                "name": "whereWhen",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "WhereWhen",
                        "fields": [
                            {"name": "coordSystem", "type": "string", "default": "ICRS"},
                            {"name": "ra", "type": "double", "unit": "deg", "ucd": "pos.eq.ra"},
                            {"name": "dec", "type": "double", "unit": "deg", "ucd": "pos.eq.dec"},
                            {
                                "name": "errorRadius",
                                "type": "float",
                                "unit": "deg",
                                "ucd": "stat.error;pos.eq",
                            },
                            {"name": "timeScale", "type": "string", "default": "TAI"},
                            {"name": "mjd", "type": "double", "unit": "d", "ucd": "time.epoch"},
                        ],
                    },
                ],
                "default": None,
            },
            {
                "name": "how",
                "type": {
                    "type": "record",
                    "name": "How",
                    "fields": [
                        {"name": "descriptions", "type": string_list, "default": []},
                        {
                            "name": "references",
                            "type": {"type": "array", "items": reference},
                            "default": [],
                        },
                    ],
                },
            },
            {
                "name": "why",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Why",
                        "fields": [
                            {"name": "importance", "type": ["null", "float"], "default": None},
                            {
                                "name": "inferences",
                                "type": {
                                    "type": "array",
                                    "items": {
                                        "type": "record",
                                        "name": "Inference",
                                        "fields": [
                                            {
                                                "name": "probability",
                                                "type": ["null", "float"],
                                                "default": None,
                                            },
                                            {
                                                "name": "relation",
                                                "type": ["null", "string"],
                                                "default": None,
                                            },
                                            {"name": "names", "type": string_list, "default": []},
                                            {
                                                "name": "concepts",
                                                "type": string_list,
                                                "default": [],
                                            },
                                        ],
                                    },
                                },
                                "default": [],
                            },
                        ],
                    },
                ],
                "default": None,
            },
            {
                "name": "citations",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Citation",
                        "fields": [
                            {"name": "ivorn", "type": "string"},
                            {
                                "name": "cite",
                                "type": {"type": "enum", "name": "Cite", "symbols": CITES},
                            },
                        ],
                    },
                },
                "default": [],
            },
        ],
    }


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
        return schema_id is not None and schema_id >= ID_BASE

    def __init__(
        self,
        schema_version: str | None = None,
        mode: str = "embed",
        ivorn_base: str = DEFAULT_IVORN_BASE,
        cutout_url_base: str = "https://alertbench.example/cutouts",
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"cutout mode must be one of {MODES}, got {mode!r}")
        self.alert_schema = load_schema(schema_version)
        self.schema_id = ID_BASE + self.alert_schema.schema_id
        self.mode = mode
        self.ivorn_base = ivorn_base
        self.cutout_url_base = cutout_url_base.rstrip("/")
        self._engine = _engine(self.alert_schema.version, engine)
        self.content_type = f"application/vnd.ivoa.voevent3+avro; schema-id={self.schema_id}"

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

    def dumps(self, alert: Alert) -> bytes:
        try:
            body = self._engine.encode(self.to_event(alert))
        except Exception as exc:
            raise EncodeError(
                f"alert does not fit the VOEvent 3 schema: {exc}", codec=self.name
            ) from exc
        return frame(self.schema_id, body)

    def loads_event(self, data: bytes) -> dict[str, Any]:
        """The whole VOEvent 3 record (all sections)."""
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
