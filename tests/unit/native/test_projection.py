"""decode_columns(..., fields=...): the projected columns equal the full decode's, and every message
is refused exactly as the full decode refuses it (same message, same byte), whatever is skipped."""

from __future__ import annotations

import functools
import json
import random

import fastavro
import pytest
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.alert.simulator import AlertSimulator, SimulationConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.native.conftest import _native, fa_encode, load_lsst_definition, lsst_versions
from tests.unit.native.strategies import record_strategy
from tests.unit.native.test_hostile import ARR_LONG, ARR_NULL, MAP_INT, UNION, zz

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

AvroDecodeError = _native.AvroDecodeError

# What the mini-broker's filters typically read (harness/minibroker_bench.py's templates).
FILTER_FIELDS = [
    "diaSource.visit",
    "diaSource.snr",
    "diaSource.psfFlux",
    "diaSource.band",
    "diaSource.isDipole",
    "diaObject.ra",
    "prvDiaSources",
    "prvDiaSources.psfFlux",
    "prvDiaForcedSources.psfFlux",
]


def paths(cols: dict) -> set[str]:
    return {p for p in cols if p != "__len__"}


def ancestors(path: str, all_paths: set[str], kinds: dict[str, str]) -> set[str]:
    """The array/map columns enclosing ``path`` (a projection fills their offsets too)."""
    parts = path.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
    return {p for p in prefixes & all_paths if kinds[p] in ("array", "map")}


def assert_projection(schema, bodies, full, fields) -> None:
    got = schema.decode_columns(bodies, fields=fields)
    kinds = {p: v[0] for p, v in full.items() if p != "__len__"}
    expected = set(fields)
    for f in fields:
        expected |= ancestors(f, paths(full), kinds)
    assert paths(got) == expected, fields
    assert got["__len__"] == full["__len__"]
    for p in expected:
        assert got[p] == full[p], p


def outcome(schema, bodies, fields=None):
    """The columns, or the exact error message."""
    try:
        return schema.decode_columns(bodies, fields=fields)
    except AvroDecodeError as exc:
        return f"error: {exc}"


def assert_same_outcome(schema, bodies, projections) -> None:
    full = outcome(schema, bodies)
    for fields in projections:
        got = outcome(schema, bodies, fields)
        if isinstance(full, str):
            assert got == full, fields
        else:
            assert not isinstance(got, str), (fields, got)
            for p in paths(got):
                assert got[p] == full[p], (fields, p)


@functools.cache
def simulated(version: str) -> tuple[object, list[bytes]]:
    """A few simulated alerts of one schema version, their native schema and bodies."""
    definition = load_schema(version).definition
    parsed = fastavro.parse_schema(definition)
    config = SimulationConfig(
        seed=3, alerts_per_visit_mean=5, alerts_per_visit_sigma=0.0, schema_version=version
    )
    alerts = AlertSimulator(config).visit(0).alerts(5)
    return _native.Schema(json.dumps(definition)), [fa_encode(parsed, a) for a in alerts]


