"""Columnar decode of a visit: the same values as the dicts, bad messages left out and named."""

from __future__ import annotations

import numpy as np
import pytest
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.columns import Column, ListColumn, decode_columns
from alertbench.refimpl.minibroker.filters import FieldCatalog
from alertbench.refimpl.minibroker.filters.columns import VisitColumns

from alertbench.errors import DecodeError


@pytest.fixture(scope="module")
def payloads(alerts) -> list[bytes]:
    return [AvroSerializer().dumps(a) for a in alerts]


def test_scalars_ids_and_light_curves_match_the_dicts(alerts, payloads) -> None:
    columns = decode_columns(payloads)
    assert len(columns) == len(alerts) and not columns.rejected
    ids = columns["diaSourceId"]
    assert isinstance(ids, Column) and ids.data.dtype == np.int64  # exact 64-bit ids
    assert ids.data.tolist() == [a["diaSourceId"] for a in alerts]
    ra = columns["diaSource.ra"]
    assert ra.data.tolist() == [a["diaSource"]["ra"] for a in alerts]
    lists = columns["prvDiaSources"]
    assert isinstance(lists, ListColumn)
    assert lists.lengths.tolist() == [len(a["prvDiaSources"] or []) for a in alerts]
    flux = columns["prvDiaSources.psfFlux"]
    flat = [p["psfFlux"] for a in alerts for p in a["prvDiaSources"] or []]
    got = [None if flux.valid is not None and not ok else float(v)
           for v, ok in zip(flux.data, flux.valid if flux.valid is not None else [True] * len(flat),
                            strict=True)]  # fmt: skip
    assert got == flat


def test_a_bad_message_is_left_out_and_named(payloads) -> None:
    batch = [payloads[0], payloads[1][:-7], b"\x01junk", payloads[2], payloads[3] + b"\x00"]
    columns = decode_columns(batch)
    assert columns.indices == [0, 3]
    assert [i for i, _ in columns.rejected] == [1, 2, 4]
    assert "trailing" in columns.rejected[2][1]


def test_nothing_decodable_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_columns([b"", b"\x07abcd"])


def test_filter_columns_from_the_decode_equal_those_from_dicts(alerts, payloads) -> None:
    catalog = FieldCatalog()
    from_dicts = VisitColumns(alerts)
    decoded = VisitColumns.from_decoded(decode_columns(payloads))
    for info in catalog.fields.values():
        a, b = from_dicts.get(info), decoded.get(info)
        if a.data is not None:
            assert b.data is not None and a.data.tolist() == b.data.tolist(), info.path
        va = None if a.valid is None or a.valid.all() else a.valid.tolist()
        vb = None if b.valid is None or b.valid.all() else b.valid.tolist()
        assert va == vb, info.path
        if isinstance(a, type(b)) and hasattr(a, "offsets"):
            assert a.offsets.tolist() == b.offsets.tolist(), info.path
