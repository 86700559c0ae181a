"""Rubin's alert serialization: schemaless Avro in the Confluent wire format, plus OCF archives.

Wire format (what Rubin puts on Kafka, so Rubin's own consumers can read what we produce):
``0x00`` magic byte, the schema id as a 4-byte **big-endian** unsigned integer (major*100+minor:
1101 for v11.1), then the schemaless Avro body; the header is :mod:`.wire`'s, shared with the
Protobuf and VOEvent 3 codecs.

Engines: the codec, not the network, bounds the whole system (a ~130 KB alert carries ~3,800
light-curve values, and a Python codec pays per value), so the engine is selectable.
``native`` (the default) is this project's Rust engine (refimpl/native, built with the package):
the schema is compiled once and walked without per-field Python dispatch; it writes
byte-identical output to fastavro, decodes to the same dicts, refuses trailing bytes, and decodes
a batch into numpy columns (:mod:`.columns`). ``fastavro`` (the Apache reference the tests check
every engine against) and ``cavro`` (Cython) stay selectable as references; cavro's public API
does not report how much input it consumed, so it accepts trailing bytes.

Importing the native engine makes glibc keep up to 64 MiB of freed memory for reuse
(``_native.MALLOC_KEEPS_FREED`` says whether it did): with glibc's defaults every pass over a
batch of 130 KB alerts faulted its ~10 MB back in from the kernel, which cost the encoder and
the columnar decode more than their own work. ``ALERTBENCH_NATIVE_MALLOC=default`` (or any glibc
malloc tunable in the environment) leaves glibc's policy alone.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import cavro
import fastavro
from alertbench.refimpl import _native
from alertbench.refimpl.alert.schema import (
    AlertSchema,
    available_versions,
    load_schema,
    schema_for_id,
)
from alertbench.refimpl.codecs.base import Alert
from alertbench.refimpl.codecs.wire import PROTOBUF_ID_BASE, frame, schema_id_of, unframe

from alertbench.errors import ConfigError, DecodeError, EncodeError, FramingError, SchemaError

ENGINES = ("native", "cavro", "fastavro")
DEFAULT_ENGINE = "native"


class AvroEngine:
    """Schemaless encode/decode of one schema with one Avro library, the schema compiled once."""

    def __init__(self, schema: AlertSchema, engine: str = DEFAULT_ENGINE) -> None:
        self.schema = schema
        self.engine = engine
        if engine == "native":
            self._native = _native.Schema(json.dumps(schema.definition))
        elif engine == "cavro":
            self._cavro = cavro.Schema(schema.definition, record_decodes_to_dict=True)
        elif engine != "fastavro":
            raise ConfigError(f"unknown Avro engine {engine!r}; choose one of {ENGINES}")

    def encode(self, alert: Alert) -> bytes:
        if self.engine == "native":
            return self._native.encode(alert)
        if self.engine == "cavro":
            return self._cavro.binary_encode(alert)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self.schema.parsed, alert)
        return buffer.getvalue()

    def decode(self, data: bytes | memoryview, offset: int = 0) -> Alert:
        """The record in ``data[offset:]``, which it must fill exactly (no copy for native)."""
        if self.engine == "native":
            return self._native.decode(data, offset)
        body = memoryview(data)[offset:]
        if self.engine == "cavro":
            return self._cavro.binary_decode(bytes(body))
        buffer = io.BytesIO(body)
        alert = fastavro.schemaless_reader(buffer, self.schema.parsed, self.schema.parsed)
        left = len(body) - buffer.tell()
        if left:
            raise ValueError(f"{left} trailing bytes after a complete alert")
        return alert

    def decode_columns(self, messages: list[Any], offset: int = 0) -> dict[str, Any]:
        """Raw columns of a batch (the native layout, see refimpl/native/README.md)."""
        if self.engine != "native":
            raise ConfigError(f"columnar decode needs the native engine, not {self.engine!r}")
        return self._native.decode_columns(messages, offset)


class AvroSerializer:
    """Rubin alerts as Confluent-framed schemaless Avro. Decodes any shipped schema version."""

    name = "avro"
    media_type = "application/vnd.rubin.alert+avro"

    @staticmethod
    def recognizes(data: bytes) -> bool:
        """A Confluent-framed message with a Rubin Avro id (below the other codecs' ranges)."""
        schema_id = schema_id_of(data)
        return schema_id is not None and schema_id < PROTOBUF_ID_BASE

    def __init__(self, schema_version: str | None = None, engine: str = DEFAULT_ENGINE) -> None:
        self.schema = load_schema(schema_version)
        self.engine = engine
        self._engines: dict[int, AvroEngine] = {
            self.schema.schema_id: AvroEngine(self.schema, engine)
        }
        self.content_type = f"application/vnd.rubin.alert+avro; schema-id={self.schema.schema_id}"

    def _engine_for(self, schema_id: int, data: bytes) -> AvroEngine:
        engine = self._engines.get(schema_id)
        if engine is None:
            try:
                engine = AvroEngine(schema_for_id(schema_id), self.engine)
            except SchemaError:
                raise FramingError(
                    f"unknown schema id {schema_id} (this installation knows Rubin schemas "
                    f"{', '.join(str(load_schema(v).schema_id) for v in available_versions())})",
                    codec=self.name,
                    raw=bytes(data),
                ) from None
            self._engines[schema_id] = engine
        return engine

    def dumps(self, alert: Alert) -> bytes:
        try:
            body = self._engines[self.schema.schema_id].encode(alert)
        except Exception as exc:
            raise EncodeError(
                f"alert does not fit schema {self.schema.version}: {exc}", codec=self.name
            ) from exc
        return frame(self.schema.schema_id, body)

    def loads(self, data: bytes) -> Alert:
        schema_id, body = unframe(data, codec=self.name)
        engine = self._engine_for(schema_id, data)
        try:
            return engine.decode(data, len(data) - len(body))
        except Exception as exc:  # every engine failure mode: EOF, bad union index, bad UTF-8...
            raise DecodeError(
                f"body is not a valid schema {engine.schema.version} alert "
                f"({type(exc).__name__}: {exc})",
                codec=self.name,
                raw=bytes(data),
            ) from exc


def write_ocf(
    fp: BinaryIO, alerts: Iterable[Alert], schema_version: str | None = None, codec: str = "null"
) -> int:
    """Write ``alerts`` to an Avro Object Container File; returns how many were written.

    OCF files carry their schema, so any Avro reader (and ``lsst.alert.packet``) can read them.
    """
    schema = load_schema(schema_version)
    count = 0

    def counted() -> Iterator[Alert]:
        nonlocal count
        for alert in alerts:
            count += 1
            yield alert

    fastavro.writer(
        fp,
        schema.parsed,
        counted(),
        codec=codec,
        metadata={"rubin.schema.id": str(schema.schema_id)},
    )
    return count


def read_ocf(fp: BinaryIO) -> tuple[dict[str, Any], Iterator[Alert]]:
    """(the file's writer schema, an iterator over its alerts) of an OCF archive."""
    try:
        reader = fastavro.reader(fp)
    except Exception as exc:
        raise DecodeError(f"not an Avro container file: {exc}", codec="avro-ocf") from exc
    return reader.writer_schema, iter(reader)
