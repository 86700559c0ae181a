"""A batch of Avro alerts (a visit) decoded straight into numpy columns.

Brokers and the mini-broker read many alerts at once and mostly look at numbers: positions,
fluxes, SNRs, light curves. Decoding each alert to a dict creates ~3,800 Python floats per alert
only to pack them into arrays again; the native engine instead parses the whole batch with the
GIL released into typed buffers that numpy wraps without copying.

Layout: one :class:`Column` per scalar field, keyed by its dotted path (``diaSource.ra``); a
light curve (``prvDiaSources``) is a :class:`ListColumn` holding ``offsets`` (alert ``i`` owns
rows ``offsets[i]:offsets[i+1]``) and its fields are flat columns over all rows of all alerts
(``prvDiaSources.psfFlux``). Nulls are a validity mask beside the data, so 64-bit ids stay exact
``int64``. Strings and bytes (cutouts) are Python lists: they are few per alert.

One malformed message does not cost the batch: it is left out, and :attr:`AlertColumns.rejected`
says which one and why (the rows follow :attr:`AlertColumns.indices`, the messages kept).

Projection: ``decode_columns(messages, fields=[...])`` materialises only the named columns (plus
the offsets of the light curves holding one), which is what the mini-broker needs: a visit's
filters read a few dozen of its ~1,000 columns, and the rest (cutouts above all) are most of
the cost. Every message is still parsed and validated completely, so a projection refuses
exactly the messages, with exactly the reasons, that the full decode does. A column outside
``fields`` is still there when asked for: it is decoded then, in one more pass over the kept
messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from alertbench.refimpl import _native
from alertbench.refimpl.alert.schema import AlertSchema, load_schema, schema_for_id
from alertbench.refimpl.codecs.wire import HEADER, schema_id_of, unframe

from alertbench.errors import DecodeError, FramingError, SchemaError

_DTYPES = {
    "bool": np.bool_,
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "timestamp-micros": np.dtype("<i8"),
    "timestamp-millis": np.dtype("<i8"),
    "local-timestamp-micros": np.dtype("<i8"),
    "local-timestamp-millis": np.dtype("<i8"),
}


@dataclass(frozen=True)
class Column:
    """One value per row; ``valid`` is False where the value is null (None: never null)."""

    kind: str
    data: np.ndarray | list[Any] | None
    valid: np.ndarray | None


@dataclass(frozen=True)
class ListColumn:
    """A list per row: row ``i`` owns item rows ``offsets[i]:offsets[i + 1]``."""

    offsets: np.ndarray
    valid: np.ndarray | None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class AlertColumns:
    """The columns of the alerts of one batch that decoded; see the module docstring."""

    raw: dict[str, Any]
    indices: list[int]
    """Index in the input of each row (messages that failed are not rows)."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(index in the input, reason) of each message left out."""
    fields: frozenset[str] | None = None
    """The columns the decode was projected onto (None: every column was decoded)."""
    _source: tuple[Any, list[Any]] | None = field(default=None, repr=False)
    """(native schema, kept messages) of a projected decode, to decode other columns later."""
    _cache: dict[str, Column | ListColumn] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def paths(self) -> list[str]:
        return [p for p in self.raw if p != "__len__"]

    def __contains__(self, path: str) -> bool:
        return path in self.raw

    def __getitem__(self, path: str) -> Column | ListColumn:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        if path not in self.raw and path != "__len__" and self._source is not None:
            self._decode_more(path)
        try:
            kind, data, valid, offsets = self.raw[path]
        except KeyError:
            raise KeyError(f"no column {path!r}; columns: {', '.join(self.paths)}") from None
        mask = None if valid is None else np.frombuffer(valid, np.uint8).view(np.bool_)
        column: Column | ListColumn
        if offsets is not None:
            column = ListColumn(np.frombuffer(offsets, "<i8"), mask)
        elif kind in _DTYPES:
            column = Column(kind, np.frombuffer(data, _DTYPES[kind]), mask)
        else:
            column = Column(kind, data, mask)
        self._cache[path] = column
        return column

    def _decode_more(self, path: str) -> None:
        """Add column ``path`` (left out by the projection) from the kept messages."""
        assert self._source is not None
        schema, kept = self._source
        try:
            raw = schema.decode_columns(kept, HEADER.size, [path])
        except KeyError:
            return  # not a column of the schema: __getitem__ says so
        except ValueError as exc:  # the same bytes decoded a moment ago: changed since?
            raise DecodeError(f"batch did not decode again: {exc}", codec="avro") from exc
        if raw["__len__"] != len(self.indices):
            raise DecodeError("batch did not decode again to the same rows", codec="avro")
        for name, value in raw.items():
            self.raw.setdefault(name, value)


