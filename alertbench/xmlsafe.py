"""Safe parsing of untrusted VOEvent-family XML, and the official VOEvent 2.0 XSD.

Shared by the VOEvent codec and the VTP transport (which must validate what authors send).
Documents with a DTD (and so with entity declarations, which live only in one) are refused, in
whatever encoding they are written: the parser itself decodes the document as its byte-order mark
or XML declaration says (UTF-8, UTF-16 LE or BE, ...) and reports a ``DOCTYPE`` before it reads
the DTD's first declaration, so the check is never a search for bytes that another encoding
would spell differently. The parser never resolves entities or touches the network, and
documents over ``max_bytes`` are refused. So "billion laughs", external entities and huge
attributes all end in a clear :class:`UnsafeXmlError`, in bounded memory; nothing else escapes.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from alertbench.errors import UnsafeXmlError

VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"
VOEVENT_ROLES = ("observation", "prediction", "utility", "test")

DTD_REFUSED = "DTDs and entity declarations are not allowed in VOEvent packets"
"""How every refusal of a document with a DTD begins (the rest names the DOCTYPE)."""

_SETTINGS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,
}
PARSER = etree.XMLParser(**_SETTINGS, remove_comments=True, remove_pis=True)


class _Doctype(Exception):
    """Raised by the prolog probe when the parser meets a DOCTYPE."""


class _RootReached(Exception):
    """Raised by the prolog probe at the root element: the prolog held no DOCTYPE."""


class _PrologProbe:
    """A parser target that stops at the first DOCTYPE or at the root element, whichever comes
    first. libxml2 reports a DOCTYPE as soon as its name is read, before any declaration in
    it, so a DTD is refused without one of its entities ever being parsed or expanded."""

    def doctype(self, name: str | None, pubid: str | None, system: str | None) -> None:
        raise _Doctype(name, pubid, system)

    def start(self, tag: str, attrib: Any, nsmap: Any = None) -> None:
        raise _RootReached

    def close(self) -> None:
        return None


_PROBE = etree.XMLParser(**_SETTINGS, target=_PrologProbe())


def _doctype_text(name: str | None, pubid: str | None, system: str | None) -> str:
    parts = [f"<!DOCTYPE {name or '?'}"]
    if pubid:
        parts.append(f'PUBLIC "{pubid}"')
    if system:
        parts.append(f'SYSTEM "{system}"')
    return " ".join(parts) + ">"


def _refuse_dtd(name: str | None, pubid: str | None, system: str | None) -> UnsafeXmlError:
    return UnsafeXmlError(f"{DTD_REFUSED} (this one has {_doctype_text(name, pubid, system)})")


_PROLOG_BYTES = 8192
"""The probe reads this much first: a prolog is short, and a probe's cost grows with the input."""


def _refuse_a_doctype(data: bytes) -> None:
    """UnsafeXmlError if the document's prolog has a DOCTYPE, as the parser (decoding in the
    declared encoding) reads it. The first few kB usually settle it; if the root element does
    not start within them (a long prolog, a huge root tag), the whole document is probed."""
    if len(data) > _PROLOG_BYTES:
        try:
            etree.fromstring(data[:_PROLOG_BYTES], _PROBE)
        except _Doctype as found:
            raise _refuse_dtd(*found.args) from None
        except _RootReached:
            return
        except etree.LxmlError:
            pass  # the prefix ended before the root element did: undecided
    try:
        etree.fromstring(data, _PROBE)
    except _Doctype as found:
        raise _refuse_dtd(*found.args) from None
    except _RootReached:
        return


def parse_untrusted(data: bytes, max_bytes: int) -> etree._Element:
    """The root element of ``data``; UnsafeXmlError (a ValueError) for anything refused:
    over ``max_bytes``, a DTD in any encoding, not well-formed, or any other parser error."""
    if len(data) > max_bytes:
        raise UnsafeXmlError(
            f"document of {len(data):,} bytes exceeds the {max_bytes:,}-byte limit"
        )
    try:
        _refuse_a_doctype(data)
        root = etree.fromstring(data, PARSER)
    except UnsafeXmlError:
        raise
    except etree.XMLSyntaxError as exc:
        raise UnsafeXmlError(f"not well-formed XML: {exc}") from exc
    except (etree.LxmlError, ValueError, LookupError, MemoryError) as exc:
        raise UnsafeXmlError(f"could not parse the XML: {type(exc).__name__}: {exc}") from exc
    # Belt and braces: whatever the probe saw, the parsed document must have no DTD at all.
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.system_url or docinfo.public_id:
        raise _refuse_dtd(docinfo.root_name, docinfo.public_id, docinfo.system_url)
    return root


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
    """None if ``root`` is a valid VOEvent 2.0 document, else the validator's first complaint.

    A validator that fails outright (libxml2 raises on trees it cannot walk, such as unexpanded
    entity references) is a complaint too, never an exception."""
    xsd = voevent_xsd()
    try:
        if xsd.validate(root):
            return None
    except etree.LxmlError as exc:
        return f"the validator could not check it: {type(exc).__name__}: {exc}"
    return str(xsd.error_log.last_error)