@pytest.mark.parametrize("version", available_versions())
def test_every_column_alone_and_together_equals_the_full_decode(version) -> None:
    schema, bodies = simulated(version)
    full = schema.decode_columns(bodies)
    every = sorted(paths(full))
    for path in every:
        assert_projection(schema, bodies, full, [path])
    rng = random.Random(version)
    for _ in range(5):
        assert_projection(schema, bodies, full, rng.sample(every, len(every) // 3))
    assert_projection(schema, bodies, full, every)
    assert_projection(schema, bodies, full, [])
    present = [f for f in FILTER_FIELDS if f in full]
    assert_projection(schema, bodies, full, present)


def test_realistic_batch_on_two_threads(alert_bodies, alert_schema) -> None:
    # 100 messages: parsed in two halves whose columns are joined (offsets rebased).
    full = alert_schema.decode_columns(alert_bodies)
    assert_projection(alert_schema, alert_bodies, full, FILTER_FIELDS)
    assert_projection(alert_schema, alert_bodies, full, ["prvDiaSources.band", "cutoutScience"])


VERSIONS = lsst_versions()


@pytest.mark.parametrize("version,path", VERSIONS, ids=[v for v, _ in VERSIONS])
def test_random_records_project_like_the_full_decode(version, path) -> None:
    # Nulls at every level (null records, null arrays, empty arrays) in random records.
    definition = load_lsst_definition(path)
    parsed, strategy = record_strategy(definition)
    schema = _native.Schema(json.dumps(definition))
    every = sorted(paths(schema.decode_columns([])))

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(strategy, min_size=1, max_size=3), st.randoms(use_true_random=False))
    def run(records, rng):
        bodies = [fa_encode(parsed, r) for r in records]
        full = schema.decode_columns(bodies)
        assert_projection(schema, bodies, full, rng.sample(every, rng.randrange(len(every))))

    run()


def test_truncation_is_refused_identically(alert_bodies, alert_schema) -> None:
    body = alert_bodies[3]
    projections = [[], ["diaSource.visit"], FILTER_FIELDS, ["cutoutTemplate"]]
    for cut in [*range(0, len(body), 397), *range(len(body) - 2048, len(body), 13)]:
        truncated = body[:cut]
        assert_same_outcome(alert_schema, [alert_bodies[0], truncated], projections)
        assert outcome(alert_schema, [truncated], FILTER_FIELDS).startswith("error: message 0:")


def test_trailing_bytes_are_refused_identically(alert_bodies, alert_schema) -> None:
    for extra in (b"\x00", b"\x02\x02", b"x" * 100):
        bodies = [alert_bodies[0], alert_bodies[1] + extra]
        assert_same_outcome(alert_schema, bodies, [[], FILTER_FIELDS])
        assert "trailing" in outcome(alert_schema, bodies, ["diaSource.visit"])


CUTOUTS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")


def test_mutated_alerts_are_refused_or_decoded_identically(
    alerts, alert_bodies, alert_schema
) -> None:
    rng = random.Random(5)
    projections = [["diaSource.visit"], FILTER_FIELDS]
    refused = 0
    for i in range(150):
        body = bytearray(alert_bodies[i % len(alert_bodies)])
        # Mutations in the part before the cutouts' contents, where the structure is.
        structured = len(body) - sum(len(alerts[i % len(alerts)][c] or b"") for c in CUTOUTS)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(structured)] = rng.getrandbits(8)
        assert_same_outcome(alert_schema, [bytes(body)], projections)
        refused += isinstance(outcome(alert_schema, [bytes(body)]), str)
    assert refused > 20  # the mutations did reach the parser's checks


@pytest.mark.parametrize("index", [2, 3, -1, 2**40])
def test_bad_union_index_is_refused_identically(index) -> None:
    s = _native.Schema(
        json.dumps(
            {
                "type": "record",
                "name": "T",
                "fields": [
                    {"name": "u", "type": ["null", "long"]},
                    {"name": "d", "type": ["null", "double"]},
                    {"name": "x", "type": "long"},
                ],
            }
        )
    )
    good = zz(1) + zz(7) + zz(0) + zz(5)
    for body in (zz(index) + zz(1) + zz(0) + zz(5), zz(0) + zz(index) + b"\x00" * 8 + zz(5)):
        assert_same_outcome(s, [good, body], [["x"], ["u"], ["d"], []])
        assert "union index" in outcome(s, [body], ["x"])
    _, union, _ = UNION
    assert "union index" in outcome(union, [zz(index) + zz(1)], [])


@pytest.mark.parametrize("count", [2**31, 2**62, 2**63 - 1, 10**6])
def test_huge_counts_are_refused_identically(count) -> None:
    for _, s, _ in (ARR_LONG, ARR_NULL, MAP_INT):
        data = zz(count) + b"\x02" * 8
        assert_same_outcome(s, [data], [[]])
        assert outcome(s, [data], []).startswith("error: message 0:")


NESTED = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "v", "type": "long"},
        {
            "name": "a",
            "type": [
                "null",
                {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "I",
                        "fields": [
                            {"name": "x", "type": ["null", "double"]},
                            {"name": "s", "type": "string"},
                            {"name": "n", "type": "int"},
                        ],
                    },
                },
            ],
        },
        {"name": "m", "type": {"type": "map", "values": "string"}},
    ],
}


def test_invalid_utf8_in_a_skipped_string_is_refused_as_in_full() -> None:
    # Skipped strings are still checked: a projection must not accept what the full decode
    # refuses (the check costs little, strings in alerts being short).
    s = _native.Schema(json.dumps(NESTED))
    good = s.encode({"v": 1, "a": [{"x": 1.5, "s": "é", "n": 3}], "m": {"k": "w"}})
    for bad in (b"\xff\xfe", b"\xed\xa0\x80"):
        item = zz(1) + b"\x00" * 8 + zz(len(bad)) + bad + zz(3)
        body = zz(1) + zz(1) + zz(1) + item + zz(0) + zz(0)
        in_map = zz(1) + zz(0) + zz(1) + zz(1) + b"k" + zz(len(bad)) + bad + zz(0)
        for b in (body, in_map):
            assert_same_outcome(s, [good, b], [["v"], ["a.x"], ["a"], ["m.keys"], []])
            assert "UTF-8" in outcome(s, [b], ["v"])


