"""A visit's alerts as numpy columns, built once per visit and shared by every filter.

Filters are evaluated over whole columns. The service builds them straight from the native
engine's columnar decode of the visit's messages (:meth:`VisitColumns.from_decoded`: no Python
object per value); a batch of alert dicts (tests, the reference path) is pulled apart field by
field, once per visit however many filters read a field. Nulls
are kept as a validity mask next to the data, so 64-bit ids stay exact integers (a NaN
placeholder would force them into float64 and lose the low digits of a Rubin id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from alertbench.refimpl.codecs.columns import AlertColumns
from alertbench.refimpl.codecs.columns import Column as DecodedColumn
from alertbench.refimpl.codecs.columns import ListColumn as DecodedList
from alertbench.refimpl.minibroker.filters.language import BOOL, NUM, RECORD, FieldInfo

_DTYPES = {"int": np.int64, "long": np.int64, "float": np.float64, "double": np.float64}
_EMPTY: dict[str, Any] = {}


@dataclass(frozen=True)
class Column:
    """One value per alert; ``valid`` is False where the value is null (None: no nulls)."""

    data: np.ndarray
    valid: np.ndarray | None


@dataclass(frozen=True)
class ListColumn:
    """A list per alert, flattened: alert i owns ``data[offsets[i]:offsets[i+1]]``."""

    data: np.ndarray | None  # None for a list of records (only its length is known)
    valid: np.ndarray | None
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def decoded_columns(info: FieldInfo) -> tuple[str, ...]:
    """The columns of a columnar decode (:mod:`alertbench.refimpl.codecs.columns`) that
    :meth:`VisitColumns.get` reads for ``info``: the field's own column, and for a list field
    the list's offsets too (a list of records is only its offsets)."""
    if not info.type.array:
        return (".".join(info.path),)
    if info.type.kind == RECORD:
        return (info.path[0],)
    return (info.path[0], ".".join(info.path))


def _typed(values: list[Any], info: FieldInfo) -> tuple[np.ndarray, np.ndarray | None]:
    present = [v is not None for v in values]
    valid = None if all(present) else np.array(present, dtype=bool)
    kind = info.type.kind
    if kind == NUM:
        fill = 0
        data = np.array([fill if v is None else v for v in values], dtype=_DTYPES[info.avro])
    elif kind == BOOL:
        data = np.array([bool(v) for v in values], dtype=bool)
    else:
        data = np.array(["" if v is None else v for v in values], dtype=str)
    return data, valid


class VisitColumns:
    """Lazily extracted columns over one batch of alerts: dicts, or a columnar decode."""

    def __init__(self, alerts: Sequence[dict[str, Any]]) -> None:
        self.alerts = alerts
        self._decoded: AlertColumns | None = None
        self._rows = slice(0, len(alerts))
        self._cache: dict[tuple[str, ...], Column | ListColumn] = {}

    @classmethod
    def from_decoded(cls, decoded: AlertColumns, start: int = 0, stop: int | None = None) -> Self:
        """Rows ``start:stop`` of a columnar decode (a visit's contiguous run of alerts)."""
        columns = cls(())
        columns._decoded = decoded
        columns._rows = slice(start, len(decoded) if stop is None else stop)
        return columns

    def __len__(self) -> int:
        return self._rows.stop - self._rows.start

    def get(self, info: FieldInfo) -> Column | ListColumn:
        column = self._cache.get(info.path)
        if column is None:
            if self._decoded is not None:
                column = self._from_decoded(info)
            else:
                column = self._list(info) if info.type.array else self._scalar(info)
            self._cache[info.path] = column
        return column

    def _from_decoded(self, info: FieldInfo) -> Column | ListColumn:
        assert self._decoded is not None
        a, b = self._rows.start, self._rows.stop
        names = decoded_columns(info)
        if info.type.array:
            lists = self._decoded[names[0]]
            assert isinstance(lists, DecodedList)
            first, last = int(lists.offsets[a]), int(lists.offsets[b])
            offsets = lists.offsets[a : b + 1] - first
            if info.type.kind == RECORD:
                return ListColumn(None, None, offsets)
            data, valid = self._typed_rows(names[1], info, first, last)
            return ListColumn(data, valid, offsets)
        return Column(*self._typed_rows(names[0], info, a, b))

    def _typed_rows(
        self, path: str, info: FieldInfo, a: int, b: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        assert self._decoded is not None
        column = self._decoded[path]
        assert isinstance(column, DecodedColumn)
        valid = None if column.valid is None else column.valid[a:b]
        if valid is not None and valid.all():
            valid = None
        if isinstance(column.data, np.ndarray):
            dtype = _DTYPES.get(info.avro, np.float64) if info.type.kind == NUM else bool
            return column.data[a:b].astype(dtype, copy=False), valid
        values = column.data[a:b] if column.data is not None else []
        return np.array(["" if v is None else v for v in values], dtype=str), valid

    def _scalar(self, info: FieldInfo) -> Column:
        if len(info.path) == 1:
            (name,) = info.path
            values = [alert.get(name) for alert in self.alerts]
        else:
            record, name = info.path
            values = [(alert.get(record) or _EMPTY).get(name) for alert in self.alerts]
        return Column(*_typed(values, info))

    def _list(self, info: FieldInfo) -> ListColumn:
        lists = [alert.get(info.path[0]) or () for alert in self.alerts]
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum([len(items) for items in lists], out=offsets[1:])
        if info.type.kind == RECORD:
            return ListColumn(None, None, offsets)
        name = info.path[1]
        values = [item.get(name) for items in lists for item in items]
        data, valid = _typed(values, info)
        return ListColumn(data, valid, offsets)
