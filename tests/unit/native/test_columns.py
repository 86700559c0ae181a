"""The decode_columns layout, spelled out on the VOEvent 3 schema (nested arrays, nullable
records, enums, timestamps) and on the Rubin alerts (numpy wrapping, nullable arrays)."""

from __future__ import annotations

import datetime
import json
import threading

import numpy as np

from tests.unit.native.conftest import _native


def _voevent(payload, why):
    return {
        "ivorn": "ivo://x#1",
        "role": "test",
        "who": {
            "authorIvorn": "ivo://a",
            "date": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),
        },
        "what": {"payloadSchema": "lsst.v11_1.alert", "payload": payload},
        "whereWhen": None,
        "how": {"descriptions": ["d1"], "references": [{"uri": "u1"}, {"uri": "u2", "type": "t"}]},
        "why": why,
        "citations": [{"ivorn": "ivo://c", "cite": "followup"}],
    }


def test_voevent_layout(voevent_definition, alerts):
    s = _native.Schema(json.dumps(voevent_definition))
    why = {
        "importance": 0.5,
        "inferences": [
            {"probability": 0.9, "names": ["a", "b"], "concepts": []},
            {"probability": None, "names": ["c"], "concepts": ["k"]},
        ],
    }
    recs = [_voevent(alerts[0], None), _voevent(alerts[1], why)]
    cols = s.decode_columns([s.encode(r) for r in recs])
    assert cols["__len__"] == 2
    assert cols["role"] == ("enum", ["test", "test"], None, None)
    kind, data, valid, _ = cols["who.date"]
    assert kind == "timestamp-micros" and valid is None
    assert np.frombuffer(data, "<i8").view("datetime64[us]")[0] == np.datetime64(
        "2026-01-02T00:00:00"
    )
    assert cols["version"][1] == ["3.0-alertbench-proposal"] * 2  # written from the default
    # nullable record: a validity column of its own, children masked
    assert cols["why"] == ("record", None, b"\x00\x01", None)
    kind, data, valid, _ = cols["why.importance"]
    assert kind == "float32" and valid == b"\x00\x01"
    assert np.frombuffer(data, "<f4").tolist() == [0.0, 0.5]
    # array inside a nullable record: a null parent gives an empty, invalid row
    kind, data, valid, offsets = cols["why.inferences"]
    assert kind == "array" and valid == b"\x00\x01"
    assert np.frombuffer(offsets, "<i8").tolist() == [0, 0, 2]
    # arrays of arrays: offsets over the rows of the enclosing array
    assert np.frombuffer(cols["why.inferences.names"][3], "<i8").tolist() == [0, 2, 3]
    assert cols["why.inferences.names.items"] == ("string", ["a", "b", "c"], None, None)
    assert cols["why.inferences.probability"][2] == b"\x01\x00"
    assert np.frombuffer(cols["how.references"][3], "<i8").tolist() == [0, 2, 4]
    assert cols["how.references.type"][1] == [None, "t", None, "t"]
    assert cols["how.references.type"][2] == b"\x00\x01\x00\x01"
    assert cols["citations.cite"] == ("enum", ["followup", "followup"], None, None)
    assert cols["whereWhen"][2] == b"\x00\x00"


def test_numpy_wrapping_of_alert_columns(alerts, alert_bodies, alert_schema):
    cols = alert_schema.decode_columns(alert_bodies)
    _kind, _data, _valid, offsets = cols["prvDiaSources"]
    offs = np.frombuffer(offsets, "<i8")
    assert len(offs) == len(alerts) + 1
    flux = np.frombuffer(cols["prvDiaSources.psfFlux"][1], "<f4")
    ok = np.frombuffer(cols["prvDiaSources.psfFlux"][2], "u1").astype(bool)
    assert len(flux) == offs[-1]
    i = 5
    lc = np.ma.masked_array(flux[offs[i] : offs[i + 1]], ~ok[offs[i] : offs[i + 1]])
    exp = [s["psfFlux"] for s in alerts[i]["prvDiaSources"] or []]
    assert [None if m else float(v) for v, m in zip(lc.data, lc.mask, strict=False)] == exp
    assert cols["cutoutScience"][0] == "bytes"
    assert cols["cutoutScience"][1][7] == alerts[7]["cutoutScience"]


def test_columns_release_the_gil(alert_bodies, alert_schema):
    # Another Python thread keeps running while a large batch is parsed.
    batch = alert_bodies * 20
    ticks = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks.append(1)

    t = threading.Thread(target=spin)
    t.start()
    try:
        for _ in range(3):
            alert_schema.decode_columns(batch)
    finally:
        stop.set()
        t.join()
    assert ticks
