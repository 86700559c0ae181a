"""Columnar decode of a visit: the same values as the dicts, bad messages left out and named; a
decode projected onto the columns filters read gives the same columns and refuses the same."""

from __future__ import annotations

import numpy as np
import pytest
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.columns import Column, ListColumn, decode_columns
from alertbench.refimpl.minibroker.filters import FieldCatalog, columns_read, compile_filter
from alertbench.refimpl.minibroker.filters.columns import VisitColumns, decoded_columns

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


PROJECTED = ["diaSource.visit", "diaSource.snr", "prvDiaSources.psfFlux", "diaObject.ra"]


def test_a_projected_decode_has_the_full_decodes_columns(payloads) -> None:
    full = decode_columns(payloads)
    projected = decode_columns(payloads, fields=iter(PROJECTED))
    assert projected.fields == frozenset(PROJECTED) and full.fields is None
    assert set(projected.paths) == {*PROJECTED, "prvDiaSources"}  # + the light curves' offsets
    assert projected.indices == full.indices
    for path in projected.paths:
        a, b = full[path], projected[path]
        assert type(a) is type(b), path
        for name in ("data", "valid", "offsets"):
            x, y = getattr(a, name, None), getattr(b, name, None)
            assert (x is None) == (y is None), path
            if x is not None:
                assert np.asarray(x).tolist() == np.asarray(y).tolist(), (path, name)


def test_a_projected_decode_refuses_the_same_messages(payloads) -> None:
    batch = [payloads[0], payloads[1][:-7], b"\x01junk", payloads[2], payloads[3] + b"\x00"]
    full = decode_columns(batch)
    for fields in (PROJECTED, [], ["cutoutScience"]):
        projected = decode_columns(batch, fields=fields)
        assert projected.indices == full.indices
        assert projected.rejected == full.rejected


def test_a_column_left_out_is_decoded_when_asked_for(payloads) -> None:
    batch = [payloads[0], b"\x01junk", payloads[1], payloads[2][:-1], payloads[3]]
    full = decode_columns(batch)
    projected = decode_columns(batch, fields=["diaSource.visit"])
    assert "diaSource.ra" not in projected
    assert projected["diaSource.ra"].data.tolist() == full["diaSource.ra"].data.tolist()
    assert projected["prvDiaSources.band"].data == full["prvDiaSources.band"].data
    assert projected["prvDiaSources"].offsets.tolist() == full["prvDiaSources"].offsets.tolist()
    with pytest.raises(KeyError, match="no column"):
        projected["diaSource.nope"]


def test_an_unknown_field_is_a_key_error(payloads) -> None:
    with pytest.raises(KeyError, match="nope"):
        decode_columns(payloads, fields=["diaSource.visit", "nope"])


@pytest.mark.parametrize("version", available_versions())
def test_every_filterable_field_reads_only_the_columns_it_names(version) -> None:
    # decoded_columns(info) is what a filter asks the decode for: it must be enough.
    schema = load_schema(version)
    config = SimulationConfig(
        seed=4, alerts_per_visit_mean=4, alerts_per_visit_sigma=0.0, schema_version=version
    )
    alerts = list(AlertSimulator(config).visit(0).alerts(4))
    serializer = AvroSerializer(version)
    encoded = [serializer.dumps(a) for a in alerts]
    catalog = FieldCatalog(schema)
    from_dicts = VisitColumns(alerts)
    for info in catalog.fields.values():
        decoded = decode_columns(encoded, version, fields=decoded_columns(info))
        before = set(decoded.paths)
        a, b = from_dicts.get(info), VisitColumns.from_decoded(decoded).get(info)
        assert set(decoded.paths) == before, info.path  # nothing decoded after the fact
        if a.data is not None:
            assert b.data is not None and a.data.tolist() == b.data.tolist(), info.path
        va = None if a.valid is None or a.valid.all() else a.valid.tolist()
        vb = None if b.valid is None or b.valid.all() else b.valid.tolist()
        assert va == vb, info.path


def test_a_compiled_filter_names_the_columns_it_reads() -> None:
    text = (
        "diaSource.snr > 5 and count(prvDiaSources) >= 3 and max(prvDiaSources.psfFlux) > 0"
        " and mean(prvDiaForcedSources.psfFlux) > 1 or isnull(diaObject.ra)"
    )
    compiled = compile_filter(text)
    assert compiled.columns == {
        "diaSource.snr",
        "prvDiaSources",
        "prvDiaSources.psfFlux",
        "prvDiaForcedSources",
        "prvDiaForcedSources.psfFlux",
        "diaObject.ra",
    }
    other = compile_filter('diaSource.band in ("g", "r")')
    assert columns_read([compiled, other]) == compiled.columns | {"diaSource.band"}
    assert columns_read([]) == frozenset()