def test_nested_nulls_maps_and_keys() -> None:
    s = _native.Schema(json.dumps(NESTED))
    records = [
        {"v": 1, "a": None, "m": {}},
        {"v": 2, "a": [], "m": {"a": "b", "c": "d"}},
        {"v": 3, "a": [{"x": None, "s": "", "n": -4}, {"x": 2.0, "s": "z", "n": 9}], "m": {}},
    ]
    bodies = [s.encode(r) for r in records]
    full = s.decode_columns(bodies)
    for fields in (["a.x"], ["a.s", "m.values"], ["m.keys"], ["m"], ["v", "a"], ["a.n", "m"]):
        assert_projection(s, bodies, full, fields)


def test_the_first_bad_message_is_named(alert_bodies, alert_schema) -> None:
    bodies = list(alert_bodies)
    bodies[80] = bodies[80][:-3]
    bodies[10] = bodies[10] + b"\x00"
    for fields in (None, ["diaSource.visit"]):
        message = outcome(alert_schema, bodies, fields)
        assert message.startswith("error: message 10:") and "trailing" in message


def test_fields_api(alert_bodies, alert_schema) -> None:
    full = alert_schema.decode_columns(alert_bodies[:3])
    assert alert_schema.decode_columns(alert_bodies[:3], fields=None) == full
    got = alert_schema.decode_columns(alert_bodies[:3], 0, (f for f in ["diaSource.ra"]))
    assert paths(got) == {"diaSource.ra"}
    with pytest.raises(KeyError, match=r"diaSource\.nope"):
        alert_schema.decode_columns(alert_bodies[:3], fields=["diaSource.nope"])
    with pytest.raises(TypeError):
        alert_schema.decode_columns(alert_bodies[:3], fields=[1])
    assert alert_schema.decode_columns([], fields=["diaSource.ra"])["diaSource.ra"][1] == b""


def test_skipped_leaves_edge_cases_match_the_full_decode() -> None:
    # Skipped leaf runs take a fast path for common encodings; everything else must come out
    # exactly as in the full decode.
    s = _native.Schema(
        json.dumps(
            {
                "type": "record",
                "name": "T",
                "fields": [
                    {"name": "i", "type": "int"},
                    {"name": "oi", "type": ["null", "int"]},
                    {"name": "l", "type": "long"},
                    {"name": "ol", "type": ["long", "null"]},
                    {"name": "f", "type": ["null", "float"]},
                    {"name": "b", "type": "boolean"},
                    {"name": "keep", "type": "long"},
                ],
            }
        )
    )

    default = {"i": zz(1), "oi": zz(1) + zz(2), "l": zz(3), "ol": zz(0) + zz(4), "f": zz(0)}

    def body(**parts: bytes) -> bytes:
        values = {**default, "b": b"\x01", **parts}
        return b"".join(values[k] for k in ("i", "oi", "l", "ol", "f", "b")) + zz(7)

    cases = [
        body(),
        body(i=zz(2**31 - 1), l=zz(2**63 - 1), ol=zz(0) + zz(-(2**63))),  # 5 and 10 bytes
        body(i=zz(2**31)),  # int out of range (5-byte varint)
        body(oi=zz(1) + zz(-(2**31) - 1)),
        body(l=b"\xff" * 10 + b"\x01"),  # varint over 10 bytes
        body(l=b"\xff" * 9 + b"\x7f"),  # overflows 64 bits
        body(oi=b"\x82\x00" + zz(5)),  # a non-canonical union index 1: valid
        body(oi=zz(1) + b"\x80\x80\x80\x80\x00"),  # non-canonical 5-byte int: valid
        body(ol=zz(1)),  # the null branch of ["long", "null"]
        body(ol=zz(2) + zz(4)),  # bad index
        body(f=zz(1) + b"\x00\x00\x80\x3f"),
        body(f=zz(1) + b"\x00\x00"),  # truncated float
        body(b=b""),  # truncated boolean
        body()[:3],
        body()[:-1],
    ]
    outcomes = [outcome(s, [c], ["keep"]) for c in cases]
    for c, got in zip(cases, outcomes, strict=True):
        assert_same_outcome(s, [c], [["keep"], ["i"], ["l", "b"], []])
        assert isinstance(got, str) == isinstance(outcome(s, [c]), str), c
    refused = [isinstance(o, str) for o in outcomes]
    assert refused == [False, False, True, True, True, True, False, False, False, True, False,
                       True, True, True, True]  # fmt: skip


