"""Users, their tokens and their filters, kept in SQLite.

One file, so registering a filter from the command line and the running service share state
without a server of their own: the service re-reads the filters whenever the store's revision
changes (checked between batches). Tokens are shown once, when made, and only their SHA-256 is
stored; every call a user makes goes through :meth:`MiniBrokerStore.authenticate`, and every query
after it is scoped to that user, so a token never reaches another user's filters.

A user may also be given a VTP port of their own with an IP allow-list (:meth:`set_vtp_port`):
Comet's model of a subscriber, for stock VTP peers that cannot present a token. The operator
sets it; the address a subscriber connects from is then its credential on that port.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alertbench.refimpl.minibroker.filters.language import FieldCatalog, parse_filter

from alertbench.errors import AccessDenied, LimitExceeded, StoreError
from alertbench.resources import create_private

DEFAULT_ALERTS_PER_VISIT = 20
DEFAULT_MAX_FILTERS = 10
# Whole-string matches (fullmatch): with `$`, "alice\n" passed, and a name with a newline
# reached Kafka topic names and log lines.
USER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
FILTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    alerts_per_visit INTEGER NOT NULL,
    max_filters INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS filters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    expression TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (user, name)
);
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER);
INSERT OR IGNORE INTO revision VALUES (0, 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vtp_ports (
    user TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE,
    port INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
    allow TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS vtp_ports_port ON vtp_ports(port) WHERE port != 0;
"""
# Every statement is IF NOT EXISTS, so opening a store made by an earlier release adds what it
# lacks (the vtp_ports table) and changes nothing it has: that is the whole migration.

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_list(texts: Sequence[str]) -> tuple[Network, ...]:
    """CIDR blocks (``127.0.0.1/32``, ``10.0.0.0/8``, ``2001:db8::/32``; a bare address is a
    single host), each checked: StoreError, one line, for a malformed one or one with host bits
    set (``10.0.0.1/8`` is refused rather than silently widened to ``10.0.0.0/8``). An empty
    list is refused too: a per-user port open to every address would hand the stream to anyone.
    Duplicates are dropped, the order kept."""
    if not texts:
        raise StoreError("give at least one address or CIDR block a subscriber may connect from")
    found: list[Network] = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=True)
        except ValueError as exc:
            raise StoreError(f"allow {text!r}: not an IP address or CIDR block ({exc})") from None
        if network not in found:
            found.append(network)
    return tuple(found)


