"""Rubin alerts as VOEvent 2.0 XML, valid against the official XSD, and back.

The mapping (generated as a table in ``schemas/voevent-mapping.md`` by ``alertbench mapping``):

* ``Who``: ``AuthorIVORN`` and ``Date`` (when the packet was made: the source's processing time).
* ``What``: the alert's own scalar fields as ``Param``s; each record (``diaSource``,
  ``diaObject``, ``ssSource``, ``mpc_orbits``) as a ``Group`` of ``Param``s named after its fields,
  with units and UCDs where the field has a physical meaning; each light-curve array
  (``prvDiaSources``, ``prvDiaForcedSources``) as a ``Table`` with one ``Field`` per column and a
  ``rows`` Param; the three cutouts as ``Param``s holding base64 FITS in ``<Value>`` (``embed``
  mode) or a ``<Reference uri=... mimetype="image/fits"/>`` (``reference`` and ``compact``).
* ``WhereWhen``: ICRS position (deg) with ``Error2Radius`` and the observation time in ISO UTC,
  in the ``UTC-ICRS-TOPO`` STC system VOEvent 2.0 uses (a convenience copy: ``What`` is
  authoritative).
* ``How`` and ``Why`` (the real/bogus reliability as an ``Inference`` probability), and an ``ivorn``
  per alert: ``<base>#<diaSourceId>``.

What XML cannot carry exactly (listed in the mapping document, handled in the tests): float32
fields are written as the shortest decimal that reads back to the same float32, so they are exact;
strings cannot hold XML-forbidden control characters; an empty string in a ``Table`` cell reads
back as null; in ``reference`` mode the cutout bytes are not in the packet (they read back as None).

The ``compact`` mode is for VO users who filter a stream (VTP, Comet) and fetch details of the few
events they keep: a packet carries the triggering source (the ``diaSource`` Group), the object
summary (``diaObject``, and ``ssSource``/``ssObject``/``mpc_orbits`` where the schema has them), the
alert's own scalar fields, ``WhereWhen`` and ``Why``, but neither the light curve nor the cutouts:
each cutout is a ``Param`` holding ``<Reference uri="<reference_base>/<diaSourceId>/<cutout>.fits"
mimetype="image/fits"/>``, and the light curve is one ``Group name="lightCurve"`` with a row-count
``Param`` per history table (``prvDiaSources``...) and one ``<Reference uri="<reference_base>/
<diaSourceId>/lightcurve.xml" type="lightCurve" mimetype="application/x-votable+xml"/>``.
``reference_base`` defaults to the base ``reference`` mode uses. What a compact packet reads back
to: every field present (the alert's scalars and records) exactly as in ``embed`` mode; every
history table (``prvDiaSources``, ``prvDiaForcedSources``, ``prvDiaNondetectionLimits``) and every
cutout as None (all are nullable in every shipped schema; the row counts and URIs stay in the XML,
not in the alert). A simulated alert is ~18 KB this way (schema 11.1), whatever its history.

Untrusted input: documents with a DTD or entity declarations are refused before parsing, the
parser never resolves entities or touches the network, and documents over ``max_bytes`` are
refused, so "billion laughs", external entities and huge attributes all end in a DecodeError.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import warnings
from array import array
from typing import Any

import numpy as np
from alertbench.refimpl.alert.records import FieldSpec, field_specs
from alertbench.refimpl.alert.schema import AlertSchema, load_schema
from alertbench.refimpl.codecs.base import Alert
from alertbench.refimpl.codecs.zstdframe import DEFAULT_LEVEL, ZstdFrameError, ZstdFrames
from astropy.time import Time
from lxml import etree

from alertbench.errors import ConfigError, DecodeError, EncodeError, UnknownSerializerError
from alertbench.xmlsafe import VOEVENT_NS, UnsafeXmlError, parse_untrusted, voevent_xsd

XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA_LOCATION = f"{VOEVENT_NS} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
CUTOUTS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")
MODES = ("embed", "reference", "compact")
LIGHT_CURVE = "lightCurve"
"""The ``What/Group`` a compact packet points at its light curve with (no Avro field's name)."""
DEFAULT_REFERENCE_BASE = "https://alertbench.example/cutouts"
DEFAULT_IVORN_BASE = "ivo://alertbench.example/rubin-sim"
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
XML_MEDIA_TYPE = "application/x-voevent+xml"
ZSTD_MEDIA_TYPE = "application/x-voevent+xml+zstd"
"""Per-message zstd XML: a media type of its own, not a parameter, so a consumer dispatching on
the media type cannot hand zstd bytes to an XML parser, and a transport that carries only XML
(VTP) refuses it (:meth:`Capabilities.carries` ignores parameters)."""
COMPRESSIONS = ("none", "zstd")


def unit_and_ucd(record: str, name: str) -> tuple[str | None, str | None]:
    """Unit and UCD (IVOA UCD1+) of a field, by the conventions of Rubin's column names."""
    main = record in ("diaSource", "diaObject")
    if name in ("ra", "trailRa", "ephRa"):
        return "deg", "pos.eq.ra;meta.main" if main and name == "ra" else "pos.eq.ra"
    if name in ("dec", "trailDec", "ephDec"):
        return "deg", "pos.eq.dec;meta.main" if main and name == "dec" else "pos.eq.dec"
    if name in ("raErr", "trailRaErr"):
        return "deg", "stat.error;pos.eq.ra"
    if name in ("decErr", "trailDecErr"):
        return "deg", "stat.error;pos.eq.dec"
    if name.endswith("MjdTai"):
        return "d", "time.epoch"
    if name == "exposureTime":
        return "s", "time.duration;obs.exposure"
    if name == "snr":
        return None, "stat.snr"
    if name == "band":
        return None, "instr.bandpass"
    if name in ("x", "y"):
        return "pix", f"pos.cartesian.{name}"
    if name in ("xErr", "yErr"):
        return "pix", f"stat.error;pos.cartesian.{name[0]}"
    if name.endswith("Id") or name in ("visit", "detector"):
        return None, "meta.id"
    if name == "reliability":
        return None, "stat.probability"
    if name == "extendedness":
        return None, "src.class.starGalaxy"
    if "Flux" in name and not name.endswith(("Ndata", "_flag", "Slope")):
        err = "Err" in name or "Sigma" in name
        return "nJy", "stat.error;phot.flux" if err else "phot.flux"
    return None, None


def _data_type(spec: FieldSpec) -> str:
    if spec.kind in ("int", "long") and not _is_timestamp(spec):
        return "int"
    if spec.kind in ("float", "double"):
        return "float"
    return "string"


def _is_timestamp(spec: FieldSpec) -> bool:
    return isinstance(spec.inner, dict) and spec.inner.get("logicalType", "").startswith(
        "timestamp-"
    )


def _float32_text(values: list[float]) -> list[str]:
    """Shortest decimals that read back to the same float32 (numpy's shortest repr)."""
    return [str(v) for v in np.asarray(values, dtype=np.float32)]


def _texts(specs: list[FieldSpec], record: dict[str, Any]) -> list[str | None]:
    """Each field's text, or None for null, in ``specs`` order."""
    out: list[str | None] = []
    f32_pos: list[int] = []
    f32_val: list[float] = []
    for spec in specs:
        value = record.get(spec.name)
        if value is None:
            out.append(None)
        elif spec.kind == "float":
            f32_pos.append(len(out))
            f32_val.append(value)
            out.append("")
        elif spec.kind == "double":
            out.append(repr(float(value)))
        elif spec.kind == "boolean":
            out.append("true" if value else "false")
        elif spec.kind == "bytes":
            out.append(base64.b64encode(value).decode("ascii"))
        elif _is_timestamp(spec):
            out.append(value.isoformat() if isinstance(value, dt.datetime) else str(value))
        else:
            out.append(str(value))
    for pos, text in zip(f32_pos, _float32_text(f32_val), strict=True):
        out[pos] = text
    return out


def _parse_value(spec: FieldSpec, text: str | None) -> Any:
    if text is None:
        return None
    kind = spec.kind
    if kind in ("int", "long"):
        if _is_timestamp(spec):
            # an alert may hold the Avro number itself (the simulator fills schema 8.0's so)
            if text.lstrip("-").isdigit():
                return int(text)
            return dt.datetime.fromisoformat(text)
        return int(text)
    if kind == "float":
        return array("f", [float(text)])[0]
    if kind == "double":
        return float(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"boolean must be 'true' or 'false', got {text!r}")
        return text == "true"
    if kind == "bytes":
        return base64.b64decode(text, validate=True)
    return text


class VoeventSerializer:
    """VOEvent 2.0 XML for Rubin alerts (``mode``: ``embed``, ``reference`` or ``compact``).

    ``reference_base`` (or its older name ``cutout_url_base``) is where ``reference`` and
    ``compact`` packets point for cutouts and, in ``compact``, the light curve.

    ``compression="zstd"`` (``compression_level`` 1-19, default 3) makes each packet one zstd
    frame of the XML, with the content type :data:`ZSTD_MEDIA_TYPE`; ``loads`` then accepts only
    one complete frame whose content is at most ``max_bytes`` (refused from the frame header, or
    when the bounded output buffer overflows: a zstd bomb never allocates more), then parses the
    XML as usual. An option, not a serializer of its own, so the matrix does not grow by a slow
    XML combination per transport; :meth:`for_content_type` picks the right one from a header."""

    name = "voevent"
    media_type = XML_MEDIA_TYPE

    @staticmethod
    def recognizes(data: bytes) -> bool:
        """An XML document."""
        return data.lstrip()[:1] == b"<"

    content_type = XML_MEDIA_TYPE

    def __init__(
        self,
        schema_version: str | None = None,
        mode: str = "embed",
        ivorn_base: str = DEFAULT_IVORN_BASE,
        cutout_url_base: str = DEFAULT_REFERENCE_BASE,
        validate: bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        reference_base: str | None = None,
        compression: str = "none",
        compression_level: int | str = DEFAULT_LEVEL,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"VOEvent mode must be one of {MODES}, got {mode!r}")
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f"VOEvent compression must be one of {COMPRESSIONS}, got {compression!r}"
            )
        self.compression = compression
        self._zstd = (
            ZstdFrames(compression_level, max_output=max_bytes) if compression == "zstd" else None
        )
        if self._zstd is not None:
            self.media_type = self.content_type = ZSTD_MEDIA_TYPE
        if reference_base is not None:
            cutout_url_base = reference_base
        self.schema: AlertSchema = load_schema(schema_version)
        self.mode = mode
        self.ivorn_base = ivorn_base
        self.cutout_url_base = cutout_url_base.rstrip("/")
        self.validate = validate
        self.max_bytes = max_bytes
        self.alert_specs = field_specs(self.schema.resolved)
        self.specs: dict[str, list[FieldSpec]] = {}
        for spec in self.alert_specs:
            if spec.kind == "record":
                self.specs[spec.name] = field_specs(spec.inner)
            elif spec.kind == "array" and isinstance(spec.item, dict):
                self.specs[spec.name] = field_specs(spec.item)
        self._by_name = {s.name: s for s in self.alert_specs}

    # -- encoding ---------------------------------------------------------------------------

    def _param(
        self, parent: etree._Element, record: str, spec: FieldSpec, text: str | None
    ) -> None:
        attrs = {"name": spec.name, "dataType": _data_type(spec)}
        unit, ucd = unit_and_ucd(record, spec.name)
        if unit:
            attrs["unit"] = unit
        if ucd:
            attrs["ucd"] = ucd
        if text is not None:
            attrs["value"] = text
        etree.SubElement(parent, "Param", attrs)

    def to_element(self, alert: Alert) -> etree._Element:
        source = alert.get("diaSource") or {}
        source_id = alert.get("diaSourceId", alert.get("alertId"))
        root = etree.Element(f"{{{VOEVENT_NS}}}VOEvent", nsmap={"voe": VOEVENT_NS, "xsi": XSI_NS})
        root.set("version", "2.0")
        root.set("role", "observation")
        root.set("ivorn", f"{self.ivorn_base}#{source_id}")
        root.set(f"{{{XSI_NS}}}schemaLocation", SCHEMA_LOCATION)

        who = etree.SubElement(root, "Who")
        etree.SubElement(who, "AuthorIVORN").text = self.ivorn_base
        date = _iso_utc(source.get("timeProcessedMjdTai"))
        if date is not None:
            etree.SubElement(who, "Date").text = date
        author = etree.SubElement(who, "Author")
        etree.SubElement(author, "shortName").text = "Rubin alert stream (alertbench simulation)"

        what = etree.SubElement(root, "What")
        for spec in self.alert_specs:
            value = alert.get(spec.name)
            if spec.name in CUTOUTS:
                self._cutout(what, spec, value, source_id)
            elif spec.kind == "record":
                if value is not None:
                    group = etree.SubElement(what, "Group", name=spec.name, type=spec.name)
                    specs = self.specs[spec.name]
                    for field, text in zip(specs, _texts(specs, value), strict=True):
                        self._param(group, spec.name, field, text)
            elif spec.kind == "array":
                if value is not None and self.mode != "compact":
                    self._table(what, spec, value)
            else:
                self._param(what, "alert", spec, _texts([spec], alert)[0])
        if self.mode == "compact":
            self._light_curve_reference(what, alert, source_id)

        self._where_when(root, source)
        how = etree.SubElement(root, "How")
        etree.SubElement(how, "Description").text = (
            "Difference-image detection by the Rubin Observatory LSST alert production pipeline "
            "(simulated by alertbench); packet content follows the Rubin Avro alert schema "
            f"{self.schema.version}."
        )
        etree.SubElement(how, "Reference", uri="https://dmtn-102.lsst.io", type="url")
        why = etree.SubElement(root, "Why")
        inference = etree.SubElement(why, "Inference")
        reliability = source.get("reliability")
        if reliability is not None and 0.0 <= reliability <= 1.0:
            inference.set("probability", _float32_text([reliability])[0])
        etree.SubElement(inference, "Concept").text = "Transient or variable source"
        return root

    def _cutout(
        self, what: etree._Element, spec: FieldSpec, value: bytes | None, source_id: Any
    ) -> None:
        param = etree.SubElement(what, "Param", name=spec.name, dataType="string")
        if value is None:
            return
        param.set("ucd", "meta.ref;obs.image")
        if self.mode == "embed":
            param.set("unit", "base64 FITS")
            etree.SubElement(param, "Value").text = base64.b64encode(value).decode("ascii")
        else:
            etree.SubElement(
                param,
                "Reference",
                uri=f"{self.cutout_url_base}/{source_id}/{spec.name}.fits",
                mimetype="image/fits",
            )

    def _light_curve_reference(self, what: etree._Element, alert: Alert, source_id: Any) -> None:
        """Compact mode's stand-in for the history tables: their row counts and where they are."""
        group = etree.SubElement(what, "Group", name=LIGHT_CURVE, type=LIGHT_CURVE)
        note = "The light curve is not in this packet: row counts of its tables, and its URI."
        etree.SubElement(group, "Description").text = note
        for spec in self.alert_specs:
            if spec.kind == "array":
                rows = alert.get(spec.name)
                attrs = {"name": spec.name, "dataType": "int", "ucd": "meta.number"}
                if rows is not None:
                    attrs["value"] = str(len(rows))
                etree.SubElement(group, "Param", attrs)
        etree.SubElement(
            group,
            "Reference",
            uri=f"{self.cutout_url_base}/{source_id}/lightcurve.xml",
            type=LIGHT_CURVE,
            mimetype="application/x-votable+xml",
        )

    def _table(self, what: etree._Element, spec: FieldSpec, rows: list[dict]) -> None:
        specs = self.specs[spec.name]
        item = spec.item["name"].split(".")[-1]
        table = etree.SubElement(what, "Table", name=spec.name, type=item)
        etree.SubElement(table, "Param", name="rows", dataType="int", value=str(len(rows)))
        for field in specs:
            attrs = {"name": field.name, "dataType": _data_type(field)}
            unit, ucd = unit_and_ucd(item, field.name)
            if unit:
                attrs["unit"] = unit
            if ucd:
                attrs["ucd"] = ucd
            etree.SubElement(table, "Field", attrs)
        data = etree.SubElement(table, "Data")
        if not rows:  # the XSD wants at least one TR with one TD; "rows" says there are none
            etree.SubElement(etree.SubElement(data, "TR"), "TD")
        for row in rows:
            tr = etree.SubElement(data, "TR")
            for text in _texts(specs, row):
                etree.SubElement(tr, "TD").text = text

    def _where_when(self, root: etree._Element, source: dict[str, Any]) -> None:
        errors = [e for e in (source.get("raErr"), source.get("decErr")) if _xs_float(e)]
        if not (_xs_float(source.get("ra")) and _xs_float(source.get("dec"))):
            return  # a copy of What's position; left out when XSD's xs:float cannot hold it
        ww = etree.SubElement(root, "WhereWhen")
        odl = etree.SubElement(ww, "ObsDataLocation")
        etree.SubElement(odl, "ObservatoryLocation", id="Rubin Observatory")
        obs = etree.SubElement(odl, "ObservationLocation")
        etree.SubElement(obs, "AstroCoordSystem", id="UTC-ICRS-TOPO")
        coords = etree.SubElement(obs, "AstroCoords", coord_system_id="UTC-ICRS-TOPO")
        iso = _iso_utc(source.get("midpointMjdTai"))
        if iso is not None:
            time = etree.SubElement(coords, "Time", unit="s")
            instant = etree.SubElement(time, "TimeInstant")
            etree.SubElement(instant, "ISOTime").text = iso
        pos = etree.SubElement(coords, "Position2D", unit="deg")
        etree.SubElement(pos, "Name1").text = "RA"
        etree.SubElement(pos, "Name2").text = "Dec"
        value2 = etree.SubElement(pos, "Value2")
        etree.SubElement(value2, "C1").text = repr(float(source["ra"]))
        etree.SubElement(value2, "C2").text = repr(float(source["dec"]))
        etree.SubElement(pos, "Error2Radius").text = repr(float(max(errors))) if errors else "0"

    def dumps(self, alert: Alert) -> bytes:
        try:
            root = self.to_element(alert)
            data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EncodeError(
                f"alert cannot be written as VOEvent: {exc}", codec=self.name
            ) from exc
        if self.validate:
            xsd = voevent_xsd()
            if not xsd.validate(root):
                raise EncodeError(
                    f"produced VOEvent fails the VOEvent 2.0 XSD: {xsd.error_log.last_error}",
                    codec=self.name,
                )
        return self._zstd.compress(data) if self._zstd is not None else data

    @classmethod
    def for_content_type(cls, content_type: str, **options: Any) -> VoeventSerializer:
        """The serializer that reads messages of ``content_type`` (plain or zstd XML)."""
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == ZSTD_MEDIA_TYPE:
            return cls(**{**options, "compression": "zstd"})
        if media_type == XML_MEDIA_TYPE:
            return cls(**{**options, "compression": "none"})
        raise UnknownSerializerError(f"not a VOEvent content type: {content_type!r}")

    # -- decoding ---------------------------------------------------------------------------

    def parse(self, data: bytes) -> etree._Element:
        """Parse untrusted bytes into a VOEvent element (no DTDs, entities or network)."""
        try:
            root = parse_untrusted(data, self.max_bytes)
        except UnsafeXmlError as exc:
            raise DecodeError(str(exc), codec=self.name, raw=data[:1024]) from exc
        if root.tag != f"{{{VOEVENT_NS}}}VOEvent":
            raise DecodeError(
                f"root element is {root.tag!r}, not VOEvent in namespace {VOEVENT_NS}",
                codec=self.name,
                raw=data[:1024],
            )
        if self.validate:
            xsd = voevent_xsd()
            if not xsd.validate(root):
                raise DecodeError(
                    f"fails the VOEvent 2.0 XSD: {xsd.error_log.last_error}",
                    codec=self.name,
                    raw=data[:1024],
                )
        return root

    def loads(self, data: bytes) -> Alert:
        if self._zstd is not None:
            try:
                data = self._zstd.decompress(bytes(data))
            except ZstdFrameError as exc:
                raise DecodeError(str(exc), codec=self.name, raw=bytes(data)[:1024]) from exc
        root = self.parse(bytes(data))
        try:
            return self.from_element(root)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DecodeError(
                f"VOEvent does not hold a Rubin alert: {exc}",
                codec=self.name,
                raw=bytes(data)[:1024],
            ) from exc

    def from_element(self, root: etree._Element) -> Alert:
        what = root.find("What")
        if what is None:
            raise ValueError("no What section")
        alert: Alert = {}
        for element in what:
            tag = element.tag
            name = element.get("name")
            if name not in self._by_name:
                continue
            spec = self._by_name[name]
            if tag == "Param" and name in CUTOUTS:
                value = element.find("Value")
                alert[name] = (
                    base64.b64decode(value.text or "", validate=True) if value is not None else None
                )
            elif tag == "Param":
                alert[name] = _parse_value(spec, element.get("value"))
            elif tag == "Group":
                values = {p.get("name"): p.get("value") for p in element.iter("Param")}
                alert[name] = {
                    f.name: _parse_value(f, values.get(f.name)) for f in self.specs[name]
                }
            elif tag == "Table":
                alert[name] = self._read_table(element, self.specs[name])
        for spec in self.alert_specs:
            if spec.name not in alert:
                if not spec.nullable:
                    raise ValueError(f"required field {spec.name!r} is missing")
                alert[spec.name] = None
        return alert

    @staticmethod
    def _read_table(table: etree._Element, specs: list[FieldSpec]) -> list[dict[str, Any]]:
        rows_param = next((p for p in table.findall("Param") if p.get("name") == "rows"), None)
        n = int(rows_param.get("value")) if rows_param is not None else None
        columns = [f.get("name") for f in table.findall("Field")]
        by_name = {s.name: s for s in specs}
        if columns != [s.name for s in specs]:
            raise ValueError(f"table {table.get('name')!r} columns do not match the schema")
        rows = []
        data = table.find("Data")
        for tr in data if data is not None else []:
            if n is not None and len(rows) == n:
                break
            cells = [td.text for td in tr]
            if len(cells) != len(columns):
                raise ValueError(f"row of {len(cells)} cells in a {len(columns)}-column table")
            rows.append(
                {
                    c: _parse_value(by_name[c], t or None)
                    for c, t in zip(columns, cells, strict=True)
                }
            )
        if n is not None and len(rows) != n:
            raise ValueError(f"table says {n} rows, holds {len(rows)}")
        return rows


def _iso_utc(mjd_tai: float | None) -> str | None:
    """ISO 8601 UTC of a TAI MJD (VOEvent times are UTC); None outside years 1000-9999."""
    if mjd_tai is None or not (-313_000.0 < mjd_tai < 2_973_000.0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ERFA's "dubious year" for dates without leap seconds
        return Time(mjd_tai, format="mjd", scale="tai").utc.isot


def _xs_float(value: float | None) -> bool:
    """Whether ``value`` fits xs:float, the type of VOEvent 2.0's coordinates."""
    return value is not None and math.isfinite(value) and abs(value) < 3.4e38
