"""Does compression close VOEvent 2.0 XML's bandwidth gap to Avro, and at what CPU cost?

Two ways to compress an alert stream, measured on the same simulated alerts for XML (embed,
reference and compact modes), Rubin Avro and the VOEvent 3 proposal:

* per message (:func:`measure_messages`): each packet one zstd frame (the ``voevent``
  serializer's ``compression="zstd"``; Avro and voevent3 bytes through the same frame code for
  comparison), at several levels: bytes per alert, and µs per alert to encode and compress, and
  to decompress and decode (the codec's own cost included: that is what a producer and a
  consumer pay). Each time is the median of ``repeats`` passes over the alerts, min-max beside.
* in Kafka's batches (:func:`measure_kafka`): the same alerts, pre-encoded (so the figures are
  Kafka's and its compression's, the codec's cost being the first table's) through a real broker
  with ``compression.type`` none, lz4 and zstd, plus per-message zstd payloads without Kafka
  compression. Bytes are measured three ways, each for what it is: on the broker's disk (the
  topic partition's ``.log`` segments, when this run knows where the broker keeps them: a
  cluster it started), sent by the producer and fetched by the consumer (librdkafka statistics,
  ``txbytes``/``rxbytes`` summed over brokers: bytes on the wire, protocol framing included).
  CPU is this process's user+system seconds (every thread: librdkafka compresses in its own)
  around produce+flush and around the consume, with the broker's CPU when it is ours; the
  consumer's alerts/s runs from its first poll to its last alert. Runs are interleaved, one of
  each configuration per repeat, so drift on a shared machine hits all alike.

Every figure is in the results document; the report (:func:`render`) only reads them.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zstandard
from alertbench.harness.metrics import own_cpu_seconds, process_cpu_seconds
from alertbench.harness.pool import alert_pool
from alertbench.refimpl.codecs import Serializer, get_serializer
from alertbench.refimpl.codecs.zstdframe import DEFAULT_LEVEL, ZstdFrames
from alertbench.transports.base import MAX_FRAME, Envelope, Start
from alertbench.transports.kafka import KafkaTransport

CODECS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # (label, serializer name, options)
    ("voevent (embed)", "voevent", {"mode": "embed"}),
    ("voevent (reference)", "voevent", {"mode": "reference"}),
    ("voevent (compact)", "voevent", {"mode": "compact"}),
    ("avro", "avro", {}),
    ("voevent3", "voevent3", {}),
)
AVRO = "avro"
LEVELS = (1, DEFAULT_LEVEL, 9)
KAFKA_COMPRESSIONS = ("none", "lz4", "zstd")
STATS_INTERVAL_MS = 100
"""librdkafka statistics period: often enough to read the byte counters soon after a flush."""
STATS_WAIT_S = 5.0
WARMUP_ALERTS = 20
PNG = "xml-compression.png"


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def _timed(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, Any]:
    """µs per alert of ``fn`` (one pass over ``n`` alerts), after one pass off the record."""
    fn()
    passes = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        passes.append((time.perf_counter() - t0) / n * 1e6)
    return spread(passes)


class ZstdWrapped:
    """Any codec's bytes as one zstd frame: per-message zstd for Avro and voevent3, with the
    frame code the ``voevent`` serializer's own ``compression="zstd"`` uses."""

    def __init__(self, inner: Serializer, level: int) -> None:
        self.inner = inner
        self.frames = ZstdFrames(level, max_output=MAX_FRAME)
        self.content_type = f"{inner.media_type}+zstd"

    def dumps(self, alert: dict[str, Any]) -> bytes:
        return self.frames.compress(self.inner.dumps(alert))

    def loads(self, data: bytes) -> dict[str, Any]:
        return self.inner.loads(self.frames.decompress(data))


def message_codec(name: str, options: dict[str, Any], level: int | None) -> Any:
    """The codec as a producer would run it: plain (``level`` None) or per-message zstd."""
    if level is None:
        return get_serializer(name, **options)
    if name == "voevent":  # the shipped option, the path a real producer takes
        return get_serializer(name, **options, compression="zstd", compression_level=level)
    return ZstdWrapped(get_serializer(name, **options), level)


