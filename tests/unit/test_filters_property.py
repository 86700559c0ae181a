"""Random filters: the compiled, vectorised evaluation agrees with a plain tree walk per alert.

The reference below is a deliberately naive interpreter of the checked tree, written from the
documented semantics (nulls make comparisons false, arithmetic that leaves the reals is null,
aggregates ignore nulls), alert by alert in plain Python; the compiled filter works on numpy
columns of a whole visit. Hypothesis generates the filter texts from the language's grammar.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from alertbench.refimpl.minibroker.filters import compile_filter, parse_filter
from alertbench.refimpl.minibroker.filters.columns import VisitColumns
from alertbench.refimpl.minibroker.filters.language import (
    Binary,
    Call,
    Const,
    Field,
    Logical,
    Member,
    Node,
    Unary,
)
from astropy.coordinates import angular_separation
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

NUMBER_FIELDS = (
    "diaSource.snr",
    "diaSource.psfFlux",
    "diaSource.psfFluxErr",
    "diaSource.x",
    "diaSource.y",
    "diaSource.ra",
    "diaSource.dec",
    "diaSource.detector",
    "diaSource.extendedness",
    "diaObject.r_psfFluxMean",
    "diaObject.g_psfFluxNdata",
    "ssSource.helioRange",
)
LIST_FIELDS = ("prvDiaSources.psfFlux", "prvDiaSources.snr", "prvDiaForcedSources.psfFlux")
BOOL_FIELDS = ("diaSource.isDipole", "diaSource.centroid_flag")
STRING_FIELDS = ("diaSource.band",)

# Thresholds in the ranges the fields take (snr ~5-30, fluxes ~1e2-1e4, ra/dec, CCD numbers,
# counts ~0-100), so that most generated filters select some alerts and not others.
constants = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "3",
            "5",
            "7",
            "8",
            "10",
            "20",
            "30",
            "45",
            "90",
            "100",
            "150",
            "180",
            "300",
            "1000",
            "3000",
            "10000",
            "-10",
            "-100",
            "0.5",
            "2.5",
        ]
    ),
    st.floats(-1e4, 1e4, allow_nan=False).map(lambda x: repr(round(x, 3))),
)


def numbers(depth: int) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(NUMBER_FIELDS),
        constants,
        st.builds(
            lambda f, a: f"{f}({a})",
            st.sampled_from(["min", "max", "mean"]),
            st.sampled_from(LIST_FIELDS),
        ),
        st.builds(lambda a: f"count({a})", st.sampled_from([*LIST_FIELDS, "prvDiaSources"])),
    )
    if depth == 0:
        return leaves
    inner = numbers(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from("+-*/"), inner),
        st.builds(lambda a: f"abs({a})", inner),
        st.builds(lambda a: f"-{a}", inner),
        st.builds(
            lambda r, d: f"angdist(diaSource.ra, diaSource.dec, {r}, {d})",
            st.floats(0, 360).map(lambda x: repr(round(x, 2))),
            st.floats(-89, 89).map(lambda x: repr(round(x, 2))),
        ),
    )


def conditions(depth: int) -> st.SearchStrategy[str]:
    comparison = st.builds(
        lambda a, op, b: f"{a} {op} {b}",
        st.one_of(st.sampled_from(NUMBER_FIELDS), numbers(1)),
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
        st.one_of(constants, numbers(1)),
    )
    leaves = st.one_of(
        comparison,
        comparison,
        st.builds(
            lambda a, op, b: f"{a} {op} {b}",
            numbers(1),
            st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
            st.one_of(constants, numbers(1)),
        ),
        st.builds(
            lambda f, vals, neg: f"{f} {'not in' if neg else 'in'} ({vals},)",
            st.sampled_from(STRING_FIELDS),
            st.lists(st.sampled_from("ugrizy"), min_size=1, max_size=3).map(
                lambda bands: ", ".join(f'"{b}"' for b in bands)
            ),
            st.booleans(),
        ),
        st.sampled_from(BOOL_FIELDS),
        st.builds(lambda f: f"isnull({f})", st.sampled_from([*NUMBER_FIELDS, *BOOL_FIELDS])),
    )
    if depth == 0:
        return leaves
    inner = conditions(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda a: f"not ({a})", inner),
        st.builds(
            lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or"]), inner
        ),
    )


# -- the reference: one alert at a time, straight from the documented rules --------------------

_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}  # fmt: skip
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _get(alert: dict[str, Any], path: tuple[str, ...]) -> Any:
    if len(path) == 1:
        return alert.get(path[0])
    return (alert.get(path[0]) or {}).get(path[1])


def _list(alert: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    items = alert.get(path[0]) or []
    if len(path) == 1:
        return list(items)
    return [item[path[1]] for item in items if item[path[1]] is not None]


def _real(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reference(node: Node, alert: dict[str, Any]) -> Any:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Field):
        value = _get(alert, node.info.path)
        return bool(value) if node.type.kind == "boolean" else value
    if isinstance(node, Unary):
        value = reference(node.operand, alert)
        if node.op == "not":
            return not value
        return None if value is None else -value
    if isinstance(node, Binary):
        a, b = reference(node.left, alert), reference(node.right, alert)
        if node.op in _ARITH:
            if a is None or b is None:
                return None
            try:
                return _real(_ARITH[node.op](float(a), float(b)) if node.op == "/" else
                             _ARITH[node.op](a, b))  # fmt: skip
            except ZeroDivisionError:
                return None
        if a is None or b is None:
            return False
        return _CMP[node.op](a, b)
    if isinstance(node, Member):
        value = reference(node.operand, alert)
        if value is None:
            return False
        return (value in node.values) != node.negate
    if isinstance(node, Logical):
        values = [bool(reference(child, alert)) for child in node.operands]
        return all(values) if node.op == "and" else any(values)
    if isinstance(node, Call):
        if node.name == "isnull":
            return _get(alert, node.args[0].info.path) is None  # type: ignore[attr-defined]
        if node.name in ("count", "min", "max", "mean"):
            values = _list(alert, node.args[0].info.path)  # type: ignore[attr-defined]
            if node.name == "count":
                return len(values)
            if not values:
                return None
            if node.name == "mean":
                return sum(values) / len(values)
            return (min if node.name == "min" else max)(values)
        args = [reference(a, alert) for a in node.args]
        if any(a is None for a in args):
            return None
        if node.name == "abs":
            return abs(args[0])
        if node.name == "angdist":
            return math.degrees(float(angular_separation(*(math.radians(a) for a in args))))
    raise AssertionError(f"no reference for {node}")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(text=conditions(2))
def test_random_filters_agree_with_the_reference_interpreter(text, alerts) -> None:
    from alertbench.refimpl.minibroker.filters import FilterError
    from hypothesis import assume

    try:
        checked = parse_filter(text)
    except FilterError as exc:
        assume("two constants" not in str(exc))  # the generator may write 1 < 2
        raise
    got = compile_filter(checked).select(VisitColumns(alerts)).tolist()
    want = [bool(reference(checked.root, a)) for a in alerts]
    event("selects " + ("none" if not any(want) else "all" if all(want) else "some"))
    mismatches = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not mismatches, f"{text}: alert/compiled/reference {mismatches[:5]}"
