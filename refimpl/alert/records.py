"""Schema-driven records: known values where the simulator has physics, valid fills elsewhere.

The simulator knows the physics of Rubin's current field names (``psfFlux``, ``midpointMjdTai``,
``band``...). Every schema version renames or adds fields, so rather than hard-coding one field
list, each record is built from its Avro definition: fields the simulator computed are taken as
given, every other field gets a type-correct value, so an alert validates against whichever shipped
schema version was selected. Avro ``float`` is 32-bit: every float field is rounded to float32 here
so that an Avro round trip returns exactly the dict that went in.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Record = dict[str, Any]


def _strip_null(avro_type: Any) -> tuple[Any, bool]:
    """(the non-null branch of a ["null", T] union, whether null is allowed)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        nullable = len(branches) < len(avro_type)
        return (branches[0] if len(branches) == 1 else branches), nullable
    return avro_type, False


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        if "logicalType" in avro_type:
            return avro_type["type"]
        return avro_type["type"]
    return "union"


@dataclass(frozen=True)
class FieldSpec:
    """One Avro record field reduced to what codecs need: name, kind, nullability, inner type."""

    name: str
    kind: str  # int long float double boolean string bytes record array ...
    nullable: bool
    inner: Any
    doc: str = ""

    @property
    def item(self) -> Any:
        """The item type of an array field."""
        return self.inner["items"]


def field_specs(record_schema: dict[str, Any]) -> list[FieldSpec]:
    out = []
    for spec in record_schema["fields"]:
        inner, nullable = _strip_null(spec["type"])
        out.append(FieldSpec(spec["name"], _kind(inner), nullable, inner, spec.get("doc", "")))
    return out


_EMPTY = {"array": list, "map": dict}


class RecordBuilder:
    """Builds dicts for one Avro record type; unknown fields get valid, varied values."""

    def __init__(self, record_schema: dict[str, Any]) -> None:
        self.name: str = record_schema["name"].split(".")[-1]
        self._specs: list[tuple[str, str, bool, Any]] = []
        for spec in record_schema["fields"]:
            inner, nullable = _strip_null(spec["type"])
            self._specs.append((spec["name"], _kind(inner), nullable, inner))
        self.field_names = tuple(name for name, _, _, _ in self._specs)
        self.float_fields = tuple(name for name, kind, _, _ in self._specs if kind == "float")
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def build(self, values: Record, rng: np.random.Generator) -> Record:
        """A record with ``values`` where the schema has those fields, valid fills elsewhere."""
        keys = tuple(values)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plans[keys] = self._plan(set(keys))
        out: Record = {name: values[name] for name in plan.given}
        round_float32(out, plan.given_float32)
        out.update(plan.constants)
        if plan.fill_float32:
            noise = rng.standard_normal(len(plan.fill_float32)).astype(np.float32).tolist()
            out.update(zip(plan.fill_float32, noise, strict=True))
        if plan.fill_double:
            doubles = rng.standard_normal(len(plan.fill_double)).tolist()
            out.update(zip(plan.fill_double, doubles, strict=True))
        if plan.fill_int:
            ints = rng.integers(0, 100, len(plan.fill_int)).tolist()
            out.update(zip(plan.fill_int, ints, strict=True))
        for name, kind, inner in plan.fill_fresh:
            out[name] = RecordBuilder(inner).build({}, rng) if kind == "record" else _EMPTY[kind]()
        return out

    def _plan(self, given: set[str]) -> _Plan:
        plan = _Plan()
        for name, kind, nullable, inner in self._specs:
            if name in given:
                plan.given.append(name)
                if kind == "float":
                    plan.given_float32.append(name)
            elif kind == "float":
                plan.fill_float32.append(name)
            elif kind == "double":
                plan.fill_double.append(name)
            elif kind in ("int", "long"):
                plan.fill_int.append(name)
            elif kind == "boolean":
                plan.constants[name] = False
            elif nullable:
                plan.constants[name] = None
            elif kind in ("record", "array", "map"):
                plan.fill_fresh.append((name, kind, inner))
            else:
                plan.constants[name] = _required_default(kind, inner)
        return plan


@dataclass
class _Plan:
    """How to build a record from one set of given keys (cached: the simulator reuses key sets)."""

    given: list[str] = field(default_factory=list)
    given_float32: list[str] = field(default_factory=list)
    fill_float32: list[str] = field(default_factory=list)
    fill_double: list[str] = field(default_factory=list)
    fill_int: list[str] = field(default_factory=list)
    fill_fresh: list[tuple[str, str, Any]] = field(default_factory=list)
    constants: Record = field(default_factory=dict)


def _required_default(kind: str, inner: Any) -> Any:
    """An immutable valid value for a required field the simulator knows nothing about."""
    if kind == "string":
        return ""
    if kind == "bytes":
        return b""
    if kind == "enum":
        return inner["symbols"][0]
    if kind == "null":
        return None
    raise TypeError(f"no default for Avro type {inner!r}")


def round_float32(record: Record, float_fields: tuple[str, ...]) -> None:
    """Round every non-null ``float_fields`` value to the nearest float32, in place, in a batch."""
    present = [name for name in float_fields if record.get(name) is not None]
    if not present:
        return
    rounded = array("f", [record[name] for name in present]).tolist()
    for name, value in zip(present, rounded, strict=True):
        record[name] = value
