"""What a compact VOEvent's references point at: the alerts the mini-broker sent, kept by id.

A compact VOEvent carries neither the cutouts nor the light curve, only their URIs
(``<base>/<diaSourceId>/<cutout>.fits`` and ``<base>/<diaSourceId>/lightcurve.xml``). A VO user
who filtered the stream fetches them for the few alerts they care about, soon after the event
arrives. So the archive keeps each alert the mini-broker sent over VTP, as the Avro message it
came in as (no second encoding in the service's hot path), and turns it into a FITS file or a
VOTable only when someone asks: the stream is sharply reduced, the requests fewer still.

It is its own SQLite file, beside the users' store: a night's alerts are hundreds of megabytes
of blobs that have no place in the file holding tokens and filters, and the service and the
reference server (another thread or another process) share it the same way the store is
shared. It keeps the newest ``keep`` alerts; older ones answer "not found", as an expired
reference should.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alertbench.errors import AlertbenchError, StoreError

DEFAULT_KEEP = 20_000
"""Alerts kept (about 2.6 GB of ~130 KB Rubin alerts): 10 users at 20 alerts per visit for
100 visits, a few hours of a night."""
PRUNE_EVERY = 256
"""Inserts between two prunes to ``keep``: the archive may hold this many more for a moment."""
LIGHT_CURVE_TABLES = ("prvDiaSources", "prvDiaForcedSources", "prvDiaNondetectionLimits")
"""The history arrays a Rubin alert may carry (which ones depends on the schema version)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER NOT NULL UNIQUE,
    payload BLOB NOT NULL
);
"""


class AlertArchive:
    """The alerts behind compact VOEvents' references, by ``diaSourceId``.

    ``loads`` turns a kept message back into an alert (the service's own codec: what came in
    on the full stream). :meth:`cutout` and :meth:`light_curve` answer None for an id not
    kept, whether never sent or expired.
    """

    def __init__(
        self,
        path: str | Path,
        loads: Callable[[bytes], dict[str, Any]],
        *,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        if keep < 1:
            raise StoreError(f"archive: keep {keep}: must be at least 1 alert")
        self.path = Path(path)
        self.keep = keep
        self._loads = loads
        self._lock = threading.Lock()
        self._inserts = 0
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"archive {self.path}: {exc}") from None

    def put(self, alert_id: int, payload: bytes) -> None:
        """Keep one alert's message (once: the same alert sent to several users is one row)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO alerts (id, payload) VALUES (?, ?)",
                    (int(alert_id), bytes(payload)),
                )
                self._inserts += 1
                if self._inserts % PRUNE_EVERY == 0:
                    self._prune()
            except sqlite3.Error as exc:
                raise StoreError(f"archive {self.path}: could not keep {alert_id}: {exc}") from None

    def _prune(self) -> None:
        # By rank, not by arithmetic on seq: a repeated alert's ignored insert leaves a gap.
        self._db.execute(
            "DELETE FROM alerts WHERE seq <= "
            "(SELECT seq FROM alerts ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (self.keep,),
        )

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        """The kept alert, decoded; None if it is not kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM alerts WHERE id = ?", (alert_id,)
            ).fetchone()
        if row is None:
            return None
        try:
            return self._loads(bytes(row[0]))
        except AlertbenchError as exc:  # kept as received: it decoded then, so say so loudly
            raise StoreError(f"archive: alert {alert_id} no longer decodes: {exc}") from None

    def cutout(self, alert_id: int, name: str) -> bytes | None:
        """One cutout's FITS bytes as the alert carried them; None if the alert is not kept,
        has no such cutout, or the name is not one of Rubin's three."""
        from alertbench.refimpl.codecs.voevent import CUTOUTS  # lxml: only when serving

        if name not in CUTOUTS:  # also keeps any other field of the alert from being served
            return None
        alert = self.alert(alert_id)
        if alert is None:
            return None
        value = alert.get(name)
        return bytes(value) if value is not None else None

    def light_curve(self, alert_id: int) -> bytes | None:
        """The alert's history tables as one VOTable (one TABLE per array the alert has)."""
        alert = self.alert(alert_id)
        if alert is None:
            return None
        return light_curve_votable(alert)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


def light_curve_votable(alert: dict[str, Any]) -> bytes:
    """The history arrays of one alert as a VOTable document, for VO tools (TOPCAT, astropy).

    Columns are the Avro record's fields in order; a null is a masked cell. An array the alert
    has but that is empty is an empty TABLE with no fields, so that the document still says
    the table exists and has no rows.
    """
    from astropy.io.votable.tree import Resource, VOTableFile
    from astropy.table import MaskedColumn, Table

    document = VOTableFile()
    resource = Resource(name=f"diaSource {alert.get('diaSourceId')}")
    document.resources.append(resource)
    for name in LIGHT_CURVE_TABLES:
        rows = alert.get(name)
        if rows is None:
            continue
        table = Table(meta={"name": name})
        for field in _fields(rows):
            values = [row.get(field) for row in rows]
            mask = [v is None for v in values]
            present = [v for v in values if v is not None]
            if present and isinstance(present[0], bytes | bytearray):
                continue  # no binary cells in a light curve; none in Rubin's schemas either
            fill: Any = _fill(present[0]) if present else 0.0
            cells = [fill if v is None else v for v in values]
            table[field] = MaskedColumn(cells, mask=mask)
        votable = VOTableFile.from_table(table)
        produced = votable.get_first_table()
        produced.name = name
        produced.ID = name
        resource.tables.append(produced)
    out = io.BytesIO()
    document.to_xml(out)
    return out.getvalue()


def _fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key)
    return list(seen)


def _fill(example: Any) -> Any:
    if isinstance(example, bool):
        return False
    if isinstance(example, int):
        return 0
    if isinstance(example, str):
        return ""
    return 0.0
