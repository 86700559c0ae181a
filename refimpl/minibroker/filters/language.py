"""The filter language: untrusted text in, a schema-checked expression tree out.

A filter is one boolean expression over the contents of an alert packet::

    diaSource.snr > 10 and diaSource.band in ("g", "r") and count(prvDiaSources) >= 3

Its grammar is a small subset of Python's expression grammar, so the text is split into a tree by
the standard library's parser (:func:`ast.parse`, which only *parses*: nothing is evaluated, and
``eval``/``exec`` are never called on user text). Every node of that tree is then checked against a
short allow-list and translated into this module's own node classes, with types taken from the
alert schema. Anything outside the allow-list (attribute access other than a schema field path,
names starting with ``_``, subscripts, lambdas, comprehensions, ``**``, keyword arguments...) is
rejected with a :class:`FilterError` that points at the offending part of the text.

Semantics, chosen so that one rule covers every missing value:

* A field is ``null`` when the schema allows it and the alert has none, or when the record holding
  it (``diaObject``, ``ssSource``...) is absent. Arithmetic with a null, division by zero and
  ``log10`` of a non-positive number give null.
* A comparison (``<``, ``==``, ``in``...) involving a null is **false**; a boolean field that is
  null counts as false. ``not`` negates that two-valued result, so ``not (diaSource.snr > 10)``
  is true when ``snr`` is null; use ``isnull(...)`` to ask about nulls explicitly.
* Array fields (``prvDiaSources.psfFlux``: one value per earlier detection) are only usable inside
  the aggregates ``count``, ``min``, ``max``, ``mean``, which ignore nulls; ``min``/``max``/``mean``
  of an empty array are null, ``count`` is 0.

Limits keep evaluation cheap whatever the user writes: the text length, the number of nodes, the
nesting depth, the size of literal lists, the size of literals and the number of aggregates are
all bounded, so evaluation costs at most a fixed number of numpy operations per alert column.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from alertbench.refimpl.alert.records import field_specs
from alertbench.refimpl.alert.schema import AlertSchema, load_schema

from alertbench.errors import FilterError

MAX_LENGTH = 2000
MAX_NODES = 200
MAX_DEPTH = 24
MAX_MEMBERS = 256
MAX_AGGREGATES = 16
MAX_STRING = 200
MAX_INT = 2**63 - 1
MAX_TRANSLATED = 1000
"""Nodes the translation may create. The source is limited to MAX_NODES, but a chained
comparison translates its middle operands twice (``a < b < c`` is ``a < b and b < c``), so
nested chains grow exponentially: an 820-character filter once became 393,211 nodes (18 s to
parse and compile, 290 MB). Counted while translating, so the work stops at the limit."""

NUM, BOOL, STR, RECORD = "number", "boolean", "string", "record"
_KIND_OF_AVRO = {
    "int": NUM,
    "long": NUM,
    "float": NUM,
    "double": NUM,
    "boolean": BOOL,
    "string": STR,
}


@dataclass(frozen=True)
class Type:
    kind: str  # number | boolean | string | record
    array: bool = False

    def __str__(self) -> str:
        return f"list of {self.kind}s" if self.array else self.kind


@dataclass(frozen=True)
class FieldInfo:
    """One filterable field of the alert schema."""

    path: tuple[str, ...]
    type: Type
    avro: str  # int long float double boolean string, or 'record' for an array of records

    @property
    def name(self) -> str:
        return ".".join(self.path)


class FieldCatalog:
    """Every field path a filter may use, read from one alert schema version."""

    def __init__(self, schema: AlertSchema | None = None) -> None:
        self.schema = schema or load_schema()
        self.fields: dict[tuple[str, ...], FieldInfo] = {}
        self.unfilterable: dict[tuple[str, ...], str] = {}
        for spec in field_specs(self.schema.resolved):
            if spec.kind == "record":
                self._add_record((spec.name,), spec.inner, array=False)
            elif spec.kind == "array" and isinstance(spec.item, dict):
                self.fields[(spec.name,)] = FieldInfo((spec.name,), Type(RECORD, True), RECORD)
                self._add_record((spec.name,), spec.item, array=True)
            else:
                self._add((spec.name,), spec.kind, array=False)

    def _add_record(self, prefix: tuple[str, ...], record: dict[str, Any], array: bool) -> None:
        for spec in field_specs(record):
            self._add((*prefix, spec.name), spec.kind, array)

    def _add(self, path: tuple[str, ...], avro: str, array: bool) -> None:
        kind = _KIND_OF_AVRO.get(avro)
        if kind is None:
            self.unfilterable[path] = avro
        else:
            self.fields[path] = FieldInfo(path, Type(kind, array), avro)

    def lookup(self, path: tuple[str, ...]) -> FieldInfo:
        """The field, or KeyError with a suggestion in its message."""
        if path in self.fields:
            return self.fields[path]
        name = ".".join(path)
        if path in self.unfilterable:
            raise KeyError(
                f"field {name!r} holds {self.unfilterable[path]} data and cannot be filtered"
            )
        if len(path) == 1 and any(p[0] == path[0] for p in self.fields):
            raise KeyError(
                f"{name!r} is a record: name one of its fields, e.g. {name}.{self._first(path[0])}"
            )
        close = difflib.get_close_matches(name, [f.name for f in self.fields.values()], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return_msg = f"unknown field {name!r} in alert schema {self.schema.version}{hint}"
        raise KeyError(return_msg)

    def _first(self, record: str) -> str:
        return next(p[1] for p in self.fields if p[0] == record and len(p) > 1)


# -- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    span: tuple[int, int]
    type: Type

    def children(self) -> tuple[Node, ...]:
        return ()

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass(frozen=True)
class Field(Node):
    info: FieldInfo


@dataclass(frozen=True)
class Const(Node):
    value: Any


@dataclass(frozen=True)
class Unary(Node):
    op: str  # not | neg
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary(Node):
    """Arithmetic (``+ - * /``) or comparison (``< <= > >= == !=``)."""

    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Member(Node):
    operand: Node
    values: tuple[Any, ...]
    negate: bool

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Logical(Node):
    op: str  # and | or
    operands: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.operands


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]

    def children(self) -> tuple[Node, ...]:
        return self.args


@dataclass(frozen=True)
class Filter:
    """A checked filter: the original text, its tree and the fields it reads."""

    text: str
    root: Node
    catalog: FieldCatalog

    @property
    def fields(self) -> list[FieldInfo]:
        seen: dict[tuple[str, ...], FieldInfo] = {}
        for node in self.root.walk():
            if isinstance(node, Field):
                seen.setdefault(node.info.path, node.info)
        return list(seen.values())


_NUMBER = Type(NUM)
_BOOLEAN = Type(BOOL)

AGGREGATES = {"count", "min", "max", "mean"}
FUNCTIONS: dict[str, str] = {
    "abs": "abs(x): absolute value",
    "log10": "log10(x): base-10 logarithm (null for x <= 0)",
    "sqrt": "sqrt(x): square root (null for x < 0)",
    "angdist": "angdist(ra, dec, ra0, dec0): angular distance in degrees between two positions",
    "isnull": "isnull(field): true when the field has no value",
    "count": "count(list): number of entries (non-null values) in a list field",
    "min": "min(list): smallest non-null value of a list field",
    "max": "max(list): largest non-null value of a list field",
    "mean": "mean(list): mean of the non-null values of a list field",
}
_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_COMPARISONS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_DESCRIBE = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Lambda: "a lambda",
    ast.IfExp: "a conditional expression",
    ast.NamedExpr: "assignment",
    ast.Await: "await",
    ast.Starred: "unpacking",
    ast.Dict: "a dictionary",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.Slice: "a slice",
}


class _Parser:
    def __init__(self, text: str, catalog: FieldCatalog) -> None:
        self.text = text
        self.catalog = catalog
        self.aggregates = 0
        self.translated = 0
        self._line_starts = [0]
        for i, char in enumerate(text):
            if char == "\n":
                self._line_starts.append(i + 1)

    # positions: ast reports (line, UTF-8 byte column); errors point at characters
    def _char(self, line: int, byte_col: int) -> int:
        start = self._line_starts[line - 1]
        line_text = self.text[start:].split("\n", 1)[0]
        return start + len(line_text.encode()[:byte_col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self._char(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end_line = getattr(node, "end_lineno", None) or node.lineno  # type: ignore[attr-defined]
        end_col = getattr(node, "end_col_offset", None)
        end = self._char(end_line, end_col) if end_col is not None else start + 1
        return start, end

    def fail(
        self, message: str, node: ast.AST | Node | tuple[int, int] | None = None
    ) -> FilterError:
        if isinstance(node, Node):
            start, end = node.span
        elif isinstance(node, tuple):
            start, end = node
        elif node is not None:
            start, end = self.span(node)
        else:
            start, end = -1, -1
        return FilterError(message, self.text, start, end)

    # -- translation ----------------------------------------------------------------------

    def expression(self, node: ast.AST) -> Node:
        self.translated += 1
        if self.translated > MAX_TRANSLATED:
            raise self.fail(
                f"filter too complex: its translation exceeds {MAX_TRANSLATED} nodes (a chained "
                "comparison repeats its middle operands; nested chains multiply them)",
                node,
            )
        span = self.span(node)
        if isinstance(node, ast.BoolOp):
            operands = tuple(self.condition(v) for v in node.values)
            op = "and" if isinstance(node.op, ast.And) else "or"
            return Logical(span, _BOOLEAN, op, operands)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return Unary(span, _BOOLEAN, "not", self.condition(node.operand))
            if isinstance(node.op, ast.USub | ast.UAdd):
                operand = self.number(node.operand, "the operand of unary minus")
                if isinstance(node.op, ast.UAdd):
                    return operand
                if isinstance(operand, Const):
                    return Const(span, _NUMBER, -operand.value)
                return Unary(span, _NUMBER, "neg", operand)
            raise self.fail("'~' is not supported; use 'not' for booleans", node)
        if isinstance(node, ast.BinOp):
            op = _ARITHMETIC.get(type(node.op))
            if op is None:
                symbol = self.text[self.span(node.left)[1] : self.span(node.right)[0]].strip()
                hint = "; use log10 or multiply" if isinstance(node.op, ast.Pow) else ""
                raise self.fail(f"operator {symbol!r} is not supported{hint}", node)
            left = self.number(node.left, f"the left side of '{op}'")
            right = self.number(node.right, f"the right side of '{op}'")
            return Binary(span, _NUMBER, op, left, right)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name | ast.Attribute):
            return self.field(node)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            raise self.fail("a list of values is only allowed after 'in' or 'not in'", node)
        what = _DESCRIBE.get(type(node), type(node).__name__)
        raise self.fail(f"{what} is not allowed in a filter", node)

    def typed(self, node: ast.AST, want: Type, role: str) -> Node:
        result = self.expression(node)
        if result.type != want:
            found = result.type
            hint = ""
            if found.array:
                hint = "; use count/min/max/mean over a list"
            raise self.fail(f"{role} must be a {want}, but this is a {found}{hint}", result)
        return result

    def number(self, node: ast.AST, role: str) -> Node:
        return self.typed(node, _NUMBER, role)

    def condition(self, node: ast.AST) -> Node:
        return self.typed(node, _BOOLEAN, "a condition")

    def constant(self, node: ast.Constant) -> Const:
        value = node.value
        span = self.span(node)
        if isinstance(value, bool):
            return Const(span, _BOOLEAN, value)
        if isinstance(value, int):
            if abs(value) > MAX_INT:
                raise self.fail("integer literal is too large (at most 2**63 - 1)", node)
            return Const(span, _NUMBER, value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail("number literal is too large", node)
            return Const(span, _NUMBER, value)
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(f"string literal is longer than {MAX_STRING} characters", node)
            return Const(span, Type(STR), value)
        if value is None:
            raise self.fail("None is not a value here; use isnull(field)", node)
        raise self.fail(f"{type(value).__name__} literals are not allowed", node)

    def field(self, node: ast.Name | ast.Attribute) -> Field:
        parts: list[str] = []
        cursor: ast.AST = node
        while isinstance(cursor, ast.Attribute):
            parts.append(cursor.attr)
            cursor = cursor.value
        if isinstance(cursor, ast.Name):
            parts.append(cursor.id)
        for part in parts:
            if part.startswith("_"):
                raise self.fail(f"names starting with '_' are not allowed ({part!r})", node)
        if isinstance(cursor, ast.Subscript):
            raise self.fail("indexing is not allowed in a filter", cursor)
        if not isinstance(cursor, ast.Name):
            raise self.fail("attribute access is only allowed on alert fields", node)
        parts.reverse()
        path = tuple(parts)
        if len(path) == 1 and path[0] in FUNCTIONS:
            raise self.fail(f"{path[0]!r} is a function: call it, e.g. {FUNCTIONS[path[0]]}", node)
        try:
            info = self.catalog.lookup(path)
        except KeyError as exc:
            raise self.fail(str(exc.args[0]), node) from None
        return Field(self.span(node), info.type, info)

    def compare(self, node: ast.Compare) -> Node:
        links: list[Node] = []
        left_ast = node.left
        for op, right_ast in zip(node.ops, node.comparators, strict=True):
            span = (self.span(left_ast)[0], self.span(right_ast)[1])
            if isinstance(op, ast.In | ast.NotIn):
                links.append(self.member(span, left_ast, right_ast, isinstance(op, ast.NotIn)))
            elif type(op) in _COMPARISONS:
                links.append(self.comparison(span, _COMPARISONS[type(op)], left_ast, right_ast))
            else:
                raise self.fail(
                    "'is' is not supported; use '==' or isnull(field)", (span[0], span[1])
                )
            left_ast = right_ast
        if len(links) == 1:
            return links[0]
        return Logical(self.span(node), _BOOLEAN, "and", tuple(links))

    def comparison(
        self, span: tuple[int, int], op: str, left_ast: ast.AST, right_ast: ast.AST
    ) -> Node:
        left = self.expression(left_ast)
        right = self.expression(right_ast)
        for side in (left, right):
            if side.type.array:
                raise self.fail(
                    f"{side.type} cannot be compared; use count/min/max/mean over it", side
                )
        if left.type != right.type:
            raise self.fail(f"cannot compare a {left.type} with a {right.type}", span)
        if op not in ("==", "!=") and left.type.kind != NUM:
            raise self.fail(f"'{op}' needs numbers; {left.type}s allow only == and !=", span)
        if isinstance(left, Const) and isinstance(right, Const):
            raise self.fail("comparison of two constants does not depend on the alert", span)
        return Binary(span, _BOOLEAN, op, left, right)

    def member(
        self, span: tuple[int, int], left_ast: ast.AST, right_ast: ast.AST, negate: bool
    ) -> Node:
        operand = self.expression(left_ast)
        if operand.type.array or operand.type.kind not in (NUM, STR):
            raise self.fail(
                f"'in' needs a number or a string on its left, not a {operand.type}", operand
            )
        if not isinstance(right_ast, ast.Tuple | ast.List | ast.Set):
            raise self.fail('\'in\' needs a literal list on its right, e.g. ("g", "r")', right_ast)
        if len(right_ast.elts) > MAX_MEMBERS:
            raise self.fail(f"a list may hold at most {MAX_MEMBERS} values", right_ast)
        values = []
        for element in right_ast.elts:
            inner = element.operand if isinstance(element, ast.UnaryOp) else element
            if not isinstance(inner, ast.Constant):
                raise self.fail("the values after 'in' must be literals", element)
            value = self.expression(element)
            if not isinstance(value, Const):
                raise self.fail("the values after 'in' must be literals", element)
            if value.type != operand.type:
                raise self.fail(
                    f"this list is compared with a {operand.type}: {value.type} found", value
                )
            values.append(value.value)
        return Member(span, _BOOLEAN, operand, tuple(values), negate)

    def call(self, node: ast.Call) -> Node:
        span = self.span(node)
        if not isinstance(node.func, ast.Name):
            raise self.fail("only the filter functions can be called", node.func)
        name = node.func.id
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, list(FUNCTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(FUNCTIONS))
            raise self.fail(f"unknown function {name!r}{hint}; known: {known}", node.func)
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(f"{name}() takes positional arguments only: {FUNCTIONS[name]}", node)
        arity = 4 if name == "angdist" else 1
        if len(node.args) != arity:
            raise self.fail(f"{name}() takes {arity} argument(s): {FUNCTIONS[name]}", node)
        if name in AGGREGATES:
            self.aggregates += 1
            if self.aggregates > MAX_AGGREGATES:
                raise self.fail(f"a filter may use at most {MAX_AGGREGATES} aggregates", node)
            arg = self.expression(node.args[0])
            if not (isinstance(arg, Field) and arg.type.array):
                raise self.fail(f"{name}() takes a list field such as prvDiaSources.psfFlux", arg)
            if name != "count" and arg.type.kind != NUM:
                raise self.fail(f"{name}() needs a list of numbers, not a {arg.type}", arg)
            return Call(span, _NUMBER, name, (arg,))
        if name == "isnull":
            arg = self.expression(node.args[0])
            if not isinstance(arg, Field) or arg.type.array:
                raise self.fail(
                    "isnull() takes a single-valued field, e.g. isnull(diaSource.snr)", arg
                )
            return Call(span, _BOOLEAN, name, (arg,))
        args = tuple(self.number(a, f"the argument of {name}()") for a in node.args)
        return Call(span, _NUMBER, name, args)


def _shape_check(tree: ast.AST, text: str) -> None:
    """Bound the size and depth of the parsed tree without recursing (so no RecursionError)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise FilterError(f"filter is too large (more than {MAX_NODES} elements)", text)
        if depth > MAX_DEPTH:
            raise FilterError(f"filter is nested too deeply (more than {MAX_DEPTH} levels)", text)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            continue  # literal lists: bounded by MAX_MEMBERS, and elements must be literals
        for child in ast.iter_child_nodes(node):
            if not isinstance(
                child, ast.expr_context | ast.operator | ast.boolop | ast.unaryop | ast.cmpop
            ):
                stack.append((child, depth + 1))