def allows(
    allow: Sequence[Network], address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    """Whether ``address`` is in one of the blocks; an IPv4 peer reaching an IPv6 socket
    (``::ffff:127.0.0.1``) is checked as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow)


@dataclass(frozen=True)
class User:
    name: str
    alerts_per_visit: int
    max_filters: int


@dataclass(frozen=True)
class VtpPort:
    """A user's own VTP broadcast port: whoever connects from ``allow`` gets the user's stream.
    ``port`` 0: the service picks one when it starts (and reports it)."""

    user: str
    port: int
    allow: tuple[Network, ...]


@dataclass(frozen=True)
class StoredFilter:
    user: str
    name: str
    expression: str
    created: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class MiniBrokerStore:
    def __init__(self, path: str | Path, catalog: FieldCatalog | None = None) -> None:
        self.path = Path(path)
        self.catalog = catalog or FieldCatalog()
        self._lock = threading.Lock()
        with contextlib.suppress(OSError):  # a folder or a missing parent: sqlite says so below
            create_private(self.path)  # token digests and users: owner only
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        self._check_schema_version()

    def _check_schema_version(self) -> None:
        """One alert schema per store, recorded when it is created: filters are checked at
        ``filter add`` against the schema the service compiles them with, so a filter stored
        against another version can no longer wait to fail inside a running service."""
        version = self.catalog.schema.version
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (version,))
            stored = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()[0]
        if stored != version:
            self._db.close()
            raise StoreError(
                f"{self.path} serves alert schema {stored}: its filters are checked and run "
                f"against {stored}, not {version} (give --schema-version {stored})"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MiniBrokerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(
        self,
        sql: str,
        args: tuple = (),
        before_commit: Callable[[sqlite3.Cursor], None] | None = None,
    ) -> sqlite3.Cursor:
        """One statement in its own transaction; ``before_commit(cursor)``, if given, runs after
        it and may raise to roll it back."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(sql, args)
                if before_commit is not None:
                    before_commit(cursor)
                self._db.execute("UPDATE revision SET value = value + 1 WHERE id = 0")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cursor

    def revision(self) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM revision WHERE id = 0").fetchone()[0]

    # -- administration (the operator, not a user) --------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        alerts_per_visit: int = DEFAULT_ALERTS_PER_VISIT,
        max_filters: int = DEFAULT_MAX_FILTERS,
    ) -> str:
        """Create a user; returns their token, which is not stored and cannot be shown again."""
        if not USER_NAME.fullmatch(name):
            raise StoreError(
                f"user name {name!r} must be 1-32 characters of a-z, 0-9, '_' or '-', "
                "starting with a letter (it names the user's Kafka topic)"
            )
        if alerts_per_visit < 1 or max_filters < 1:
            raise StoreError("alerts_per_visit and max_filters must be at least 1")
        token = secrets.token_urlsafe(32)
        try:
            self._write(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                (name, _digest(token), alerts_per_visit, max_filters, time.time()),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"user {name!r} already exists") from None
        return token

    def rotate_token(self, name: str, apply: Callable[[str], None] | None = None) -> str:
        """Give ``name`` a new token (returned, shown once); the old one stops working here.

        Wherever else the token is a credential, ``apply(new_token)`` must replace it there (a
        user's Kafka password is their token: the harness passes a function that replaces the
        SCRAM credential, so the old token stops opening Kafka too). It runs once the user is
        found and before the new token is committed; if it raises, nothing changes, and the old
        token stays valid both here and there. The store's write lock is held meanwhile.
        """
        token = secrets.token_urlsafe(32)

        def found_then_apply(cursor: sqlite3.Cursor) -> None:
            if cursor.rowcount != 1:
                raise StoreError(f"no user {name!r}")
            if apply is not None:
                apply(token)

        self._write(
            "UPDATE users SET token_sha256 = ? WHERE name = ?",
            (_digest(token), name),
            before_commit=found_then_apply,
        )
        return token

    def set_vtp_port(self, name: str, port: int, allow: Sequence[str]) -> VtpPort:
        """Give ``name`` a VTP port of their own (or replace theirs): subscribers connecting to
        it from an address in ``allow`` receive the user's stream with no token. StoreError for
        an unknown user, a port outside 0-65535, a bad allow-list (:func:`parse_allow_list`) or
        a port another user already has. A running service applies it at its next reload."""
        if not 0 <= port <= 65535:
            raise StoreError(f"port {port} is not between 0 and 65535")
        networks = parse_allow_list(allow)
        if port:
            with self._lock:
                row = self._db.execute(
                    "SELECT user FROM vtp_ports WHERE port = ? AND user != ?", (port, name)
                ).fetchone()
            if row is not None:
                raise StoreError(f"VTP port {port} is already taken by user {row[0]!r}")
        text = json.dumps([str(n) for n in networks])
        try:
            self._write(
                "INSERT INTO vtp_ports VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE"
                " SET port = excluded.port, allow = excluded.allow",
                (name, port, text),
            )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise StoreError(f"no user {name!r}") from None
            raise StoreError(f"VTP port {port} is already taken by another user") from None
        return VtpPort(name, port, networks)

    def remove_vtp_port(self, name: str) -> None:
        """Close ``name``'s own VTP port (at the service's next reload); StoreError if none."""
        cursor = self._write("DELETE FROM vtp_ports WHERE user = ?", (name,))
        if cursor.rowcount != 1:
            raise StoreError(f"user {name!r} has no VTP port of their own")

    def vtp_ports(self) -> list[VtpPort]:
        """Every user's own VTP port, for the service that serves them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user, port, allow FROM vtp_ports ORDER BY user"
            ).fetchall()
        return [
            VtpPort(user, port, parse_allow_list(json.loads(allow))) for user, port, allow in rows
        ]

    def users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, alerts_per_visit, max_filters FROM users ORDER BY name"
            ).fetchall()
        return [User(*row) for row in rows]

    def all_filters(self) -> list[tuple[User, StoredFilter]]:
        """Every user's filters, for the service that applies them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT u.name, u.alerts_per_visit, u.max_filters, f.name, f.expression, f.created"
                " FROM filters f JOIN users u ON u.name = f.user ORDER BY f.id"
            ).fetchall()
        return [(User(r[0], r[1], r[2]), StoredFilter(r[0], r[3], r[4], r[5])) for r in rows]

    # -- what a user may do, with their token --------------------------------------------------

    def authenticate(self, token: str) -> User:
        if not isinstance(token, str) or not token:
            raise AccessDenied("a token is required")
        digest = _digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT name, alerts_per_visit, max_filters, token_sha256 FROM users"
                " WHERE token_sha256 = ?",
                (digest,),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[3], digest):
            raise AccessDenied("unknown token")
        return User(row[0], row[1], row[2])

    def add_filter(self, token: str, name: str, expression: str) -> StoredFilter:
        """Check ``expression`` against the schema and store it; FilterError if it is refused."""
        user = self.authenticate(token)
        if not FILTER_NAME.fullmatch(name or ""):
            raise StoreError(
                f"filter name {name!r} must be 1-64 characters of A-Z, a-z, 0-9, _ . -"
            )
        parse_filter(expression, self.catalog)  # raises FilterError with the reason
        if len(self.list_filters(token)) >= user.max_filters:
            raise LimitExceeded(
                f"user {user.name!r} already has {user.max_filters} filters (the limit)"
            )
        created = time.time()
        try:
            self._write(
                "INSERT INTO filters (user, name, expression, created) VALUES (?, ?, ?, ?)",
                (user.name, name, expression, created),
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"you already have a filter named {name!r}") from None
        return StoredFilter(user.name, name, expression, created)

    def list_filters(self, token: str) -> list[StoredFilter]:
        user = self.authenticate(token)
        with self._lock:
            rows = self._db.execute(
                "SELECT name, expression, created FROM filters WHERE user = ? ORDER BY id",
                (user.name,),
            ).fetchall()
        return [StoredFilter(user.name, *row) for row in rows]

    def remove_filter(self, token: str, name: str) -> None:
        user = self.authenticate(token)
        cursor = self._write("DELETE FROM filters WHERE user = ? AND name = ?", (user.name, name))
        if cursor.rowcount != 1:
            raise StoreError(f"you have no filter named {name!r}")
