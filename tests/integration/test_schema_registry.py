"""The project's schema registry read the way Rubin's brokers read Rubin's: confluent-kafka's
SchemaRegistryClient + AvroDeserializer (and ProtobufDeserializer) on real Kafka.

The registry is the real HTTP server (``schema_registry`` fixture, a free port on 127.0.0.1),
the topics are on the real Kafka of the ``kafka_cluster`` fixture, the alerts are published by
alertbench's own Kafka transport and serializers, and the consumer is a plain
``confluent_kafka.Consumer``: nothing in between is ours, so a wrong id, subject or schema text
in the registry fails the decode.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
import uuid

import fastavro
import pytest
from alertbench.harness.cli.kafka import RUBIN_SUBJECT, registry_catalogue
from alertbench.refimpl.alert.schema import available_versions, load_schema
from alertbench.refimpl.codecs.avro import AvroSerializer
from alertbench.refimpl.codecs.protobuf import ProtobufSerializer
from alertbench.transports.base import Envelope, get_transport
from alertbench.transports.kafka import KafkaTransport
from alertbench.transports.servers.kafka_cluster import KafkaCluster
from alertbench.transports.servers.registry import CONTENT_TYPE, MAX_BODY, SchemaRegistryServer
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.kafka


def _publish(cluster: KafkaCluster, payloads: list[tuple[int, bytes]], content_type: str) -> str:
    """Publish through alertbench's Kafka transport to a fresh topic; return the topic."""
    topic = f"registry-{uuid.uuid4().hex[:8]}"
    transport = get_transport(f"kafka://{cluster.bootstrap_servers}/{topic}")
    assert isinstance(transport, KafkaTransport)
    transport.ensure_topic(partitions=1, replication_factor=1)
    pub = transport.open_publisher()
    now = time.time_ns()
    for seq, (alert_id, payload) in enumerate(payloads):
        pub.publish(
            Envelope(
                payload=payload,
                content_type=content_type,
                alert_id=alert_id,
                t_shutter_ns=now,
                t_intended_ns=now,
                sequence=seq,
            )
        )
    assert pub.flush(30) == 0
    assert not pub.failed
    pub.close()
    return topic


def _consume(cluster: KafkaCluster, topic: str, count: int, timeout: float = 60.0) -> list[bytes]:
    """A plain confluent-kafka consumer, as a broker runs one: every value, bounded in time."""
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"rubin-style-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    assert len(values) == count, f"{len(values)} of {count} messages within {timeout} s"
    return values


def test_a_rubin_style_consumer_decodes_our_avro_topic(
    kafka_cluster: KafkaCluster, schema_registry: SchemaRegistryServer, alerts: list[dict]
) -> None:
    codec = AvroSerializer()
    sample = alerts[:40]
    topic = _publish(
        kafka_cluster, [(a["diaSourceId"], codec.dumps(a)) for a in sample], codec.content_type
    )
    values = _consume(kafka_cluster, topic, len(sample))

    client = SchemaRegistryClient({"url": schema_registry.url})
    deserializer = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    parsed = codec.schema.parsed
    for value in values:
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == codec.schema.schema_id
        expected = fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed, None)
        assert deserializer(value, ctx) == expected
    decoded_ids = [deserializer(v, ctx)["diaSourceId"] for v in values]
    assert decoded_ids == [a["diaSourceId"] for a in sample]