def _encode_all(codec: Any, alerts: list[dict[str, Any]]) -> list[bytes]:
    return [codec.dumps(a) for a in alerts]


def _decode_all(codec: Any, messages: list[bytes]) -> list[dict[str, Any]]:
    return [codec.loads(m) for m in messages]


def _variant(level: int | None) -> str:
    return "none" if level is None else f"zstd-{level}"


def measure_messages(
    alerts: list[dict[str, Any]],
    repeats: int,
    levels: Sequence[int] = LEVELS,
    announce: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Bytes and encode/decode µs per alert of every codec, plain and per-message zstd."""
    n = len(alerts)
    rows: list[dict[str, Any]] = []
    raw_bytes: dict[str, float] = {}
    for label, name, options in CODECS:
        for level in (None, *levels):
            announce(f"  {label}, per-message {_variant(level)}")
            codec = message_codec(name, options, level)
            encoded = [codec.dumps(a) for a in alerts]
            size = statistics.mean(len(e) for e in encoded)
            if level is None:
                raw_bytes[label] = size
            rows.append(
                {
                    "codec": label,
                    "serializer": name,
                    "options": options,
                    "per_message": _variant(level),
                    "level": level,
                    "content_type": codec.content_type,
                    "bytes_per_alert": size,
                    "bytes_vs_raw": size / raw_bytes[label],
                    "encode_us": _timed(functools.partial(_encode_all, codec, alerts), n, repeats),
                    "decode_us": _timed(functools.partial(_decode_all, codec, encoded), n, repeats),
                }
            )
    for row in rows:
        row["bytes_vs_avro_raw"] = row["bytes_per_alert"] / raw_bytes[AVRO]
    return rows


# --------------------------------------------------------------------------- Kafka


class _Stats:
    """librdkafka's statistics JSON as it arrives (kept as text, parsed only when read)."""

    def __init__(self) -> None:
        self.reports = 0
        self.last = ""

    def __call__(self, report: str) -> None:
        self.reports += 1
        self.last = report

    def totals(self) -> dict[str, int]:
        """Bytes sent and received, summed over every broker connection of the client."""
        if not self.last:
            return {"txbytes": 0, "rxbytes": 0}
        brokers = json.loads(self.last).get("brokers", {}).values()
        return {key: sum(int(b.get(key, 0)) for b in brokers) for key in ("txbytes", "rxbytes")}

    def wait_next(self, poll: Callable[[float], Any], timeout: float = STATS_WAIT_S) -> None:
        """Serve callbacks until a report newer than now arrives (bounded by ``timeout``)."""
        seen = self.reports
        deadline = time.monotonic() + timeout
        while self.reports == seen and time.monotonic() < deadline:
            poll(0.05)


def stored_log_bytes(cluster: Any, topic: str) -> int | None:
    """Bytes of the topic's log segments on the brokers' disks (None: not a cluster we can
    see). Index files are left out: Kafka preallocates them, they do not grow with data."""
    if cluster is None:
        return None
    total = 0
    for node in cluster.nodes:
        for part in (Path(node.workdir) / "data").glob(f"{topic}-*"):
            total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total


def _broker_cpu(cluster: Any) -> float | None:
    return process_cpu_seconds([n.pid for n in cluster.nodes]) if cluster is not None else None


def kafka_run(
    bootstrap: str,
    cluster: Any,
    payloads: list[bytes],
    content_type: str,
    compression: str,
) -> dict[str, Any]:
    """One fresh topic: produce ``payloads``, flush, measure, consume them all, delete it."""
    n = len(payloads)
    topic = f"xmlzstd-{uuid.uuid4().hex[:10]}"
    transport = KafkaTransport(f"kafka://{bootstrap}/{topic}", compression=compression)
    transport.prepare(partitions=1)
    try:
        pstats = _Stats()
        publisher = transport.open_publisher(
            config={"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": pstats}
        )
        serve = publisher._producer.poll  # serves the stats callback; no message comes back
        pstats.wait_next(serve)  # the baseline: connection, metadata and producer-id bytes
        before = pstats.totals()
        broker0, cpu0, t0 = _broker_cpu(cluster), own_cpu_seconds(), time.perf_counter()
        for i, payload in enumerate(payloads):
            publisher.publish(Envelope(payload, content_type, alert_id=i, sequence=i))
        unacknowledged = publisher.flush(60.0)
        produce_s, produce_cpu = time.perf_counter() - t0, own_cpu_seconds() - cpu0
        broker_produce = _broker_cpu(cluster)
        pstats.wait_next(serve)
        sent = pstats.totals()["txbytes"] - before["txbytes"]
        stored = stored_log_bytes(cluster, topic)

        cstats = _Stats()
        subscriber = transport.open_subscriber(
            Start.earliest(),
            config={"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": cstats},
        )
        try:
            # No baseline here (polling a consumer takes messages): its bytes count from its
            # creation, group join and offset commits included (a few KB per run).
            broker1, cpu1, t1 = _broker_cpu(cluster), own_cpu_seconds(), time.perf_counter()
            received = 0
            deadline = time.monotonic() + max(30.0, 0.1 * n)
            while received < n and time.monotonic() < deadline:
                if subscriber.poll(0.5) is not None:
                    received += 1
            consume_s, consume_cpu = time.perf_counter() - t1, own_cpu_seconds() - cpu1
            broker_consume = _broker_cpu(cluster)
            cstats.wait_next(subscriber.poll)  # everything is read: serves callbacks only
            fetched = cstats.totals()["rxbytes"]
        finally:
            subscriber.close()
    finally:
        _delete_topic(transport, topic)

    def broker_us(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else (end - start) / n * 1e6

    return {
        "alerts": n,
        "unacknowledged": unacknowledged,
        "received": received,
        "stored_bytes": stored,
        "producer_wire_bytes": sent,
        "consumer_wire_bytes": fetched,
        "produce_seconds": produce_s,
        "producer_cpu_us_per_alert": produce_cpu / n * 1e6,
        "broker_produce_cpu_us_per_alert": broker_us(broker0, broker_produce),
        "consume_seconds": consume_s,
        "consumer_alerts_per_second": received / consume_s if consume_s > 0 else 0.0,
        "consumer_cpu_us_per_alert": consume_cpu / n * 1e6,
        "broker_consume_cpu_us_per_alert": broker_us(broker1, broker_consume),
    }


def _delete_topic(transport: KafkaTransport, topic: str) -> None:
    """Free the broker's disk for the next run (best effort: the cluster may be external)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(transport.client_config())
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # a leftover topic only costs disk
            future.result(30)


@contextmanager
def _kafka(bootstrap_servers: str | None, cluster: Any) -> Iterator[tuple[str, Any, str]]:
    """(bootstrap, cluster or None, what it is): the given cluster (a KafkaCluster), the
    given address, or a single-node cluster started here and stopped on exit."""
    if cluster is not None:
        yield cluster.bootstrap_servers, cluster, "local (given by the caller), 1 broker"
    elif bootstrap_servers:
        yield bootstrap_servers, None, "external"
    else:
        with KafkaTransport.shared_resources() as own:
            yield own.bootstrap_servers, own, "local (started by this run), 1 broker, KRaft"


def _per_alert(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    values = [r[key] / r["alerts"] for r in runs if r[key] is not None]
    return spread(values) if values else None


def _spread_of(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    values = [r[key] for r in runs if r[key] is not None]
    return spread(values) if values else None


def measure_kafka(
    alerts: list[dict[str, Any]],
    repeats: int,
    *,
    message_rows: list[dict[str, Any]],
    compressions: Sequence[str] = KAFKA_COMPRESSIONS,
    per_message_level: int = DEFAULT_LEVEL,
    bootstrap_servers: str | None = None,
    cluster: Any = None,
    announce: Callable[[str], Any] = print,
) -> tuple[list[dict[str, Any]], str]:
    """Every codec's pre-encoded alerts through Kafka per ``compression.type``, and its
    per-message zstd payloads with none; the rows, and where the broker was."""
    configs: list[tuple[str, str, str, list[bytes], str]] = []
    for label, name, options in CODECS:
        for level, compressions_here in ((None, compressions), (per_message_level, ("none",))):
            codec = message_codec(name, options, level)
            payloads = [codec.dumps(a) for a in alerts]
            for compression in compressions_here:
                configs.append((label, _variant(level), compression, payloads, codec.content_type))
    codec_us = {
        (r["codec"], r["per_message"]): (r["encode_us"]["median"], r["decode_us"]["median"])
        for r in message_rows
    }
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(configs))}
    with _kafka(bootstrap_servers, cluster) as (bootstrap, seen, where):
        announce("  warming Kafka (off the record)")
        warm = configs[0]
        kafka_run(bootstrap, seen, warm[3][:WARMUP_ALERTS], warm[4], "none")
        for rep in range(repeats):
            for i, (label, variant, compression, payloads, ctype) in enumerate(configs):
                announce(f"  [{rep + 1}/{repeats}] {label}, {variant}, compression.type "
                         f"{compression}")  # fmt: skip
                runs[i].append(kafka_run(bootstrap, seen, payloads, ctype, compression))
    rows = []
    for i, (label, variant, compression, payloads, ctype) in enumerate(configs):
        done = runs[i]
        producer_cpu = _spread_of(done, "producer_cpu_us_per_alert")
        consumer_cpu = _spread_of(done, "consumer_cpu_us_per_alert")
        encode, decode = codec_us.get((label, variant), (None, None))
        row: dict[str, Any] = {
            "codec": label,
            "per_message": variant,
            "compression_type": compression,
            "content_type": ctype,
            "alerts": len(payloads),
            "payload_bytes_per_alert": statistics.mean(len(p) for p in payloads),
            "received_min": min(r["received"] for r in done),
            "unacknowledged_max": max(r["unacknowledged"] for r in done),
            "stored_bytes_per_alert": _per_alert(done, "stored_bytes"),
            "producer_wire_bytes_per_alert": _per_alert(done, "producer_wire_bytes"),
            "consumer_wire_bytes_per_alert": _per_alert(done, "consumer_wire_bytes"),
            "producer_cpu_us_per_alert": producer_cpu,
            "broker_produce_cpu_us_per_alert": _spread_of(done, "broker_produce_cpu_us_per_alert"),
            "consumer_alerts_per_second": _spread_of(done, "consumer_alerts_per_second"),
            "consumer_cpu_us_per_alert": consumer_cpu,
            "broker_consume_cpu_us_per_alert": _spread_of(done, "broker_consume_cpu_us_per_alert"),
            "codec_encode_us": encode,
            "codec_decode_us": decode,
            "runs": done,
        }
        # What one alert costs each side in all: the codec (first table) plus the client.
        row["sender_cpu_us_per_alert"] = (
            encode + producer_cpu["median"] if encode is not None and producer_cpu else None
        )
        row["receiver_cpu_us_per_alert"] = (
            decode + consumer_cpu["median"] if decode is not None and consumer_cpu else None
        )
        rows.append(row)
    return rows, where


def bytes_of(row: dict[str, Any]) -> float:
    """The bytes per alert a Kafka row is judged by: on disk if measured, else on the wire."""
    measured = row["stored_bytes_per_alert"] or row["producer_wire_bytes_per_alert"]
    return float(measured["median"]) if measured else float("nan")


def run_xml_compression(
    n_alerts: int = 200,
    seed: int = 11,
    repeats: int = 3,
    *,
    levels: Sequence[int] = LEVELS,
    compressions: Sequence[str] = KAFKA_COMPRESSIONS,
    with_kafka: bool = True,
    bootstrap_servers: str | None = None,
    cluster: Any = None,
    announce: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """The results payload: both measurements on the same ``n_alerts`` simulated alerts."""
    announce(f"simulating {n_alerts} realistic alerts (seed {seed})...")
    alerts = alert_pool(n_alerts, seed)
    announce("per-message compression:")
    messages = measure_messages(alerts, repeats, levels, announce)
    kafka_rows: list[dict[str, Any]] = []
    where = None
    if with_kafka:
        announce("Kafka compression.type:")
        kafka_rows, where = measure_kafka(
            alerts,
            repeats,
            message_rows=messages,
            compressions=compressions,
            bootstrap_servers=bootstrap_servers,
            cluster=cluster,
            announce=announce,
        )
    avro = {
        r["compression_type"]: bytes_of(r)
        for r in kafka_rows
        if r["codec"] == AVRO and r["per_message"] == "none"
    }
    avro_raw = avro.get("none")
    for row in kafka_rows:
        same = avro.get(row["compression_type"]) if row["per_message"] == "none" else None
        row["bytes_vs_avro_same_compression"] = bytes_of(row) / same if same else None
        row["bytes_vs_avro_uncompressed"] = bytes_of(row) / avro_raw if avro_raw else None
    return {
        "alerts": n_alerts,
        "seed": seed,
        "repeats": repeats,
        "levels": list(levels),
        "kafka_compressions": list(compressions),
        "kafka_per_message_level": DEFAULT_LEVEL,
        "kafka_cluster": where,
        "per_message": messages,
        "kafka": kafka_rows,
        "environment": {
            "versions": {
                "zstandard": zstandard.__version__,
                "libzstd": ".".join(str(v) for v in zstandard.ZSTD_VERSION),
            }
        },
    }


# --------------------------------------------------------------------------- report


def _cell(t: dict[str, Any] | None, fmt: str = ",.0f") -> str:
    if not t:
        return "–"
    return f"{t['median']:{fmt}} ({t['min']:{fmt}}–{t['max']:{fmt}})"


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "–" if value is None else f"{value:{fmt}}"


def render(doc: dict[str, Any], header: list[str]) -> str:
    """The Markdown report of an xml-compression run, from its results document alone."""
    lines = [
        f"# Compressed VOEvent XML: per message and in Kafka ({doc['alerts']} simulated alerts, "
        f"seed {doc['seed']})",
        "",
        *header,
        "",
        "## Per message",
        "",
        f"Each packet one zstd frame (levels {', '.join(map(str, doc['levels']))}); µs per alert "
        f"include the codec, median of {doc['repeats']} passes (fastest–slowest). Ratios: to "
        "the same codec uncompressed, and to Rubin Avro uncompressed. Ratios depend on content: "
        "the simulator's cutouts (Gaussian-noise images, near-constant variance planes, mostly "
        "empty masks) may compress better than real ones.",
        "",
        "| codec | per message | bytes/alert | x raw | x Avro | encode µs | decode µs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["per_message"]:
        lines.append(
            f"| {r['codec']} | {r['per_message']} | {r['bytes_per_alert']:,.0f} | "
            f"{r['bytes_vs_raw']:.3f} | {r['bytes_vs_avro_raw']:.2f} | {_cell(r['encode_us'])} | "
            f"{_cell(r['decode_us'])} |"
        )
    rows = doc["kafka"]
    if rows:
        stored = any(r["stored_bytes_per_alert"] for r in rows)
        lines += [
            "",
            "## Through Kafka",
            "",
            f"Broker: {doc['kafka_cluster']}, 1 partition, the project's producer (idempotent, "
            f"acks=all); per-message payloads zstd-{doc['kafka_per_message_level']}. "
            + (
                "Stored: the partition's log segments on disk (record batches, keys and "
                "headers included). "
                if stored
                else "Stored: not measured (an external cluster); judged by producer wire bytes. "
            )
            + "Wire: librdkafka's bytes sent (producer) and fetched (consumer), protocol "
            "framing included. CPU: this process, every thread (librdkafka compresses in its "
            "own), µs per alert; codec+client adds the per-message table's encode (or decode) "
            "median. Medians of the repeats (min–max).",
            "",
            "| codec | per message | compression.type | stored B/alert | x Avro same | "
            "x Avro none | producer wire B | consumer wire B | producer CPU µs | "
            "codec+producer µs | consumer alerts/s | consumer CPU µs | codec+consumer µs | "
            "broker CPU µs (in+out) |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: |",
        ]
        for r in rows:
            bp, bc = r["broker_produce_cpu_us_per_alert"], r["broker_consume_cpu_us_per_alert"]
            broker = f"{bp['median']:,.0f}+{bc['median']:,.0f}" if bp and bc else "–"
            lines.append(
                f"| {r['codec']} | {r['per_message']} | {r['compression_type']} | "
                f"{_cell(r['stored_bytes_per_alert'])} | "
                f"{_num(r['bytes_vs_avro_same_compression'], '.2f')} | "
                f"{_num(r['bytes_vs_avro_uncompressed'], '.2f')} | "
                f"{_cell(r['producer_wire_bytes_per_alert'])} | "
                f"{_cell(r['consumer_wire_bytes_per_alert'])} | "
                f"{_cell(r['producer_cpu_us_per_alert'])} | "
                f"{_num(r['sender_cpu_us_per_alert'])} | "
                f"{_cell(r['consumer_alerts_per_second'])} | "
                f"{_cell(r['consumer_cpu_us_per_alert'])} | "
                f"{_num(r['receiver_cpu_us_per_alert'])} | {broker} |"
            )
        lost = [r for r in rows if r["received_min"] < r["alerts"] or r["unacknowledged_max"]]
        if lost:
            lines += [
                "",
                "Incomplete runs (some alert not acknowledged or not consumed): "
                + ", ".join(
                    f"{r['codec']} {r['per_message']} {r['compression_type']}" for r in lost
                )
                + ".",
            ]
        lines += ["", "## The gap to Avro, in this run", ""]
        lines += _gap_lines(rows)
    lines += ["", f"![bytes per alert, compressed and not]({PNG})", ""]
    return "\n".join(lines)


def _gap_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per XML mode: its smallest configuration, against Avro with and without compression."""
    out = []
    avro = {
        r["compression_type"]: r for r in rows if r["codec"] == AVRO and r["per_message"] == "none"
    }
    for label in dict.fromkeys(r["codec"] for r in rows if r["codec"].startswith("voevent (")):
        mine = [r for r in rows if r["codec"] == label]
        best = min(mine, key=bytes_of)
        raw = next(
            (r for r in mine if r["per_message"] == "none" and r["compression_type"] == "none"),
            None,
        )
        same = avro.get(best["compression_type"]) if best["per_message"] == "none" else None
        how = "no" if best["per_message"] == "none" else best["per_message"]
        text = (
            f"- {label}: smallest with {how} per-message compression and compression.type "
            f"{best['compression_type']}: {bytes_of(best):,.0f} B/alert"
        )
        if raw is not None:
            text += f" ({bytes_of(best) / bytes_of(raw):.3f}x its uncompressed)"
        if "none" in avro:
            text += f", {bytes_of(best) / bytes_of(avro['none']):.2f}x Avro uncompressed"
        if same is not None:
            text += f", {bytes_of(best) / bytes_of(same):.2f}x Avro with the same compression"
        if best["sender_cpu_us_per_alert"] is not None and "none" in avro:
            ref = avro["none"]["sender_cpu_us_per_alert"]
            if ref:
                text += (
                    f"; sender CPU {best['sender_cpu_us_per_alert']:,.0f} µs/alert "
                    f"({best['sender_cpu_us_per_alert'] / ref:.1f}x Avro uncompressed)"
                )
        out.append(text + ".")
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    """Bytes per alert of each codec: raw, per-message zstd, and as Kafka stores it."""
    from alertbench.harness.report.plots import _pyplot, _save

    plt = _pyplot()
    labels = list(dict.fromkeys(r["codec"] for r in doc["per_message"]))
    level = doc["kafka_per_message_level"]
    series: list[tuple[str, list[float]]] = []
    msg = {(r["codec"], r["per_message"]): r["bytes_per_alert"] for r in doc["per_message"]}
    series.append(("uncompressed", [msg[(c, "none")] for c in labels]))
    series.append(
        (f"zstd-{level} per message", [msg.get((c, f"zstd-{level}"), 0.0) for c in labels])
    )
    kafka = {(r["codec"], r["per_message"], r["compression_type"]): r for r in doc["kafka"]}
    for comp in doc["kafka_compressions"] if doc["kafka"] else ():
        if comp != "none":
            found = [kafka.get((c, "none", comp)) for c in labels]
            series.append((f"Kafka {comp} (stored)", [bytes_of(r) if r else 0.0 for r in found]))
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 1.6), 4.5))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series):
        ax.bar(
            [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))],
            values,
            width=width,
            label=name,
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
    ax.set_ylabel("bytes per alert (log)")
    ax.set_title("Alert size: uncompressed, per-message zstd, Kafka batch compression")
    ax.legend(fontsize=8)
    _save(fig, path)
