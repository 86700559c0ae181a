"""Alert files in any of the four serializations: read them, write them, tell them apart.

* ``avro``: an Avro Object Container File (the archive format; any Avro reader opens it).
* ``protobuf``, ``voevent``, ``voevent3`` (and ``avro`` messages): a *frames* file, ``ABFR``
  then one 4-byte big-endian length and one message per alert (the same length prefix VTP uses
  on the wire), so a file holds exactly the bytes a transport would carry.
* A single message of any format (as saved from a stream) is recognised too.

Which codec a message needs is read from the message itself: XML is VOEvent 2.0; framed binary
messages carry a schema id whose range names the format (Rubin Avro < 1,000,000, Protobuf
2,000,000 + id, VOEvent 3 3,000,000 + id).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from alertbench.refimpl.codecs.avro import read_ocf, write_ocf
from alertbench.refimpl.codecs.base import (
    Alert,
    Serializer,
    get_serializer,
    serializer_for_message,
)

from alertbench.errors import AlertbenchError

FRAMES_MAGIC = b"ABFR"
LENGTH = struct.Struct(">I")
OCF_MAGIC = b"Obj\x01"


def read_frames(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)[len(FRAMES_MAGIC) :]
    pos = 0
    while pos < len(view):
        if pos + LENGTH.size > len(view):
            raise AlertbenchError(f"frames file truncated in a length prefix at byte {pos}")
        (size,) = LENGTH.unpack_from(view, pos)
        pos += LENGTH.size
        if pos + size > len(view):
            raise AlertbenchError(f"frames file truncated: frame of {size} bytes at byte {pos}")
        yield bytes(view[pos : pos + size])
        pos += size


def read_alert_file(path: Path) -> tuple[str, str, Iterator[Alert]]:
    """(container, serializer name, alerts) of any alert file alertbench writes."""
    data = path.read_bytes()
    if data.startswith(OCF_MAGIC):
        _, alerts = read_ocf(io.BytesIO(data))
        return "avro-ocf", "avro", alerts
    if data.startswith(FRAMES_MAGIC):
        frames = read_frames(data)
        first = next(frames, None)
        if first is None:
            return "frames", "none", iter(())
        name = serializer_for_message(first)
        codec = get_serializer(name)

        def alerts() -> Iterator[Alert]:
            yield codec.loads(first)
            for frame in frames:
                yield codec.loads(frame)

        return "frames", name, alerts()
    name = serializer_for_message(data)
    return "message", name, iter([get_serializer(name).loads(data)])


def write_alert_file(path: Path, alerts: Iterable[Alert], to: str) -> int:
    """Write ``alerts`` as ``to``: an OCF archive for avro, a frames file otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fp:
        if to == "avro":
            return write_ocf(fp, alerts)
        codec: Serializer = get_serializer(to)
        fp.write(FRAMES_MAGIC)
        count = 0
        for alert in alerts:
            message = codec.dumps(alert)
            fp.write(LENGTH.pack(len(message)))
            fp.write(message)
            count += 1
        return count
