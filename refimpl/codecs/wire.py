"""The Confluent wire framing every binary codec here shares: ``0x00`` + 4-byte big-endian id.

Rubin puts schemaless Avro on Kafka behind this 5-byte header (magic byte 0, then the schema id as
an unsigned big-endian integer: major*100+minor, 1101 for v11.1), so Rubin's own consumers and a
Confluent schema registry can read what we produce. The Protobuf and VOEvent 3 codecs use the
same header with ids in ranges of their own, so a consumer can tell format and schema version
from the first five bytes before parsing anything:

==========================  ==========================================
Rubin Avro                  the Rubin id (< 1,000,000)
Protobuf mirror             2,000,000 + the Rubin id (2001101 for v11.1)
VOEvent 3 proposal          3,000,000 + the Rubin id (3001101 for v11.1)
==========================  ==========================================

One module, so the header is packed and checked in one place, and every error names the codec
that was decoding (``[protobuf] wrong magic byte``), not the module the code happens to live in.
"""

from __future__ import annotations

import struct

from alertbench.errors import FramingError

MAGIC = 0
HEADER = struct.Struct(">BI")
"""Magic byte, schema id (unsigned, big-endian): 5 bytes."""

PROTOBUF_ID_BASE = 2_000_000
VOEVENT3_ID_BASE = 3_000_000


def frame(schema_id: int, body: bytes) -> bytes:
    """``body`` behind the header for ``schema_id``."""
    return HEADER.pack(MAGIC, schema_id) + body


def schema_id_of(data: bytes | memoryview) -> int | None:
    """The schema id of a framed message, or None if ``data`` does not start with a header."""
    if len(data) < HEADER.size or data[0] != MAGIC:
        return None
    schema_id: int = HEADER.unpack_from(data)[1]
    return schema_id


def unframe(
    data: bytes | memoryview, *, codec: str, expected_id: int | None = None
) -> tuple[int, memoryview]:
    """(schema id, body) of a framed message; :class:`FramingError` naming ``codec`` if the
    header is missing or wrong, or if its id is not ``expected_id`` (when one is given)."""
    if len(data) < HEADER.size:
        raise FramingError(
            f"message of {len(data)} bytes is shorter than the {HEADER.size}-byte Confluent header",
            codec=codec,
            raw=bytes(data),
        )
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FramingError(
            f"wrong magic byte 0x{magic:02x} (Confluent wire format starts with 0x00)",
            codec=codec,
            raw=bytes(data),
        )
    if expected_id is not None and schema_id != expected_id:
        raise FramingError(
            f"schema id {schema_id} is not this codec's ({expected_id})",
            codec=codec,
            raw=bytes(data),
        )
    return schema_id, memoryview(data)[HEADER.size :]
