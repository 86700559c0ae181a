"""The HTTP server behind compact VOEvents' references, over a real archive on loopback."""

from __future__ import annotations

import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertbench.refimpl.codecs import get_serializer
from alertbench.refimpl.codecs.voevent import CUTOUTS, VoeventSerializer
from alertbench.refimpl.minibroker.archive import AlertArchive
from alertbench.transports.servers import references
from alertbench.transports.servers.references import ReferenceServer
from astropy.io import fits
from astropy.io.votable import parse
from lxml import etree

from alertbench.errors import StoreError


@pytest.fixture
def served(alerts, tmp_path: Path) -> Iterator[tuple[AlertArchive, ReferenceServer]]:
    codec = get_serializer("avro")
    archive = AlertArchive(tmp_path / "archive.sqlite", codec.loads)
    for alert in alerts[:5]:
        archive.put(alert["diaSourceId"], codec.dumps(alert))
    with ReferenceServer(archive) as server:
        yield archive, server
    archive.close()


def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_every_reference_of_a_compact_voevent_resolves(alerts, served) -> None:
    _, server = served
    voevent = VoeventSerializer(mode="compact", reference_base=server.url)
    for alert in alerts[:5]:
        root = etree.fromstring(voevent.dumps(alert))
        uris = [ref.get("uri") for ref in root.iter("Reference")]
        uris = [u for u in uris if u.startswith(server.url)]
        assert len(uris) == 4  # three cutouts and the light curve
        for uri in uris:
            status, media, body = _get(uri)
            assert status == 200, (uri, body)
            name = uri.rsplit("/", 1)[1]
            if name.endswith(".fits"):
                assert media == "image/fits"
                assert body == alert[name.removesuffix(".fits")]
                with fits.open(io.BytesIO(body)) as hdus:
                    assert hdus[1].data.ndim == 2  # Rubin's cutouts: images in extensions
            else:
                assert media == "application/x-votable+xml"
                tables = {t.name: t for t in parse(io.BytesIO(body)).iter_tables()}
                for table in ("prvDiaSources", "prvDiaForcedSources"):
                    if alert.get(table) is not None:
                        assert len(tables[table].array) == len(alert[table])
                rows = alert["prvDiaSources"] or []
                if rows:  # values come through, a null as a masked cell
                    column = tables["prvDiaSources"].array["diaSourceId"]
                    assert [int(v) for v in column] == [r["diaSourceId"] for r in rows]


def test_unknown_ids_names_and_paths_are_404_and_bad_ids_400(alerts, served) -> None:
    _, server = served
    known = alerts[0]["diaSourceId"]
    base = server.url
    for path in (
        f"{base}/{alerts[10]['diaSourceId']}/cutoutScience.fits",  # never kept
        f"{base}/{known}/cutoutNothing.fits",
        f"{base}/{known}/diaSource.fits",  # a field of the alert that is not a cutout
        f"{base}/{known}/lightcurve.fits",
        f"{base}/{known}/cutoutScience.xml",
        f"{base}/{known}/../../../etc/passwd",
        f"{base}/{known}/%2e%2e/cutoutScience.fits",
        f"{base.rsplit('/', 1)[0]}/",
    ):
        status, media, body = _get(path)
        assert status == 404, path
        assert media.startswith("text/plain") and body.count(b"\n") == 1
    for ident in ("abc", "-1", "1e5", "99999999999999999999999"):
        status, _, body = _get(f"{base}/{ident}/cutoutScience.fits")
        assert status == 400, ident
        assert b"not a diaSourceId" in body
    status, _, body = _get(f"{base}/{known}/cutoutScience.fits", method="HEAD")
    assert status == 200 and body == b""
    status, _, _ = _get(f"{base}/{known}/cutoutScience.fits", method="POST")
    assert status == 405


def test_an_idle_client_does_not_stop_the_others(
    alerts, served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = served
    monkeypatch.setattr(references._Handler, "timeout", 1.0)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", server.port))
    half.sendall(b"GET /cutouts/1/cutoutScience.fits HTTP/1.1\r\nHost: x\r\n")  # never ends
    started = time.monotonic()
    status, _, _ = _get(f"{server.url}/{alerts[0]['diaSourceId']}/cutoutTemplate.fits")
    assert status == 200 and time.monotonic() - started < 5
    half.settimeout(5)
    assert half.recv(100) == b""  # the half-sent request is dropped after the timeout
    for s in [*idle, half]:
        s.close()


def test_a_source_that_fails_is_a_500_and_the_server_goes_on(alerts, served) -> None:
    archive, server = served

    class Broken:
        def cutout(self, alert_id: int, name: str) -> bytes | None:
            raise StoreError("disk gone")

        def light_curve(self, alert_id: int) -> bytes | None:
            return archive.light_curve(alert_id)

    with ReferenceServer(Broken()) as broken:
        ident = alerts[0]["diaSourceId"]
        status, _, body = _get(f"{broken.url}/{ident}/cutoutScience.fits")
        assert status == 500 and b"disk gone" not in body
        status, _, _ = _get(f"{broken.url}/{ident}/lightcurve.xml")
        assert status == 200
    assert _get(f"{server.url}/{ident}/cutoutScience.fits")[0] == 200


def test_the_archive_keeps_the_newest_and_each_alert_once(alerts, tmp_path: Path) -> None:
    codec = get_serializer("avro")
    archive = AlertArchive(tmp_path / "a.sqlite", codec.loads, keep=3)
    for alert in alerts[:6]:
        archive.put(alert["diaSourceId"], codec.dumps(alert))
        archive.put(alert["diaSourceId"], codec.dumps(alert))  # a second user: same row
    assert len(archive) == 3
    assert archive.cutout(alerts[0]["diaSourceId"], "cutoutScience") is None  # expired
    assert archive.cutout(alerts[5]["diaSourceId"], "cutoutScience") == alerts[5]["cutoutScience"]
    assert archive.light_curve(alerts[1]["diaSourceId"]) is None
    assert set(CUTOUTS) >= {"cutoutScience"}
    archive.close()
    # Kept across a restart (another process may serve the same file).
    again = AlertArchive(tmp_path / "a.sqlite", codec.loads, keep=3)
    assert (
        again.cutout(alerts[4]["diaSourceId"], "cutoutDifference") == alerts[4]["cutoutDifference"]
    )
    again.close()
    with pytest.raises(StoreError, match="at least 1"):
        AlertArchive(tmp_path / "b.sqlite", codec.loads, keep=0)
    with pytest.raises(StoreError, match="archive"):
        AlertArchive(tmp_path, codec.loads)  # a folder


def test_http_client_sees_the_declared_length(alerts, served) -> None:
    _, server = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    ident = alerts[1]["diaSourceId"]
    for name in CUTOUTS:  # several requests on one kept-alive connection
        connection.request("GET", f"{references.PREFIX}/{ident}/{name}.fits")
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200 and int(response.headers["Content-Length"]) == len(body)
        assert body == alerts[1][name]
    connection.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--references-url", "ftp://host/x"],
        ["--references-url", "https://host/x?a=1"],
        ["--references-url", "cutouts"],
        ["--http-port", "70000"],
        ["--http-port", "web"],
        ["--archive-keep", "0"],
    ],
)
def test_bad_serve_arguments_are_one_line_and_exit_2(args, tmp_path: Path, capsys) -> None:
    from alertbench.harness.cli import main

    serve = ["minibroker", "serve", "--kafka", "kafka://127.0.0.1:1/t", "--db", str(tmp_path / "d")]
    assert main([*serve, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err
    assert not (tmp_path / "d").exists()  # refused before anything was opened
