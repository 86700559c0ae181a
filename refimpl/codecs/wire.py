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

Protobuf on Kafka follows Confluent's Protobuf wire format: after the id come the *message
indexes*, the path of the message type within its .proto file (a zigzag-varint count, then one
zigzag varint per index; the single byte ``0x00`` stands for ``[0]``, the file's first message),
so confluent-kafka's ``ProtobufDeserializer`` and a schema registry read our bytes.
:func:`message_indexes` / :func:`read_message_indexes` write and check them.

One module, so the header is packed and checked in one place, and every error names the codec
that was decoding (``[protobuf] wrong magic byte``), not the module the code happens to live in.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from alertbench.errors import FramingError

MAGIC = 0
HEADER = struct.Struct(">BI")
"""Magic byte, schema id (unsigned, big-endian): 5 bytes."""

PROTOBUF_ID_BASE = 2_000_000
VOEVENT3_ID_BASE = 3_000_000
VOEVENT3_PROTOBUF_ID_BASE = 4_000_000
"""The VOEvent 3 model's Protobuf binding (its Avro binding is the 3,000,000 range)."""

MAX_MESSAGE_INDEXES = 32
"""Most message indexes a frame may carry (nesting depth of the message type). Confluent's
reader allows 100,000; a real .proto nests a handful of levels, and the bound keeps a hostile
count from costing more than a few steps."""
_MAX_VARINT = 10


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


def _zigzag(value: int) -> bytes:
    """``value`` as a zigzag varint (Confluent writes the message indexes this way)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def message_indexes(indexes: Sequence[int]) -> bytes:
    """Confluent's message-index array for the message at path ``indexes`` of its .proto file
    (``[5]``: the sixth top-level message); ``[0]`` is the single byte ``0x00``."""
    if not indexes or len(indexes) > MAX_MESSAGE_INDEXES:
        raise ValueError(f"a message index path has 1 to {MAX_MESSAGE_INDEXES} entries")
    if any(not 0 <= i < 2**31 for i in indexes):
        raise ValueError(f"message indexes must be non-negative 32-bit ints: {list(indexes)}")
    if list(indexes) == [0]:
        return b"\x00"
    return _zigzag(len(indexes)) + b"".join(_zigzag(i) for i in indexes)


def _read_zigzag(data: bytes | memoryview, pos: int, *, codec: str) -> tuple[int, int]:
    """(value, position after it) of the zigzag varint at ``pos``."""
    n = shift = 0
    for i in range(_MAX_VARINT):
        if pos + i >= len(data):
            raise FramingError(
                f"message indexes truncated at byte {pos + i}", codec=codec, raw=bytes(data)
            )
        byte = data[pos + i]
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if n >= 2**64:
                break
            return (n >> 1) ^ -(n & 1), pos + i + 1
    raise FramingError(
        f"message index varint at byte {pos} is longer than 64 bits", codec=codec, raw=bytes(data)
    )


def read_message_indexes(
    data: bytes | memoryview, offset: int = HEADER.size, *, codec: str
) -> tuple[tuple[int, ...], int]:
    """(message indexes, offset of the body) of the array at ``offset`` (after the header).

    A :class:`FramingError` naming ``codec`` for a truncated array, a negative count or index,
    or more than :data:`MAX_MESSAGE_INDEXES` entries: the count is checked against the bound
    (and against the bytes left, one per entry at least) before any entry is read, so a hostile
    count allocates nothing.
    """
    count, pos = _read_zigzag(data, offset, codec=codec)
    if count == 0:
        return (0,), pos
    if count < 0 or count > MAX_MESSAGE_INDEXES or count > len(data) - pos:
        raise FramingError(
            f"message index count {count} at byte {offset} is not 1 to {MAX_MESSAGE_INDEXES}"
            f" (with {len(data) - pos} bytes left)",
            codec=codec,
            raw=bytes(data),
        )
    indexes = []
    for _ in range(count):
        index, pos = _read_zigzag(data, pos, codec=codec)
        if index < 0:
            raise FramingError(f"negative message index {index}", codec=codec, raw=bytes(data))
        indexes.append(index)
    return tuple(indexes), pos
