"""The registry server alone (no Kafka): catalogue rules, the standalone process that
``alertbench kafka start`` detaches, and random paths that must all get Confluent's error JSON."""

from __future__ import annotations

import http.client
import json
import os
import random
from pathlib import Path

import pytest
from alertbench.transports.servers.registry import (
    CONTENT_TYPE,
    Catalogue,
    Entry,
    SchemaRegistryServer,
    spawn,
    stop_process,
)

AVRO = Entry(id=7, schema_type="AVRO", schema='{"type": "string"}', subjects=(("s", 1),))
PROTO = Entry(
    id=8,
    schema_type="PROTOBUF",
    schema='syntax = "proto3";\nmessage m { int64 a = 1; }\n',
    serialized="AAAA",
    subjects=(("s", 2), ("p-value", 1)),
)


def _get(port: int, path: str) -> tuple[int, object, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Content-Type")
    finally:
        conn.close()


def test_a_catalogue_refuses_a_duplicate_id_or_subject_version() -> None:
    with pytest.raises(ValueError, match="id 7"):
        Catalogue([AVRO, AVRO])
    with pytest.raises(ValueError, match="version 1"):
        Catalogue([AVRO, Entry(id=9, schema_type="AVRO", schema="{}", subjects=(("s", 1),))])


def test_the_standalone_process_serves_a_saved_catalogue_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.json"
    Catalogue([AVRO, PROTO]).save(path)
    assert Catalogue.load(path).entries == [AVRO, PROTO]
    process = spawn(path, tmp_path / "run", detach=False)
    try:
        port = int(process.url.rsplit(":", 1)[1])
        assert _get(port, "/schemas/ids/7") == (200, {"schema": AVRO.schema}, CONTENT_TYPE)
        status, body, _ = _get(port, "/schemas/ids/8?format=serialized&subject=x")
        assert (status, body) == (200, {"schema": "AAAA", "schemaType": "PROTOBUF"})
        status, body, _ = _get(port, "/subjects/s/versions/latest")
        assert body == {
            "subject": "s",
            "version": 2,
            "id": 8,
            "schema": PROTO.schema,
            "schemaType": "PROTOBUF",
        }
        assert _get(port, "/schemas/ids/8/versions")[1] == [
            {"subject": "s", "version": 2},
            {"subject": "p-value", "version": 1},
        ]
    finally:
        assert stop_process(process.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(process.pid, 0)  # reaped by stop_process: it is gone, not a zombie
    assert not stop_process(process.pid)  # nothing left to stop


def test_random_paths_get_error_json_never_a_crash() -> None:
    rng = random.Random(16)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789/%?&=.-_~+ "
    words = ["schemas", "ids", "subjects", "versions", "latest", "7", "8", "s", "-1", "%ff"]
    with SchemaRegistryServer(Catalogue([AVRO, PROTO])) as registry:
        for _ in range(300):  # bounded: a few seconds
            if rng.random() < 0.5:
                path = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
            else:
                path = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
            path = path.replace(" ", "%20")
            status, body, content_type = _get(registry.port, path)
            assert content_type == CONTENT_TYPE
            if status != 200:
                assert isinstance(body, dict) and set(body) == {"error_code", "message"}, path
                assert status in (404, 422), (path, status)
        assert _get(registry.port, "/subjects")[1] == ["p-value", "s"]