def test_mutated_alerts_after_good_ones_are_refused_or_decoded_identically(
    alerts, alert_bodies, alert_schema
) -> None:
    """The same mutations, each after good alerts in one batch: by then the skipped segments'
    layouts are learned (the fast path checks a segment against the last layouts it had), and a
    mutated alert must still come out exactly as the full decode has it."""
    rng = random.Random(6)
    projections = [["diaSource.visit"], FILTER_FIELDS]
    refused = 0
    for i in range(150):
        n = i % len(alert_bodies)
        body = bytearray(alert_bodies[n])
        structured = len(body) - sum(len(alerts[n][c] or b"") for c in CUTOUTS)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(structured)] = rng.getrandbits(8)
        batch = [*alert_bodies[:4], bytes(body)]
        assert_same_outcome(alert_schema, batch, projections)
        refused += isinstance(outcome(alert_schema, batch), str)
    assert refused > 20


LAYOUT = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "ob", "type": ["null", "boolean"]},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": ["null", "string"]},
        {"name": "l", "type": "long"},
        {"name": "oi", "type": ["null", "int"]},
        {"name": "d", "type": ["null", "double"]},
        # Room after the skipped fields: the fast forms take a segment only with its most
        # bytes (and a read-ahead) still in the message.
        {"name": "pad", "type": "bytes"},
        {"name": "keep", "type": "long"},
    ],
}


def test_learned_layouts_never_accept_what_the_full_decode_refuses() -> None:
    """Each case after five good records of one layout (so that layout is learned), then again
    after one of every layout: a change of layout is followed exactly, and a byte the learned
    layout would not check (a string byte that is not UTF-8, a bad union index, a string longer
    than the fast form takes, an int out of range) is refused or decoded as the full decode does."""
    s = _native.Schema(json.dumps(LAYOUT))

    def body(**parts: bytes) -> bytes:
        values = {
            "ob": zz(1) + b"\x01",
            "b": b"\x00",
            "s": zz(1) + zz(3) + b"abc",
            "l": zz(300),
            "oi": zz(1) + zz(-5),
            "d": zz(1) + b"\x00" * 8,
            **parts,
        }
        pad = zz(80) + bytes(80)
        return b"".join(values[k] for k in ("ob", "b", "s", "l", "oi", "d")) + pad + zz(7)

    good = body()
    others = [
        body(ob=zz(0)),
        body(s=zz(0)),
        body(s=zz(1) + zz(0)),
        body(l=zz(2**40)),
        body(oi=zz(0), d=zz(0)),
    ]
    cases = [
        *others,
        body(s=zz(1) + zz(16) + b"x" * 16),
        body(s=zz(1) + zz(17) + b"x" * 17),  # longer than the fast form's strings: exact path
        body(s=zz(1) + zz(3) + "é".encode() + b"a"),  # valid, not ASCII: exact path
        body(s=zz(1) + zz(3) + b"\xff\xfea"),  # same length as the learned one, not UTF-8
        body(s=zz(1) + zz(3) + b"a\xed\xa0"),
        body(s=zz(1) + zz(-1)),
        body(b=b"\x02"),  # any non-zero boolean byte is true, as in fastavro
        body(ob=zz(1) + b"\xff"),
        body(ob=zz(2) + b"\x01"),  # bad union index
        body(oi=zz(1) + zz(2**31)),  # int out of range
        body(oi=zz(1) + b"\x80\x80\x80\x80\x00"),  # non-canonical 5-byte int: valid
        body(l=b"\xff" * 9 + b"\x7f"),  # overflows 64 bits
        body(d=zz(1) + b"\x00" * 4),  # a short double: the pad's length is read from its bytes
        good[:-1],
    ]
    outcomes = []
    for c in cases:
        for batch in ([good] * 5 + [c], [good, *others, c]):
            assert_same_outcome(s, batch, [["keep"], ["d"], ["s", "keep"], []])
        outcomes.append(isinstance(outcome(s, [good] * 5 + [c]), str))
    assert outcomes == [False] * 5 + [False, False, False, True, True, True, False, False, True,
                                      True, False, True, True, True]  # fmt: skip