def test_a_protobuf_deserializer_reads_our_protobuf_topic(
    kafka_cluster: KafkaCluster, schema_registry: SchemaRegistryServer, alerts: list[dict]
) -> None:
    codec = ProtobufSerializer()
    message_class = codec._codec.cls
    sample = alerts[:20]
    topic = _publish(
        kafka_cluster, [(a["diaSourceId"], codec.dumps(a)) for a in sample], codec.content_type
    )
    values = _consume(kafka_cluster, topic, len(sample))

    client = SchemaRegistryClient({"url": schema_registry.url})
    # The registry's writer schema (base64 FileDescriptorProto, ?format=serialized) must resolve
    # our message indexes, or the deserializer raises before it parses the body.
    deserializer = ProtobufDeserializer(message_class, {}, client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    for value, alert in zip(values, sample, strict=True):
        message = deserializer(value, ctx)
        assert message == message_class.FromString(value[codec.body_offset(value) :])
        assert message.diaSourceId == alert["diaSourceId"]
        assert codec.loads(value)["diaSourceId"] == alert["diaSourceId"]


def test_every_shipped_schema_version_is_served_under_rubins_id_and_subjects(
    schema_registry: SchemaRegistryServer,
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    versions = available_versions()
    assert len(versions) >= 2
    subjects = set(client.get_subjects())
    assert RUBIN_SUBJECT in subjects
    assert client.get_versions(RUBIN_SUBJECT) == list(range(1, len(versions) + 1))
    for number, version in enumerate(versions, start=1):
        schema = load_schema(version)
        served = client.get_schema(schema.schema_id)
        assert served.schema_type == "AVRO"
        fastavro.parse_schema(json.loads(served.schema_str))  # it parses
        assert json.loads(served.schema_str) == schema.definition
        assert f"lsst-alerts-v{version}-value" in subjects
        registered = client.get_version(RUBIN_SUBJECT, number)
        assert registered.schema_id == schema.schema_id
        looked_up = client.lookup_schema(RUBIN_SUBJECT, Schema(served.schema_str, "AVRO"))
        assert looked_up.version == number
    latest = client.get_latest_version(RUBIN_SUBJECT)
    assert latest.schema_id == load_schema().schema_id
    for entry in registry_catalogue().entries:  # our own protobuf and voevent3 schemas too
        assert client.get_schema(entry.id).schema_type == entry.schema_type


def test_writes_are_refused_as_confluent_refuses_them_in_read_only_mode(
    schema_registry: SchemaRegistryServer,
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    writes = [
        lambda: client.register_schema("new-subject", Schema('"string"', "AVRO")),
        lambda: client.register_schema(RUBIN_SUBJECT, Schema('"string"', "AVRO")),
        lambda: client.delete_subject(RUBIN_SUBJECT),
        lambda: client.delete_version(RUBIN_SUBJECT, 1),
    ]
    for write in writes:
        with pytest.raises(SchemaRegistryError) as refused:
            write()
        assert refused.value.http_status_code == 422
        assert refused.value.error_code == 42205
    status, body, _ = _request(schema_registry, "PUT", "/config", b'{"compatibility":"NONE"}')
    assert (status, body["error_code"]) == (422, 42205)
    status, body, _ = _request(schema_registry, "PUT", "/mode", b'{"mode":"READWRITE"}')
    assert (status, body["error_code"]) == (422, 42205)
    assert client.get_versions(RUBIN_SUBJECT) == list(range(1, len(available_versions()) + 1))
    status, body, _ = _request(schema_registry, "GET", "/mode")
    assert (status, body) == (200, {"mode": "READONLY"})


def _request(
    registry: SchemaRegistryServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Content-Type")
    finally:
        conn.close()


def _raw(registry: SchemaRegistryServer, data: bytes) -> tuple[int, dict]:
    """Bytes no well-behaved client sends; the status line and Confluent's error JSON back."""
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in reply and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        )
        while len(rest) < length and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head.split(b" ", 2)[1]), json.loads(rest[:length])


HOSTILE = {
    "unknown path": ("GET", "/no/such/route", None, 404, 404),
    "non-numeric id": ("GET", "/schemas/ids/abc", None, 404, 40403),
    "unknown id": ("GET", "/schemas/ids/999999", None, 404, 40403),
    "huge id": ("GET", "/schemas/ids/" + "9" * 500, None, 404, 40403),
    "negative id": ("GET", "/schemas/ids/-1", None, 404, 40403),
    "unknown subject": ("GET", "/subjects/nope/versions", None, 404, 40401),
    "garbled subject": ("GET", "/subjects/%ff%fe%00/versions/1", None, 404, 40401),
    "bad version": ("GET", f"/subjects/{RUBIN_SUBJECT}/versions/one", None, 422, 42202),
    "missing version": ("GET", f"/subjects/{RUBIN_SUBJECT}/versions/99999", None, 404, 40402),
    "lookup of junk": ("POST", f"/subjects/{RUBIN_SUBJECT}", b"{not json", 422, 42201),
    "lookup of unknown": (
        "POST",
        f"/subjects/{RUBIN_SUBJECT}",
        b'{"schema": "\\"string\\""}',
        404,
        40403,
    ),
    "unknown method": ("PATCH", "/subjects", b"", 405, 405),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_bad_requests_get_confluent_error_json(
    schema_registry: SchemaRegistryServer, case: str
) -> None:
    method, path, body, status, code = HOSTILE[case]
    got_status, got, content_type = _request(schema_registry, method, path, body)
    assert (got_status, got["error_code"]) == (status, code)
    assert isinstance(got["message"], str) and "Traceback" not in got["message"]
    assert content_type == CONTENT_TYPE
    assert _request(schema_registry, "GET", "/subjects")[0] == 200  # still serving


def test_hostile_bytes_are_answered_and_the_server_keeps_serving(
    schema_registry: SchemaRegistryServer,
) -> None:
    huge_path = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _raw(schema_registry, huge_path)[0] == 414
    status, body = _raw(schema_registry, b"\x16\x03\x01garbage not http\r\n\r\n")
    assert status == 400 and body["error_code"] == 400
    oversized = (
        f"POST /subjects/{RUBIN_SUBJECT} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
    ).encode()
    status, body = _raw(schema_registry, oversized)
    assert (status, body["error_code"]) == (413, 413)
    bad_length = b"POST /subjects/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"
    assert _raw(schema_registry, bad_length)[0] == 400
    many_headers = b"GET /subjects HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n"
    assert _raw(schema_registry, many_headers)[0] == 431
    status, subjects, _ = _request(schema_registry, "GET", "/subjects")
    assert status == 200 and RUBIN_SUBJECT in subjects
    client = SchemaRegistryClient({"url": schema_registry.url})
    assert client.get_schema(load_schema().schema_id).schema_type == "AVRO"


def test_kafka_start_runs_the_registry_and_stop_ends_it(tmp_path) -> None:
    """The user's path: ``kafka start`` prints and records the registry's URL, a Rubin-style
    client reads Rubin's subject from it, ``status`` says it is up, ``stop`` ends it."""
    import subprocess
    import sys
    from pathlib import Path

    from alertbench.transports.servers.kafka_cluster import ClusterState

    exe = str(Path(sys.executable).with_name("alertbench"))
    state = tmp_path / "state.json"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, "kafka", *argv, "--state", str(state)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        url = ClusterState.load(state).schema_registry_url
        assert url and url.startswith("http://127.0.0.1:") and url in started.stdout
        client = SchemaRegistryClient({"url": url})
        assert RUBIN_SUBJECT in client.get_subjects()
        latest = client.get_latest_version(RUBIN_SUBJECT)
        assert latest.schema_id == load_schema().schema_id
        status = cli("status")
        assert status.returncode == 0 and f"schema registry {url}: up" in status.stdout
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()