def parse_filter(text: str, catalog: FieldCatalog | None = None) -> Filter:
    """Check ``text`` as a filter against the schema; :class:`FilterError` says what is wrong."""
    catalog = catalog or FieldCatalog()
    if not isinstance(text, str):
        raise FilterError(f"a filter is text, not {type(text).__name__}")
    # One line, same length: line breaks become spaces so that error carets line up.
    text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ").strip()
    if not text:
        raise FilterError("the filter is empty")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is {len(text):,} characters long; the maximum is {MAX_LENGTH:,}")
    if "\x00" in text:
        raise FilterError(
            "filter contains a NUL character", text, text.index("\x00"), text.index("\x00") + 1
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        start = (exc.offset or 1) - 1 if (exc.lineno or 1) == 1 else -1
        raise FilterError(f"syntax error: {exc.msg}", text, start, start + 1) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise FilterError(
            f"filter could not be parsed: {type(exc).__name__}: {exc}", text
        ) from None
    _shape_check(tree, text)
    parser = _Parser(text, catalog)
    root = parser.expression(tree.body)  # type: ignore[attr-defined]
    if root.type != _BOOLEAN:
        raise parser.fail(
            f"a filter must be a condition (true or false per alert), but this is a {root.type}",
            root,
        )
    if isinstance(root, Const):
        raise parser.fail("a filter must depend on the alert, not be a constant", root)
    return Filter(parser.text, root, catalog)
