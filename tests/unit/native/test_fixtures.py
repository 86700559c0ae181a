"""Byte identity and decode equality with fastavro on 100 realistic simulated Rubin v11.1 alerts."""

from __future__ import annotations

import datetime
import struct

import numpy as np
import pytest

from tests.unit.native.conftest import fa_decode


def test_encode_is_byte_identical_to_fastavro(alerts, alert_bodies, alert_schema):
    assert len(alerts) == 100
    for i, (alert, body) in enumerate(zip(alerts, alert_bodies, strict=False)):
        assert alert_schema.encode(alert) == body, f"alert {i}"


def test_decode_equals_fastavro(alert_bodies, alert_schema, alert_parsed):
    for body in alert_bodies:
        assert alert_schema.decode(body) == fa_decode(alert_parsed, body)


def test_roundtrip(alerts, alert_schema, alert_parsed):
    for alert in alerts:
        body = alert_schema.encode(alert)
        assert alert_schema.decode(body) == fa_decode(alert_parsed, body)
        assert alert_schema.encode(alert_schema.decode(body)) == body


def test_decode_buffers_and_offset(alert_bodies, alert_schema):
    body = alert_bodies[0]
    expected = alert_schema.decode(body)
    framed = struct.pack(">bI", 0, 1101) + body
    assert alert_schema.decode(framed, 5) == expected
    assert alert_schema.decode(bytearray(framed), offset=5) == expected
    assert alert_schema.decode(memoryview(framed), 5) == expected
    assert alert_schema.decode(np.frombuffer(framed, dtype=np.uint8), 5) == expected
    with pytest.raises(ValueError):
        alert_schema.decode(framed)  # the header is not part of the record
    with pytest.raises(ValueError):
        alert_schema.decode(body, len(body) + 1)
    with pytest.raises(ValueError):
        alert_schema.decode(body, -1)
    with pytest.raises(TypeError):
        alert_schema.decode("not bytes")


def _values_at(alerts, path):
    """Python values of a dotted path, flattened over arrays like the columns are."""
    parts = path.split(".")

    def walk(obj, i):
        if i == len(parts):
            yield obj
            return
        if obj is None:
            yield None  # null parent
            return
        v = obj[parts[i]]
        if isinstance(v, list):
            for item in v:
                yield from walk(item, i + 1)
        else:
            yield from walk(v, i + 1)

    for a in alerts:
        yield from walk(a, 0)


DTYPES = {
    "float64": "<f8",
    "float32": "<f4",
    "int64": "<i8",
    "int32": "<i4",
    "bool": "u1",
    "timestamp-micros": "<i8",
}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _micros(dt):
    d = dt - EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def test_decode_columns_equals_per_alert_values(alerts, alert_bodies, alert_schema, alert_parsed):
    decoded = [fa_decode(alert_parsed, b) for b in alert_bodies]
    cols = alert_schema.decode_columns(alert_bodies)
    assert cols["__len__"] == len(decoded)
    checked = 0
    for path, col in cols.items():
        if path == "__len__":
            continue
        kind, data, valid, offsets = col
        if kind in ("array", "map"):
            # offsets: one per parent row + 1; row lengths equal the list lengths
            offs = np.frombuffer(offsets, dtype="<i8")
            parent = path.rsplit(".", 1)[0] if "." in path else None
            assert offs[0] == 0 and np.all(np.diff(offs) >= 0)
            if parent is None:
                lengths = [len(a[path] or []) for a in decoded]
                assert list(np.diff(offs)) == lengths
                mask = [a[path] is not None for a in decoded]
                if valid is not None:
                    assert list(np.frombuffer(valid, "u1").astype(bool)) == mask
            continue
        if kind == "record":
            continue
        expected = list(_values_at(decoded, path))
        if kind in DTYPES:
            arr = np.frombuffer(data, dtype=DTYPES[kind])
            assert len(arr) == len(expected), path
            if valid is not None:
                m = np.frombuffer(valid, "u1").astype(bool)
                assert list(m) == [e is not None for e in expected], path
            else:
                assert all(e is not None for e in expected), path
            got = [
                None if (valid is not None and not ok) else v
                for v, ok in zip(
                    arr.tolist(),
                    (np.frombuffer(valid, "u1") if valid is not None else [1] * len(arr)),
                    strict=False,
                )
            ]
            if kind == "bool":
                got = [None if g is None else bool(g) for g in got]
            if kind == "timestamp-micros":
                expected = [None if e is None else _micros(e) for e in expected]
            assert got == expected, path
        else:
            assert data == expected, path
        checked += 1
    assert checked > 300


def test_decode_columns_ids_stay_exact(alert_bodies, alert_schema, alerts):
    cols = alert_schema.decode_columns(alert_bodies)
    kind, data, valid, _ = cols["diaSourceId"]
    assert kind == "int64" and valid is None
    assert np.frombuffer(data, "<i8").tolist() == [a["diaSourceId"] for a in alerts]
    kind, data, valid, _ = cols["prvDiaSources.diaSourceId"]
    flat = [s["diaSourceId"] for a in alerts for s in (a["prvDiaSources"] or [])]
    assert np.frombuffer(data, "<i8").tolist() == flat


def test_decode_columns_offset_and_buffers(alert_bodies, alert_schema):
    framed = [struct.pack(">bI", 0, 1101) + b for b in alert_bodies[:10]]
    a = alert_schema.decode_columns(alert_bodies[:10])
    b = alert_schema.decode_columns([memoryview(f) for f in framed], offset=5)
    assert a == b
    empty = alert_schema.decode_columns([])
    assert empty["__len__"] == 0 and empty["diaSource.ra"][1] == b""
