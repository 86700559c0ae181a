"""A codec the project does not ship: alerts as JSON (bytes as base64), in a module of its own.

tests/conformance/test_registry.py registers it with one registry line and checks that the
serializer suite, the matrix and the CLI pick it up without another file changed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from alertbench.errors import DecodeError, EncodeError

MARK = b'{"throwaway":'


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$time": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _hook(node: dict[str, Any]) -> Any:
    if set(node) == {"$b64"}:
        return base64.b64decode(node["$b64"])
    if set(node) == {"$time"}:
        return dt.datetime.fromisoformat(node["$time"])
    return node


class ThrowawaySerializer:
    name = "throwaway"
    media_type = "application/x-throwaway+json"
    content_type = media_type

    @staticmethod
    def recognizes(data: bytes) -> bool:
        return bytes(data[: len(MARK)]) == MARK

    def dumps(self, alert: dict[str, Any]) -> bytes:
        try:
            text = json.dumps({"throwaway": alert}, default=_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EncodeError(str(exc), codec=self.name) from exc
        return text.encode()

    def loads(self, data: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(bytes(data), object_hook=_hook)
            alert = doc["throwaway"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DecodeError(
                f"not a throwaway alert: {exc}", codec=self.name, raw=bytes(data)
            ) from exc
        if not isinstance(alert, dict):
            raise DecodeError("not a throwaway alert", codec=self.name, raw=bytes(data))
        return alert
