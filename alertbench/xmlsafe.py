"""Safe parsing of untrusted VOEvent-family XML, and the official VOEvent 2.0 XSD.

Shared by the VOEvent codec and the VTP transport (which must validate what authors send).
Documents with a DTD or entity declarations are refused before parsing; the parser never resolves
entities or touches the network; documents over ``max_bytes`` are refused. So "billion laughs",
external entities and huge attributes all end in a clear error, in bounded memory.
"""

from __future__ import annotations

from lxml import etree

from alertbench.errors import UnsafeXmlError

VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"
VOEVENT_ROLES = ("observation", "prediction", "utility", "test")

PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def parse_untrusted(data: bytes, max_bytes: int) -> etree._Element:
    if len(data) > max_bytes:
        raise UnsafeXmlError(
            f"document of {len(data):,} bytes exceeds the {max_bytes:,}-byte limit"
        )
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise UnsafeXmlError("DTDs and entity declarations are not allowed in VOEvent packets")
    try:
        return etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"not well-formed XML: {exc}") from exc


_XSD: etree.XMLSchema | None = None


def voevent_xsd() -> etree.XMLSchema:
    """The official VOEvent 2.0 XSD, loaded offline from the voevent-parse distribution (PyPI),
    which carries the IVOA schema verbatim (see schemas/README.md)."""
    global _XSD
    if _XSD is None:
        from voeventparse import definitions

        _XSD = etree.XMLSchema(etree.fromstring(definitions.v2_0_schema_str, PARSER))
    return _XSD


def xsd_error(root: etree._Element) -> str | None:
    """None if ``root`` is a valid VOEvent 2.0 document, else the validator's first complaint."""
    xsd = voevent_xsd()
    if xsd.validate(root):
        return None
    return str(xsd.error_log.last_error)