def decode_columns(
    messages: Sequence[bytes | memoryview],
    schema_version: str | None = None,
    fields: Iterable[str] | None = None,
) -> AlertColumns:
    """Decode Confluent-framed Avro alerts of one schema into columns.

    The schema is the one the first well-framed message names (``schema_version`` forces one);
    a message with another schema id, a bad header or a malformed body is left out and listed
    in ``rejected``. Raises :class:`DecodeError` only when no message names a known schema.

    ``fields`` (column paths as :class:`AlertColumns` names them, e.g. ``diaSource.psfFlux``,
    ``prvDiaSources.psfFlux``) projects the decode onto those columns (module docstring); the
    messages refused are the same. A path that is no column of the schema is a KeyError.
    """
    wanted = None if fields is None else sorted(set(fields))
    schema, kept, rejected = _framed(
        messages, load_schema(schema_version) if schema_version else None
    )
    if schema is None:
        raise DecodeError("no message in the batch names a known Rubin schema", codec="avro")
    native = _native_schema(schema.version)
    while True:
        batch = messages if len(kept) == len(messages) else [messages[i] for i in kept]
        try:
            raw = native.decode_columns(batch, HEADER.size, wanted)
        except ValueError as exc:
            bad = _failed_index(str(exc), len(batch))
            if bad is None:
                raise DecodeError(f"batch did not decode: {exc}", codec="avro") from exc
            rejected.append((kept.pop(bad), str(exc)))
            continue
        rejected.sort()
        if wanted is None:
            return AlertColumns(raw=raw, indices=kept, rejected=rejected)
        return AlertColumns(
            raw=raw,
            indices=kept,
            rejected=rejected,
            fields=frozenset(wanted),
            _source=(native, batch),
        )


def _framed(
    messages: Sequence[bytes | memoryview], schema: AlertSchema | None
) -> tuple[AlertSchema | None, list[int], list[tuple[int, str]]]:
    """(the batch's schema, the indices of the messages framed for it, the others with why).

    A visit's messages nearly always share one header, so that case is checked once, not per
    message: the per-message checks cost ~1 µs an alert, a tenth of a projected decode.
    """
    head = _native.common_prefix(messages, HEADER.size)
    if head is not None:
        shared = _schema_named_by(head, schema)
        if shared is not None:
            return shared, list(range(len(messages))), []
    kept: list[int] = []
    rejected: list[tuple[int, str]] = []
    for index, message in enumerate(messages):
        try:
            schema_id = schema_id_of(message)
            if schema_id is None:  # not framed: unframe says exactly why
                schema_id, _ = unframe(message, codec="avro")
            if schema is None:
                schema = _schema_for_id(schema_id)
        except (FramingError, SchemaError) as exc:
            rejected.append((index, str(exc)))
            continue
        if schema_id != schema.schema_id:
            rejected.append((index, f"schema id {schema_id}, not the batch's {schema.schema_id}"))
            continue
        kept.append(index)
    return schema, kept, rejected


def _schema_named_by(head: bytes, schema: AlertSchema | None) -> AlertSchema | None:
    """The schema a well-formed header names, if it is ``schema`` (or any known one when None)."""
    schema_id = schema_id_of(head)
    if schema_id is None:
        return None
    try:
        named = schema or _schema_for_id(schema_id)
    except SchemaError:
        return None
    return named if named.schema_id == schema_id else None


_SCHEMAS: dict[str, Any] = {}
_BY_ID: dict[int, AlertSchema] = {}


def _schema_for_id(schema_id: int) -> AlertSchema:
    """:func:`schema_for_id`, remembered: it costs ~120 µs a call, ~1 µs per alert of a batch."""
    schema = _BY_ID.get(schema_id)
    if schema is None:
        schema = _BY_ID[schema_id] = schema_for_id(schema_id)
    return schema


def _native_schema(version: str) -> Any:
    """The native engine's compiled schema of ``version`` (compiled once per process)."""
    native = _SCHEMAS.get(version)
    if native is None:
        native = _SCHEMAS[version] = _native.Schema(json.dumps(load_schema(version).definition))
    return native


def _failed_index(message: str, size: int) -> int | None:
    """The batch index that the native engine's error names (``message <i>: ...``)."""
    if not message.startswith("message "):
        return None
    head = message[len("message ") :].split(":", 1)[0]
    return int(head) if head.isdigit() and int(head) < size else None
