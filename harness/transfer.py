"""What the users' commands (``publish``, ``subscribe``, ``vtp send``) need from alert files and
streams, as plain functions the CLI and the tests share.

A file's messages are published as the bytes the file holds whenever it holds messages (a frames
file, a single saved message) and no other serialization is asked for, so what a subscriber
saves is byte-identical to what was published; an Avro container holds records, not messages,
and is encoded with the Rubin Avro codec of the file's own schema version. Decoding on receipt
is by the content type each message carries (hop-client's rule: never guess), and by the
message's own first bytes when a transport carries none.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alertbench.refimpl.codecs.avro import read_ocf
from alertbench.refimpl.codecs.base import (
    Alert,
    Serializer,
    get_serializer,
    serializer_for_message,
    serializer_name_for,
)
from alertbench.refimpl.codecs.files import FRAMES_MAGIC, OCF_MAGIC, read_frames
from alertbench.transports.base import Received, Start

from alertbench.errors import AlertbenchError, ConfigError, DecodeError

EXTENSIONS = {
    "avro": ".avro",
    "protobuf": ".pb",
    "voevent": ".xml",
    "voevent3": ".vo3",
    "json": ".json",
}
"""The file name ending of one saved message of each serialization (VOEvent as ``.xml``, as
Comet's ``--save-event`` and comet-sendvo expect)."""


@dataclass(frozen=True)
class Message:
    """One alert ready to publish: its bytes, their content type and the alert's id."""

    payload: bytes
    content_type: str
    alert_id: int


def alert_id_of(alert: Alert, default: int = 0) -> int:
    """The alert's id: Rubin alerts are keyed by their DIASource (``alertId`` before v7)."""
    for key in ("diaSourceId", "alertId"):
        value = alert.get(key)
        if isinstance(value, int):
            return value
    return default


def _schema_version(writer_schema: dict[str, Any]) -> str | None:
    """``11.1`` from an OCF's writer schema namespace ``lsst.v11_1`` (None if not Rubin's)."""
    name = str(writer_schema.get("namespace") or writer_schema.get("name") or "")
    found = re.search(r"\bv(\d+)_(\d+)\b", name)
    return f"{found.group(1)}.{found.group(2)}" if found else None


def file_messages(
    path: Path, serializer: str | None = None, options: dict[str, Any] | None = None
) -> tuple[str, str, list[Message]]:
    """(container, serializer name, messages) of an alert file, ready to publish.

    ``serializer`` re-encodes every alert; None keeps the file's own messages byte for byte
    (an Avro container becomes Avro messages of its schema version). The whole file is read
    at once: it is read whole by the readers anyway, and a publisher with a known total can
    show how far it is. ``options`` go to the re-encoding serializer (``{"mode": "compact"}``).
    """
    data = path.read_bytes()
    if data.startswith(OCF_MAGIC):
        writer, records = read_ocf(io.BytesIO(data))
        version = _schema_version(writer)
        name = serializer or "avro"
        own_options = {"schema_version": version} if name == "avro" and version else {}
        codec = get_serializer(name, **own_options, **(options or {}))
        try:
            alerts = list(records)
        except EOFError as exc:
            raise DecodeError(f"{path} is truncated: {exc}", codec="avro-ocf") from exc
        return "avro-ocf", name, [_encoded(codec, alert) for alert in alerts]
    raw = list(read_frames(data)) if data.startswith(FRAMES_MAGIC) else [data]
    container = "frames" if data.startswith(FRAMES_MAGIC) else "message"
    if not raw:
        raise AlertbenchError(f"{path}: no alerts in this {container} file")
    own = serializer_for_message(raw[0])
    reader = get_serializer(own)
    if serializer is None or serializer == own:
        messages = [
            Message(frame, reader.content_type, alert_id_of(reader.loads(frame), i))
            for i, frame in enumerate(raw)
        ]
        return container, own, messages
    codec = get_serializer(serializer, **(options or {}))
    return container, serializer, [_encoded(codec, reader.loads(frame)) for frame in raw]


def _encoded(codec: Serializer, alert: Alert) -> Message:
    return Message(codec.dumps(alert), codec.content_type, alert_id_of(alert))


def parse_rate(text: str) -> float:
    """Alerts per second from ``100``, ``100/s`` or ``6000/min``; ConfigError otherwise."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|second|min|minute))?\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"--rate {text!r}: give alerts per second above 0, e.g. 100/s")
    per = 60.0 if (found.group(2) or "s").startswith("min") else 1.0
    return float(found.group(1)) / per


def parse_start(text: str) -> Start:
    """``--from``: ``earliest``, ``latest``, an offset (a whole number) or an ISO 8601 time
    (naive times are UTC, as Kafka's timestamps are); ConfigError for anything else."""
    word = text.strip().lower()
    if word in ("earliest", "latest"):
        return Start(word)
    if re.fullmatch(r"\d+", word):
        return Start.offset(int(word))
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--from {text!r}: give earliest, latest, an offset (a whole number) or an ISO "
            "time such as 2026-01-31T22:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Start.time(int(when.timestamp() * 1_000_000_000))


class Decoder:
    """Decodes received messages by their content type (by their first bytes when a transport
    carries none), keeping one codec per serialization."""

    def __init__(self) -> None:
        self._codecs: dict[str, Serializer] = {}

    def name_of(self, received: Received) -> str:
        """The serialization of a received message; UnknownSerializerError if none fits."""
        env = received.envelope
        if env.content_type and env.content_type != "application/octet-stream":
            return serializer_name_for(env.content_type)
        return serializer_for_message(env.payload)

    def decode(self, received: Received) -> tuple[str, Alert]:
        """(serialization, alert) of one received message; an AlertbenchError if it is bad."""
        name = self.name_of(received)
        if name not in self._codecs:
            self._codecs[name] = get_serializer(name)
        return name, self._codecs[name].loads(received.envelope.payload)


def summary(alert: Alert, received: Received) -> dict[str, Any]:
    """The one line ``subscribe`` prints per alert: ids, position, band, time and latency."""
    source = alert.get("diaSource") or {}
    env = received.envelope
    latency = None
    if env.t_sent_ns > 0 and received.t_received_ns >= env.t_sent_ns:
        latency = (received.t_received_ns - env.t_sent_ns) / 1e9
    return {
        "id": env.alert_id,
        "diaSourceId": source.get("diaSourceId", alert.get("diaSourceId")),
        "ra": source.get("ra"),
        "dec": source.get("dec"),
        "band": source.get("band", source.get("filterName")),
        "mjd": source.get("midpointMjdTai", source.get("midPointTai")),
        "latency_s": latency,
    }


def summary_line(fields: dict[str, Any]) -> str:
    def num(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, int | float) else "-"

    line = (
        f"{fields['id']} diaSourceId={fields['diaSourceId']} ra={num(fields['ra'], '.6f')} "
        f"dec={num(fields['dec'], '.6f')} band={fields['band'] or '-'} "
        f"mjd={num(fields['mjd'], '.6f')}"
    )
    if fields["latency_s"] is not None:
        line += f" latency={fields['latency_s'] * 1e3:.1f}ms"
    return line


def saved_name(alert: Alert, received: Received, name: str, folder: Path | None = None) -> str:
    """A saved message's file name: its alert id and its serialization's extension; with
    ``folder``, ``<id>-2``, ``<id>-3``... when that name is taken (a replayed or looped stream
    repeats ids, and a save must never overwrite what it saved before)."""
    stem = str(alert_id_of(alert, received.envelope.alert_id))
    ext = EXTENSIONS.get(name, ".bin")
    candidate, n = f"{stem}{ext}", 1
    while folder is not None and (folder / candidate).exists():
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def split_messages(alerts: Iterator[Alert], to: str, folder: Path) -> int:
    """Write each alert as one message file (``<alert id><extension>``) in ``folder``."""
    codec = get_serializer(to)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for alert in alerts:
        (folder / f"{alert_id_of(alert, count)}{EXTENSIONS.get(to, '.bin')}").write_bytes(
            codec.dumps(alert)
        )
        count += 1
    return count
