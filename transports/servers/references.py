"""The HTTP server behind compact VOEvents' references: cutouts and light curves by alert id.

A compact VOEvent (what the mini-broker sends over VTP) points at
``<base>/<diaSourceId>/<cutout>.fits`` for each of Rubin's three cutouts and at
``<base>/<diaSourceId>/lightcurve.xml`` for the history tables; this answers those URIs, so a
VO user's stock tools (a browser, curl, astropy, TOPCAT) resolve them. ``<base>`` is
:attr:`ReferenceServer.url` (``http://host:port/cutouts``) unless the operator publishes it
under another name (a proxy in front), in which case the packets must say that name.

What it serves comes from a :class:`ReferenceSource` handed in (the mini-broker's archive):
transports know no codec, so decoding a kept alert is the source's business.

Answers: 200 with ``image/fits`` (the media type the VOEvent's Reference declares; RFC 4047)
or ``application/x-votable+xml``; 404, with a one-line text body saying why, for an id not
kept (never sent, or expired), a cutout the alert does not have, or any other path; 400 for
an id that is not a number; 405 for a method other than GET and HEAD; 500, with no traceback
to the client, when the source fails, and the server keeps serving. Request lines and headers
are bounded by http.server; a client idle mid-request is dropped after :data:`TIMEOUT` s.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

from alertbench.errors import ServerError

log = logging.getLogger(__name__)

PREFIX = "/cutouts"
TIMEOUT = 10.0
"""Seconds a connection may sit idle mid-request before it is dropped."""
FITS = "image/fits"
VOTABLE = "application/x-votable+xml"
_PATH = re.compile(r"/cutouts/([^/]+)/([A-Za-z]+)\.(fits|xml)")
LIGHT_CURVE = "lightcurve"


class ReferenceSource(Protocol):
    """What the server reads: None for anything it does not have."""

    def cutout(self, alert_id: int, name: str) -> bytes | None: ...

    def light_curve(self, alert_id: int) -> bytes | None: ...


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT
    server_version = "alertbench-references"
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are the users' business; failures are logged below."""

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 200:
            self.send_header("Cache-Control", "public, max-age=86400")  # an alert never changes
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, message: str) -> None:
        self._reply(status, f"{status} {message}\n".encode(), "text/plain; charset=utf-8")

    def _get(self) -> None:
        path = urlsplit(self.path).path
        match = _PATH.fullmatch(path)
        if match is None:
            self._text(404, f"no such resource: {path[:200]!r}")
            return
        ident, name, suffix = match.groups()
        if not ident.isdigit() or len(ident) > 20 or int(ident) >= 2**63:
            self._text(400, f"alert id {ident[:40]!r} is not a diaSourceId")
            return
        alert_id = int(ident)
        source = self.server.source
        if suffix == "xml" and name == LIGHT_CURVE:
            body, media = source.light_curve(alert_id), VOTABLE
        elif suffix == "fits" and name != LIGHT_CURVE:
            body, media = source.cutout(alert_id, name), FITS
        else:
            self._text(404, f"no such resource: {path[:200]!r}")
            return
        if body is None:
            self._text(404, f"alert {alert_id} has no {name}.{suffix} here (not kept, or expired)")
            return
        self._reply(200, body, media)

    def _handle(self) -> None:
        try:
            self._get()
        except OSError:
            self.close_connection = True
        except Exception:  # never a traceback to the client; the server keeps serving
            log.exception("reference server: %s failed", self.path[:200])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._text(500, "internal error")

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _not_allowed(self) -> None:
        self.close_connection = True  # a body we will not read may follow
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        body = f"405 {self.command} is not allowed: GET or HEAD\n".encode()
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], source: ReferenceSource) -> None:
        self.source = source
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that died mid-request ends quietly (no traceback on stderr to flood)."""


class _Server6(_Server):
    address_family = socket.AF_INET6


class ReferenceServer:
    """The server in this process, on a background thread: ``start()``, ``url``, ``stop()``."""

    def __init__(self, source: ReferenceSource, host: str = "127.0.0.1", port: int = 0) -> None:
        self.source = source
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base the references use: ``http://host:port/cutouts``."""
        if self._server is None:
            raise ServerError("the reference server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PREFIX}"

    def start(self) -> ReferenceServer:
        if self._server is not None:
            return self
        try:
            server_class = _Server6 if ":" in self.host else _Server
            self._server = server_class((self.host, self.port), self.source)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise ServerError(f"reference server cannot bind {where}: {exc}") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="reference-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
