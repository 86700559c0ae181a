"""A pure-Python reference of the decode_columns layout (README.md), used to check the native
output on any (non-recursive) schema: it walks fastavro-decoded records alongside the schema."""

from __future__ import annotations

import datetime

import numpy as np

NULL = object()  # "the parent is null" marker
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
EPOCH_NAIVE = datetime.datetime(1970, 1, 1)

DTYPES = {
    "bool": "u1",
    "int32": "<i4",
    "int64": "<i8",
    "float32": "<f4",
    "float64": "<f8",
    "timestamp-micros": "<i8",
    "timestamp-millis": "<i8",
    "local-timestamp-micros": "<i8",
    "local-timestamp-millis": "<i8",
}
PRIM_KIND = {
    "boolean": "bool",
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "string": "string",
    "bytes": "bytes",
    "null": "null",
}


def _join(base, name):
    return f"{base}.{name}" if base else name


class Ref:
    def __init__(self, parsed, named):
        self.parsed = parsed
        self.named = named
        self.cols: dict[str, dict] = {}

    def col(self, path, kind, mask):
        c = self.cols.setdefault(
            path, {"kind": kind, "values": [], "valid": [], "offsets": [0], "mask": mask}
        )
        assert c["kind"] == kind
        return c

    def resolve(self, s):
        while isinstance(s, str) and s in self.named:
            s = self.named[s]
        return s

    def run(self, records):
        root = self.resolve(self.parsed)
        top = "" if isinstance(root, dict) and root["type"] == "record" else "value"
        self.plan(root, top, top, False, False)
        for r in records:
            self.emit(root, r, top, top, False, False)
        return self.cols

    def plan(self, s, own, base, nullable, direct_opt):
        """Create every column of the schema (also those no record reaches)."""
        s = self.resolve(s)
        if isinstance(s, list):
            if len(s) == 1:
                return self.plan(s[0], own, base, nullable, direct_opt)
            if len(s) == 2 and "null" in s:
                other = s[1] if s[0] == "null" else s[0]
                return self.plan(other, own, base, True, True)
            self.col(own, "object", False)
            return
        t = s if isinstance(s, str) else s["type"]
        if t == "record":
            if direct_opt:
                self.col(own, "record", True)
            for f in s["fields"]:
                p = _join(base, f["name"])
                self.plan(f["type"], p, p, nullable, False)
        elif t == "array":
            self.col(own, t, nullable)
            self.plan(s["items"], _join(own, "items"), own, False, False)
        elif t == "map":
            self.col(own, t, nullable)
            self.col(_join(own, "keys"), "string", False)
            self.plan(s["values"], _join(own, "values"), own, False, False)
        else:
            self.emit(s, NULL, own, base, nullable, direct_opt, plan_only=True)

    def emit(self, s, v, own, base, nullable, direct_opt, plan_only=False):
        s = self.resolve(s)
        if isinstance(s, list):
            if len(s) == 1:
                return self.emit(s[0], v, own, base, nullable, direct_opt)
            if len(s) == 2 and "null" in s:
                other = s[1] if s[0] == "null" else s[0]
                return self.emit(
                    other, NULL if v is None or v is NULL else v, own, base, True, True
                )
            c = self.col(own, "object", False)
            c["values"].append(None if v is NULL else v)
            return
        t = s if isinstance(s, str) else s["type"]
        if t == "record":
            if direct_opt:
                c = self.col(own, "record", True)
                c["valid"].append(v is not NULL)
            for f in s["fields"]:
                p = _join(base, f["name"])
                self.emit(f["type"], NULL if v is NULL else v[f["name"]], p, p, nullable, False)
            return
        if t in ("array", "map"):
            c = self.col(own, t, nullable)
            if t == "map":
                self.col(_join(own, "keys"), "string", False)
            n = 0 if v is NULL else len(v)
            c["offsets"].append(c["offsets"][-1] + n)
            if nullable:
                c["valid"].append(v is not NULL)
            if v is NULL:
                return
            if t == "array":
                for item in v:
                    self.emit(s["items"], item, _join(own, "items"), own, False, False)
            else:
                for k, item in v.items():
                    self.col(_join(own, "keys"), "string", False)["values"].append(k)
                    self.emit(s["values"], item, _join(own, "values"), own, False, False)
            return
        lt = s.get("logicalType") if isinstance(s, dict) else None
        if t == "long" and lt in (
            "timestamp-micros",
            "timestamp-millis",
            "local-timestamp-micros",
            "local-timestamp-millis",
        ):
            kind = lt
        elif t == "enum":
            kind = "enum"
        elif t == "fixed":
            kind = "fixed"
        else:
            kind = PRIM_KIND[t]
        mask = nullable and kind != "null"
        c = self.col(own, kind, mask)
        if plan_only:
            return
        if mask:
            c["valid"].append(v is not NULL)
        if kind == "null":
            return
        if v is NULL:
            c["values"].append(None)
            return
        if isinstance(v, datetime.datetime):
            d = v - (EPOCH if v.tzinfo else EPOCH_NAIVE)
            us = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
            v = us if kind.endswith("micros") else us // 1000
        c["values"].append(v)


def check_columns(native_cols, parsed, named, records):
    """Assert that native decode_columns output equals the reference layout for `records`."""
    ref = Ref(parsed, named).run(records)
    assert native_cols["__len__"] == len(records)
    assert set(native_cols) - {"__len__"} == set(ref), set(native_cols) ^ set(ref)
    for path, exp in ref.items():
        kind, data, valid, offsets = native_cols[path]
        assert kind == exp["kind"], path
        if exp["mask"]:
            assert valid is not None, path
            assert np.frombuffer(valid, "u1").astype(bool).tolist() == exp["valid"], path
        else:
            assert valid is None, path
        if kind in ("array", "map"):
            assert data is None
            assert np.frombuffer(offsets, "<i8").tolist() == exp["offsets"], path
            continue
        assert offsets is None, path
        if kind in ("record", "null"):
            assert data is None, path
            continue
        if kind in DTYPES:
            got = np.frombuffer(data, DTYPES[kind]).tolist()
            assert len(got) == len(exp["values"]), path
            if kind == "bool":
                got = [bool(g) for g in got]
            got = [None if e is None else g for g, e in zip(got, exp["values"], strict=False)]
            if exp["mask"]:
                # placeholders of nulls are zero
                zeros = [
                    g
                    for g, ok in zip(
                        np.frombuffer(data, DTYPES[kind]).tolist(), exp["valid"], strict=False
                    )
                    if not ok
                ]
                assert all(z == 0 for z in zeros), path
            assert got == exp["values"], path
        else:
            assert data == exp["values"], path
