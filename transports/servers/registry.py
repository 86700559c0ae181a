"""A read-only, Confluent-compatible schema registry for the project's own Kafka.

Rubin's production stream is read with confluent-kafka's ``SchemaRegistryClient`` and
``AvroDeserializer`` against an anonymous, read-only Confluent-compatible registry. Our local
Kafka has none, and the registries that would do (Confluent's, karapace) are not in the package
registries we reach; Apicurio's ``apicurio-registry-app`` jars on Maven Central are plain library
jars that need Quarkus' build step, so they do not run from Maven artifacts alone. This module is
the fallback: the subset of Confluent's REST API those clients use, on the standard library's
``ThreadingHTTPServer``, serving a fixed catalogue of schemas.

The catalogue is data handed in (:class:`Catalogue`), not loaded here: transports know no
codec, so the harness builds it from the shipped Rubin schemas and our own codecs' schemas and
passes it in, or writes it to a JSON file that :func:`main` reads when the registry runs as its
own process.

Hostile input is answered, never crashed on: request lines and headers are bounded by
http.server (414/431), bodies by :data:`MAX_BODY` (413), every error is Confluent's JSON
``{"error_code": ..., "message": ...}``, and a slow client times out after :data:`TIMEOUT` s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from alertbench.errors import ServerError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 4 * 2**20
"""Largest request body read (a lookup carries one schema; Rubin's is ~60 KB)."""
TIMEOUT = 10.0
"""Seconds a connection may sit idle mid-request before it is dropped."""

# Confluent's error codes (io.confluent.kafka.schemaregistry.rest.exceptions).
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_VERSION = 42202
OPERATION_NOT_PERMITTED = 42205


@dataclass(frozen=True)
class Entry:
    """One schema under one id, and where it is registered (subject, version)."""

    id: int
    schema_type: str
    """``AVRO``, ``PROTOBUF`` or ``JSON``, as Confluent spells it."""
    schema: str
    """The schema text: Avro JSON, .proto source or JSON Schema."""
    subjects: tuple[tuple[str, int], ...]
    serialized: str | None = None
    """For PROTOBUF, the base64 FileDescriptorProto that ``?format=serialized`` returns
    (confluent-kafka's ProtobufDeserializer asks for it and does not parse .proto text)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schemaType": self.schema_type,
            "schema": self.schema,
            "serialized": self.serialized,
            "subjects": [list(s) for s in self.subjects],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            id=int(data["id"]),
            schema_type=str(data["schemaType"]),
            schema=str(data["schema"]),
            serialized=data.get("serialized"),
            subjects=tuple((str(s), int(v)) for s, v in data["subjects"]),
        )


@dataclass
class Catalogue:
    """Every schema the registry serves, indexed by id and by subject/version."""

    entries: list[Entry]
    by_id: dict[int, Entry] = field(init=False)
    subjects: dict[str, dict[int, Entry]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {}
        self.subjects = {}
        for entry in self.entries:
            if entry.id in self.by_id:
                raise ValueError(f"schema id {entry.id} twice in the catalogue")
            self.by_id[entry.id] = entry
            for subject, version in entry.subjects:
                versions = self.subjects.setdefault(subject, {})
                if version in versions:
                    raise ValueError(f"subject {subject} version {version} twice")
                versions[version] = entry

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"schemas": [e.to_json() for e in self.entries]}))

    @classmethod
    def load(cls, path: Path) -> Catalogue:
        data = json.loads(path.read_text())
        return cls([Entry.from_json(e) for e in data["schemas"]])


class _Refusal(Exception):
    """An answer other than 200: HTTP status, Confluent error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _not_found(code: int, message: str) -> _Refusal:
    return _Refusal(404, code, message)


def _same_schema(entry: Entry, text: str) -> bool:
    """Whether a looked-up schema is ``entry``'s: Avro/JSON compared as parsed JSON (so
    whitespace and key order do not matter), .proto text compared stripped."""
    if entry.schema_type in ("AVRO", "JSON"):
        try:
            return bool(json.loads(text) == json.loads(entry.schema))
        except ValueError:
            return False
    return text.strip() == entry.schema.strip()


class _Api:
    """The REST routes, as pure functions of (method, path parts, query, body) -> JSON."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def _entry(self, raw_id: str) -> Entry:
        if not raw_id.isdigit() or len(raw_id) > 12:
            raise _not_found(SCHEMA_NOT_FOUND, f"Schema {raw_id[:64]} not found")
        entry = self.catalogue.by_id.get(int(raw_id))
        if entry is None:
            raise _not_found(SCHEMA_NOT_FOUND, f"Schema {raw_id} not found")
        return entry

    def _versions(self, subject: str) -> dict[int, Entry]:
        versions = self.catalogue.subjects.get(subject)
        if versions is None:
            raise _not_found(SUBJECT_NOT_FOUND, f"Subject '{subject[:200]}' not found.")
        return versions

    def _version(self, subject: str, raw: str) -> tuple[int, Entry]:
        versions = self._versions(subject)
        if raw in ("latest", "-1"):
            number = max(versions)
        elif raw.isdigit() and len(raw) <= 9 and int(raw) > 0:
            number = int(raw)
        else:
            raise _Refusal(
                422,
                INVALID_VERSION,
                f"The specified version '{raw[:64]}' is not a valid version id. Allowed values "
                'are between [1, 2^31-1] and the string "latest"',
            )
        if number not in versions:
            raise _not_found(VERSION_NOT_FOUND, f"Version {number} not found.")
        return number, versions[number]

    @staticmethod
    def _text(entry: Entry, query: dict[str, str]) -> str:
        if query.get("format") == "serialized" and entry.serialized is not None:
            return entry.serialized
        return entry.schema

    @staticmethod
    def _raw(entry: Entry) -> Any:
        """The schema itself (``.../schema`` routes): JSON for Avro and JSON Schema."""
        return entry.schema if entry.schema_type == "PROTOBUF" else json.loads(entry.schema)

    def _registered(self, subject: str, version: int, entry: Entry, query: dict[str, str]) -> Any:
        body: dict[str, Any] = {
            "subject": subject,
            "version": version,
            "id": entry.id,
            "schema": self._text(entry, query),
        }
        if entry.schema_type != "AVRO":  # Confluent omits the default type
            body["schemaType"] = entry.schema_type
        return body

    def get(self, parts: list[str], query: dict[str, str]) -> Any:
        match parts:
            case ["schemas", "ids", raw_id]:
                entry = self._entry(raw_id)
                body: dict[str, Any] = {"schema": self._text(entry, query)}
                if entry.schema_type != "AVRO":
                    body["schemaType"] = entry.schema_type
                return body
            case ["schemas", "ids", raw_id, "schema"]:
                return self._raw(self._entry(raw_id))
            case ["schemas", "ids", raw_id, "versions"]:
                entry = self._entry(raw_id)
                return [{"subject": s, "version": v} for s, v in entry.subjects]
            case ["schemas", "ids", raw_id, "subjects"]:
                return sorted({s for s, _ in self._entry(raw_id).subjects})
            case ["schemas", "types"]:
                return sorted({e.schema_type for e in self.catalogue.entries})
            case ["subjects"]:
                prefix = query.get("subjectPrefix", "")
                return sorted(s for s in self.catalogue.subjects if s.startswith(prefix))
            case ["subjects", subject, "versions"]:
                return sorted(self._versions(subject))
            case ["subjects", subject, "versions", raw]:
                number, entry = self._version(subject, raw)
                return self._registered(subject, number, entry, query)
            case ["subjects", subject, "versions", raw, "schema"]:
                return self._raw(self._version(subject, raw)[1])
            case ["config"] | ["config", _]:
                if len(parts) == 2:
                    self._versions(parts[1])
                return {"compatibilityLevel": "NONE"}
            case ["mode"] | ["mode", _]:
                if len(parts) == 2:
                    self._versions(parts[1])
                return {"mode": "READONLY"}
            case [] | [""]:
                return {}
        raise _not_found(404, "HTTP 404 Not Found")

    def lookup(self, subject: str, body: bytes, query: dict[str, str]) -> Any:
        """``POST /subjects/{s}``: which version of ``subject`` a schema is (read-only)."""
        versions = self._versions(subject)
        try:
            request = json.loads(body)
            text = request["schema"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise _Refusal(422, 42201, "Invalid schema: the body needs a string 'schema'") from None
        wanted = request.get("schemaType", "AVRO") if isinstance(request, dict) else "AVRO"
        for number in sorted(versions, reverse=True):
            entry = versions[number]
            if entry.schema_type == wanted and _same_schema(entry, text):
                return self._registered(subject, number, entry, query)
        raise _not_found(SCHEMA_NOT_FOUND, "Schema not found")


def _readonly(subject: str | None) -> _Refusal:
    where = f"Subject {subject[:200]}" if subject else "The registry"
    return _Refusal(422, OPERATION_NOT_PERMITTED, f"{where} is in read-only mode")


class _Handler(BaseHTTPRequestHandler):
    """One connection: route, answer JSON, and turn every failure into Confluent's error JSON."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT
    error_content_type = CONTENT_TYPE
    server_version = "alertbench-registry"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test or a detached process has nobody reading stderr."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (414, 431, 400 on a garbled line) in Confluent's JSON."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a garbled line: answer with a status line
            self.request_version = "HTTP/1.0"
        text = message or self.responses.get(code, ("error",))[0]
        with contextlib.suppress(OSError):
            self._reply(code, {"error_code": code, "message": text})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        raw = self.headers.get("Content-Length", "0") or "0"
        if not raw.strip().isdigit():
            self.close_connection = True
            raise _Refusal(400, 400, "bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot go on
            raise _Refusal(413, 413, f"request body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        try:
            split = urlsplit(self.path)
            parts = [unquote(p, errors="replace") for p in split.path.strip("/").split("/")]
            if parts == [""]:
                parts = []
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            api = self.server.api
            body = self._body() if method in ("POST", "PUT", "DELETE") else b""
            if method in ("GET", "HEAD"):
                result = api.get(parts, query)
            elif method == "POST" and len(parts) == 2 and parts[0] == "subjects":
                result = api.lookup(parts[1], body, query)
            elif method in ("POST", "PUT", "DELETE") and parts[:1] in (
                ["subjects"],
                ["config"],
                ["mode"],
                ["compatibility"],
            ):
                if method == "POST" and parts[0] == "compatibility":
                    raise _readonly(None)  # a compatibility check is allowed to be refused
                raise _readonly(parts[1] if len(parts) > 1 and parts[0] == "subjects" else None)
            elif method in ("POST", "PUT", "DELETE"):
                raise _not_found(404, "HTTP 404 Not Found")
            else:
                raise _Refusal(405, 405, "HTTP 405 Method Not Allowed")
            self._reply(200, result)
        except _Refusal as refusal:
            self._reply(refusal.status, {"error_code": refusal.code, "message": refusal.message})
        except OSError:
            self.close_connection = True
        except Exception:  # never a traceback to the client; the server keeps serving
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._reply(500, {"error_code": 50001, "message": "internal error"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: _Api) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that died mid-request (reset, timeout) ends quietly: socketserver would
        print its traceback to stderr, which nobody reads and a hostile client could flood."""


class _Server6(_Server):
    address_family = socket.AF_INET6


class SchemaRegistryServer:
    """The registry in this process, on a background thread: ``start()``, ``url``, ``stop()``."""

    def __init__(self, catalogue: Catalogue, host: str = "127.0.0.1", port: int = 0) -> None:
        self.catalogue = catalogue
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise ServerError("the schema registry is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> SchemaRegistryServer:
        if self._server is not None:
            return self
        try:
            server_class = _Server6 if ":" in self.host else _Server
            self._server = server_class((self.host, self.port), _Api(self.catalogue))
        except OSError as exc:
            raise ServerError(
                f"schema registry cannot bind {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="schema-registry",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or a signal) ends it."""
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> SchemaRegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class RegistryProcess:
    """A registry running as its own (detached) process: what ``kafka stop`` needs to end it."""

    pid: int
    url: str


def spawn(
    catalogue_path: Path,
    workdir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    wait: float = 30.0,
    detach: bool = True,
) -> RegistryProcess:
    """Start :func:`main` as a new process on ``catalogue_path``; return once it answers.

    The process picks its own port (0) and writes its URL to a ready file, so no port is guessed
    and raced for; ``detach`` puts it in its own session so it outlives the calling shell.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "registry.url"
    ready.unlink(missing_ok=True)
    log = (workdir / "registry.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alertbench.transports.servers.registry",
            "--catalogue",
            str(catalogue_path),
            "--host",
            host,
            "--port",
            str(port),
            "--ready-file",
            str(ready),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=detach,
    )
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().endswith("\n"):
            return RegistryProcess(process.pid, ready.read_text().strip())
        if process.poll() is not None:
            break
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
        process.wait(5)
    tail = (workdir / "registry.log").read_text(errors="replace")[-2000:]
    raise ServerError(f"the schema registry did not come up within {wait:.0f} s:\n{tail}")


def _is_registry(pid: int) -> bool:
    """Whether ``pid`` is a registry process of ours (a recycled pid is left alone)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"alertbench.transports.servers.registry" in cmdline


def stop_process(pid: int, wait: float = 10.0) -> bool:
    """End a registry started by :func:`spawn`: SIGTERM, then SIGKILL after ``wait`` seconds.
    Returns whether one was running."""
    if not _is_registry(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _is_registry(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _is_registry(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)  # our own child (a test's, or this shell's): reap it, no zombie
    return True


def main(argv: Iterable[str] | None = None) -> int:
    """Run the registry as a process on a catalogue file (written by the harness)."""
    parser = argparse.ArgumentParser(
        prog="python -m alertbench.transports.servers.registry",
        description="A read-only Confluent-compatible schema registry on a catalogue file.",
    )
    parser.add_argument("--catalogue", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, default=None, help="the URL is written here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    server = SchemaRegistryServer(Catalogue.load(args.catalogue), args.host, args.port).start()

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.ready_file is not None:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(args.ready_file)
    print(f"schema registry on {server.url}", flush=True)
    server.serve_forever()
    return 0


def entries_by_subject(catalogue: Catalogue) -> Iterator[tuple[str, list[int]]]:
    """Each subject and its versions, sorted: for a ``status`` line or a README table."""
    for subject in sorted(catalogue.subjects):
        yield subject, sorted(catalogue.subjects[subject])


if __name__ == "__main__":
    sys.exit(main())
