"""Hostile input: every malformed message is an AvroDecodeError (a ValueError), raised quickly and
in bounded memory, never a crash, a panic or another exception type."""

from __future__ import annotations

import contextlib
import json
import random
import resource
import time

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.native.conftest import _native, fa_decode, fa_encode

AvroDecodeError = _native.AvroDecodeError


def zz(n: int) -> bytes:
    """Zig-zag varint."""
    u = (n << 1) ^ (n >> 63)
    u &= (1 << 64) - 1
    out = bytearray()
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def schema(fields):
    d = {"type": "record", "name": "T", "fields": fields}
    return d, _native.Schema(json.dumps(d)), fastavro.parse_schema(d)


ARR_LONG = schema([{"name": "a", "type": {"type": "array", "items": "long"}}])
ARR_NULL = schema([{"name": "a", "type": {"type": "array", "items": "null"}}])
MAP_INT = schema([{"name": "m", "type": {"type": "map", "values": "int"}}])
UNION = schema([{"name": "u", "type": ["null", "long"]}])
ENUM = schema([{"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}}])
STR = schema([{"name": "s", "type": "string"}])
BYTES = schema([{"name": "b", "type": "bytes"}])
LONG = schema([{"name": "x", "type": "long"}])
INT = schema([{"name": "x", "type": "int"}])


def assert_rejects(s, data, match=None):
    with pytest.raises(AvroDecodeError, match=match):
        s.decode(data)
    with pytest.raises(AvroDecodeError, match=match):
        s.decode_columns([data])


def test_error_is_value_error():
    assert issubclass(AvroDecodeError, ValueError)
    assert issubclass(_native.AvroEncodeError, ValueError)


def test_truncation_at_every_byte_of_the_last_3kb(alert_bodies, alert_schema):
    body = alert_bodies[0]
    for cut in range(len(body) - 3072, len(body)):
        with pytest.raises(AvroDecodeError):
            alert_schema.decode(body[:cut])
    for cut in range(len(body) - 3072, len(body), 7):
        with pytest.raises(AvroDecodeError):
            alert_schema.decode_columns([body, body[:cut]])


def test_truncation_anywhere(alert_bodies, alert_schema):
    body = alert_bodies[1]
    for cut in range(0, len(body), 101):
        with pytest.raises(AvroDecodeError):
            alert_schema.decode(memoryview(body)[:cut])


def test_trailing_bytes(alert_bodies, alert_schema):
    with pytest.raises(AvroDecodeError, match="trailing"):
        alert_schema.decode(alert_bodies[0] + b"\x00")
    with pytest.raises(AvroDecodeError, match=r"message 1: .*trailing"):
        alert_schema.decode_columns([alert_bodies[0], alert_bodies[1] + b"\x00"])
    assert_rejects(LONG[1], zz(5) + b"\x00", "trailing")


@pytest.mark.parametrize("count", [2**31, 2**62, 2**63 - 1, 10**6])
def test_huge_block_counts_fail_fast_in_bounded_memory(count):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _, s, _ in (ARR_LONG, ARR_NULL, MAP_INT):
        data = zz(count) + b"\x02" * 8
        t0 = time.perf_counter()
        assert_rejects(s, data)
        assert time.perf_counter() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_negative_block_count_with_byte_size_is_supported():
    _, s, parsed = ARR_LONG
    items = zz(7) + zz(-300)
    data = zz(-2) + zz(len(items)) + items + zz(1) + zz(42) + zz(0)
    assert s.decode(data) == {"a": [7, -300, 42]} == fa_decode(parsed, data)
    cols = s.decode_columns([data])
    assert cols["a"][3] == (0).to_bytes(8, "little") + (3).to_bytes(8, "little")
    # -1 with the right size
    assert s.decode(zz(-1) + zz(1) + zz(5) + zz(0)) == {"a": [5]}
    # map blocks too
    _, m, mparsed = MAP_INT
    block = zz(1) + b"k" + zz(9)
    data = zz(-1) + zz(len(block)) + block + zz(0)
    assert m.decode(data) == {"m": {"k": 9}} == fa_decode(mparsed, data)


@pytest.mark.parametrize(
    "data",
    [
        zz(-1) + zz(2**62) + zz(5) + zz(0),  # absurd byte size
        zz(-1) + zz(-3) + zz(5) + zz(0),  # negative byte size
        zz(-1) + zz(5) + zz(5) + zz(0),  # size larger than the items
        zz(-2) + zz(1) + zz(5) + zz(6) + zz(0),  # size smaller than the items
        zz(-(2**63)) + zz(1) + zz(0),  # count -2^63
        zz(-1),  # truncated
    ],
)
def test_bad_sized_blocks(data):
    assert_rejects(ARR_LONG[1], data)


def test_zero_size_items_are_capped_but_supported():
    _, s, parsed = ARR_NULL
    data = zz(5) + zz(0)
    assert s.decode(data) == {"a": [None] * 5} == fa_decode(parsed, data)
    t0 = time.perf_counter()
    assert_rejects(s, zz(2**40) + zz(0), "zero-size")
    assert time.perf_counter() - t0 < 0.5


def test_varint_longer_than_10_bytes():
    assert_rejects(LONG[1], b"\xff" * 10 + b"\x01", "10 bytes")
    assert_rejects(LONG[1], b"\x80" * 15 + b"\x00", "10 bytes")
    assert_rejects(LONG[1], b"\xff" * 9 + b"\x7f", "overflow")
    # the largest 10-byte varints are fine
    assert LONG[1].decode(zz(-(2**63))) == {"x": -(2**63)}
    assert LONG[1].decode(zz(2**63 - 1)) == {"x": 2**63 - 1}
    assert_rejects(LONG[1], b"\x80", "truncated")


def test_int_out_of_range():
    assert_rejects(INT[1], zz(2**31), "32-bit")
    assert INT[1].decode(zz(-(2**31))) == {"x": -(2**31)}


@pytest.mark.parametrize("index", [2, 3, -1, 2**40])
def test_bad_union_index(index):
    assert_rejects(UNION[1], zz(index) + zz(1), "union index")


@pytest.mark.parametrize("index", [3, -1, 100])
def test_enum_index_out_of_range(index):
    assert_rejects(ENUM[1], zz(index), "enum index")
    assert ENUM[1].decode(zz(2)) == {"e": "C"}


def test_enum_index_out_of_range_voevent(voevent_definition):
    s = _native.Schema(json.dumps(voevent_definition))
    # first field ivorn (string), then role (enum of 4)
    assert_rejects(s, zz(1) + b"x" + zz(4), "enum index")


def test_invalid_utf8():
    assert_rejects(STR[1], zz(2) + b"\xff\xfe", "UTF-8")
    assert_rejects(STR[1], zz(3) + b"a\xed\xa0\x80"[:3], "UTF-8")  # surrogate
    assert STR[1].decode(zz(2) + "é".encode()) == {"s": "é"}


@pytest.mark.parametrize("s", [STR[1], BYTES[1]])
def test_lengths_beyond_the_input(s):
    assert_rejects(s, zz(5) + b"abc", "exceeds")
    assert_rejects(s, zz(2**62) + b"abc", "exceeds")
    assert_rejects(s, zz(-1) + b"abc", "negative")


def test_huge_string_length_is_not_allocated():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(AvroDecodeError):
            BYTES[1].decode(zz(2**62))
    assert time.perf_counter() - t0 < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_timestamp_outside_datetime_range(voevent_definition):
    d = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}],
    }
    s = _native.Schema(json.dumps(d))
    assert_rejects_dict = pytest.raises(AvroDecodeError, match="datetime")
    with assert_rejects_dict:
        s.decode(zz(2**62))
    assert s.decode_columns([zz(2**62)])["t"][0] == "timestamp-micros"  # raw int64 column is fine


