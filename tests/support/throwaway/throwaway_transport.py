"""A transport the project does not ship: TCP under another name, in a module of its own.

tests/conformance/test_registry.py registers it with one registry line and checks that the
conformance suite, the matrix and the CLI pick it up without another file changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from alertbench.transports.base import LocalStream
from alertbench.transports.servers.kafka_cluster import free_port
from alertbench.transports.tcp import TcpTransport


class ThrowawayTransport(TcpTransport):
    variants: ClassVar[dict[str, dict[str, Any]]] = {"throwaway": {}}

    @classmethod
    @contextmanager
    def local_stream(
        cls, variant: str, *, shared: Any = None, tight: bool = False
    ) -> Iterator[LocalStream]:
        port = free_port()
        yield LocalStream(
            variant,
            f"throwaway://127.0.0.1:{port}",
            ports=[port],
            subscriber_options={"buffer": 1} if tight else {},
        )
