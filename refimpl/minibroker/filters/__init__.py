"""User filters for the mini-broker: a small expression language over alert packet contents.

``language`` parses and type-checks a filter against the alert schema (untrusted text in, a typed
tree or a :class:`FilterError` out); ``columns`` turns a visit's alerts into numpy columns;
``compile`` turns a checked tree into a function that evaluates it over those columns at once.
"""

from alertbench.refimpl.minibroker.filters.compile import (
    CompiledFilter,
    columns_read,
    compile_filter,
)
from alertbench.refimpl.minibroker.filters.language import FieldCatalog, FilterError, parse_filter

__all__ = [
    "CompiledFilter",
    "FieldCatalog",
    "FilterError",
    "columns_read",
    "compile_filter",
    "parse_filter",
]