def _only_decode_errors(s, data):
    for call in (lambda: s.decode(data), lambda: s.decode_columns([data])):
        with contextlib.suppress(AvroDecodeError):
            call()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    for _, s, _ in (ARR_LONG, ARR_NULL, MAP_INT, UNION, ENUM, STR, BYTES):
        _only_decode_errors(s, data)


def test_random_bytes_alert_and_voevent(alert_schema, voevent_definition):
    rng = random.Random(1)
    vo = _native.Schema(json.dumps(voevent_definition))
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
        _only_decode_errors(alert_schema, data)
        _only_decode_errors(vo, data)


def test_mutated_alerts_never_crash(alert_bodies, alert_schema):
    rng = random.Random(2)
    for i in range(300):
        body = bytearray(alert_bodies[i % len(alert_bodies)])
        for _ in range(rng.randrange(1, 5)):
            pos = rng.randrange(len(body))
            body[pos] = rng.getrandbits(8)
        _only_decode_errors(alert_schema, bytes(body))


def test_recursive_schema_depth_limit():
    d = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
    }
    s = _native.Schema(json.dumps(d))
    parsed = fastavro.parse_schema(d)
    chain = None
    for i in range(50):
        chain = {"v": i, "next": chain}
    body = s.encode(chain)
    assert body == fa_encode(parsed, chain)
    assert s.decode(body) == chain
    cols = s.decode_columns([body])
    assert cols["v"][0] == "int64"
    assert cols["next"][0] == "object" and cols["next"][1] == [chain["next"]]
    # a hostile chain far deeper than any real data
    deep = (zz(0) + zz(1)) * 100_000 + zz(0) + zz(0)
    assert_rejects(s, deep, "nesting")
    # cyclic Python data
    cyc = {"v": 1, "next": None}
    cyc["next"] = cyc
    with pytest.raises(_native.AvroEncodeError, match="nesting"):
        s.encode(cyc)
