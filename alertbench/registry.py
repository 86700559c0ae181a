"""Lazy registries: ``"module:Class"`` strings, imported only when chosen, with "did you mean"."""

from __future__ import annotations

import difflib
import importlib
from typing import Any


def resolve(registry: dict[str, str], key: str, what: str, error: type[Exception]) -> Any:
    """The class registered under ``key``; ``error`` (with a suggestion) if there is none."""
    try:
        target = registry[key]
    except KeyError:
        close = difflib.get_close_matches(key, registry, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise error(f"no {what} {key!r}{hint} (known: {', '.join(sorted(registry))})") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
