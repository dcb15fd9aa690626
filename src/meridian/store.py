"""The SQLite store: one file, WAL mode, migrations as an append-only list.

`Store` is synchronous (sqlite3 is); async callers run it off the event loop with
``asyncio.to_thread`` or from a writer task's thread. One connection, guarded by a lock, is
enough for a home-lab gateway's write rate; WAL lets ``meridian usage`` and ``meridian keys``
read (and write) from another process while the server runs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Append only: a released migration is never edited, a change is a new entry.
MIGRATIONS: list[str] = [
    # 1: client keys and the usage ledger.
    """
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,          -- sha256 of the secret; the secret is never stored
        models TEXT,                        -- JSON list of aliases, NULL = every model
        rpm INTEGER,
        tpm INTEGER,
        budget_tokens_month INTEGER,
        budget_usd_month REAL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        last_used_at REAL
    );
    CREATE UNIQUE INDEX keys_active_name ON keys(name) WHERE revoked_at IS NULL;
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        request_id TEXT NOT NULL,
        key_id INTEGER,
        key_name TEXT,
        surface TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        alias TEXT,
        provider TEXT,
        upstream_model TEXT,
        status INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        latency_ms REAL,
        ttft_ms REAL,
        stream INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        path TEXT
    );
    CREATE INDEX usage_ts ON usage(ts);
    CREATE INDEX usage_key_ts ON usage(key_id, ts);
    """,
    # 2: calls in parallel per key; every attempt of a call in the ledger (a failed one that
    # was retried or fallen back from is a row with final = 0).
    """
    ALTER TABLE keys ADD COLUMN max_parallel INTEGER;
    ALTER TABLE usage ADD COLUMN final INTEGER NOT NULL DEFAULT 1;
    """,
]


class StoreError(Exception):
    """The database cannot be used; the message names the file and what is wrong with it."""


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> Store:
        """Open (creating and migrating as needed) or raise `StoreError` saying why not: a
        directory, a file that is not a database, a damaged one, one from a newer meridian."""
        if self._conn is not None:
            return self
        where = str(self.path)
        try:
            if where != ":memory:":
                if self.path.is_dir():
                    raise StoreError(f"{where}: is a directory; storage.path must name a file")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except OSError as exc:
            raise StoreError(f"{where}: cannot open the database: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{where}: cannot open the database: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{where}: written by a newer meridian (schema version {version}; this "
                    f"one knows up to {len(MIGRATIONS)}): upgrade meridian, or point "
                    "storage.path at another file"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
            self._migrate()
            # Reads the pages a damaged (e.g. truncated) file is most likely missing.
            conn.execute("SELECT count(*) FROM keys").fetchone()
            conn.execute("SELECT max(rowid) FROM usage").fetchone()
        except StoreError:
            self._abandon(conn)
            raise
        except sqlite3.DatabaseError as exc:
            self._abandon(conn)
            raise StoreError(f"{where}: not a usable meridian database ({exc})") from None
        return self

    def _abandon(self, conn: sqlite3.Connection) -> None:
        self._conn = None
        conn.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                # Split on ";" only where a statement is complete: a ";" inside a "--" comment
                # (migration 1 has one) or a string literal is not a statement boundary.
                statement = ""
                for piece in script.split(";"):
                    statement += piece + ";"
                    if sqlite3.complete_statement(statement):
                        conn.execute(statement)
                        statement = ""
                conn.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all or nothing, one writer at a time."""
        with self._lock:
            conn = self._require()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._require().execute(sql, params).fetchall()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"store {self.path} is not open")
        return self._conn
