"""The native engine's speed paths give the same results as its plain ones (issue 13).

Why these tests: a batch of 64 or more messages is parsed on two threads, its columns are
written from the two halves without joining them first, and its cutouts are copied into
``bytes`` made empty beforehand, on two threads when there is enough to copy; a record field is
read through a precomputed ``FieldOp`` instead of the node graph. Each path must give exactly
what the serial, general path gives, including for the awkward encodings the fast paths hand
back to it. The malloc policy the module sets at import must be switchable off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import subprocess
import sys
import textwrap

import fastavro
import pytest
from alertbench.refimpl import _native

from .conftest import fa_decode, fa_encode

DIGEST = textwrap.dedent(
    """
    import hashlib, json, pickle, sys
    from alertbench.refimpl import _native
    definition, bodies = pickle.load(sys.stdin.buffer)
    schema = _native.Schema(json.dumps(definition))
    print(hashlib.sha256(pickle.dumps(sorted(schema.decode_columns(bodies).items()))).hexdigest())
    """
)


def _digest(columns: dict) -> str:
    return hashlib.sha256(pickle.dumps(sorted(columns.items()))).hexdigest()


def _run(code: str, stdin: bytes = b"", **env: str) -> str:
    """``code``'s output in a fresh interpreter, without the caller's malloc settings."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "ALERTBENCH_NATIVE_MALLOC"))
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        env={**base, **env},
        timeout=120,
        check=True,
    )
    return out.stdout.decode().strip()


def test_batch_columns_equal_a_serial_parse(alert_definition, alert_bodies, alert_schema):
    """Two threads here (this machine has two CPUs), one in the subprocess: the same columns."""
    batch = alert_bodies + alert_bodies[:37]  # odd-sized halves, > 1 MiB of cutouts
    assert sum(len(b) for b in batch) > 4 << 20
    serial = _run(DIGEST, pickle.dumps((alert_definition, batch)), ALERTBENCH_NATIVE_THREADS="1")
    assert _digest(alert_schema.decode_columns(batch)) == serial


def test_batch_cutouts_equal_the_dict_decode(alert_bodies, alert_schema):
    cols = alert_schema.decode_columns(alert_bodies)
    decoded = [alert_schema.decode(b) for b in alert_bodies]
    paths = [p for p, c in cols.items() if p != "__len__" and c[0] == "bytes"]
    assert paths, "the fixture alerts carry cutouts"
    for path in paths:
        values = cols[path][1]
        assert all(type(v) is bytes or v is None for v in values)
        assert values == [d[path] for d in decoded], path


def test_batch_array_offsets_continue_across_halves(alert_bodies, alert_schema, alerts):
    cols = alert_schema.decode_columns(alert_bodies * 2)
    _, _, _, offsets = cols["prvDiaSources"]
    lengths = [len(a["prvDiaSources"] or []) for a in alerts] * 2
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    assert list(memoryview(offsets).cast("q")) == starts


SCALARS = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "d", "type": ["null", "double"]},
        {"name": "f", "type": ["float", "null"]},
        {"name": "l", "type": ["null", "long"]},
        {"name": "i", "type": "int"},
        {"name": "b", "type": ["null", "boolean"]},
        {"name": "s", "type": ["null", "string"]},
        {
            "name": "n",
            "type": {"type": "record", "name": "N", "fields": [{"name": "x", "type": "long"}]},
        },
    ],
}


def test_field_ops_decode_like_fastavro():
    parsed = fastavro.parse_schema(SCALARS)
    schema = _native.Schema(json.dumps(SCALARS))
    records = [
        {"d": 1.5, "f": 2.5, "l": -(2**62), "i": -7, "b": True, "s": "é", "n": {"x": 3}},
        {"d": None, "f": None, "l": None, "i": 2**31 - 1, "b": None, "s": None, "n": {"x": -1}},
        {"d": float("inf"), "f": 0.0, "l": 300, "i": 0, "b": False, "s": "", "n": {"x": 0}},
    ]
    for r in records:
        body = fa_encode(parsed, r)
        assert schema.decode(body) == fa_decode(parsed, body)


def test_field_ops_leave_awkward_encodings_to_the_exact_path():
    """A non-canonical union index (0x80 0x00 for 0) still decodes; a bad one is refused."""
    schema = _native.Schema(json.dumps({"type": "record", "name": "R", "fields": [
        {"name": "d", "type": ["null", "double"]}, {"name": "l", "type": ["null", "long"]}]}))  # fmt: skip
    assert schema.decode(b"\x80\x00\x02\x06") == {"d": None, "l": 3}
    with pytest.raises(_native.AvroDecodeError, match="union index 2 out of range"):
        schema.decode(b"\x04")
    with pytest.raises(_native.AvroDecodeError, match="truncated double"):
        schema.decode(b"\x02\x00\x00")
    with pytest.raises(_native.AvroDecodeError, match="truncated varint"):
        schema.decode(b"\x00\x02\x80")


def test_malloc_policy_is_set_on_glibc_and_can_be_refused():
    on_glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    code = "from alertbench.refimpl import _native; print(_native.MALLOC_KEEPS_FREED)"
    assert _run(code) == str(on_glibc)
    assert _run(code, ALERTBENCH_NATIVE_MALLOC="default") == "False"
    assert _run(code, MALLOC_TRIM_THRESHOLD_="131072") == "False"
    assert _run(code, GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072") == "False"
