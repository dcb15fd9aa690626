"""The SQLite store: one file, WAL mode, the default and the home lab's whole story.

One connection, guarded by a lock, is enough for a home-lab gateway's write rate; WAL lets
``meridian usage`` and ``meridian keys`` read (and write) from another process while the
server runs. The schema version is ``PRAGMA user_version``.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meridian.storage.base import Row, StoreError
from meridian.storage.dialect import SQLITE
from meridian.storage.migrations import MIGRATIONS, Only

# Rows per INSERT statement, at most. Python's sqlite3 releases the GIL around every
# statement step (and reset), and the writer thread must take it back each time, waiting for
# the event loop to let go: with one statement per row (executemany) the two threads traded
# the GIL several times per row: ~3 context switches and tens of us of CPU per request
# under load. A multi-row INSERT inserts up to this many rows in one step (22 columns: 5,632
# parameters; SQLite before 3.32 allows only 999, and then fewer rows go in each). Smaller
# statements use power-of-two sizes, so that few distinct statements exist, all kept in the
# connection's statement cache.
_ROWS_PER_INSERT = 256


class SQLiteStore:
    dialect = SQLITE

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        return (sqlite3.OperationalError,)  # locked past the busy timeout, a disk I/O error

    @property
    def conflict(self) -> tuple[type[Exception], ...]:
        return (sqlite3.IntegrityError,)

    def describe(self) -> str:
        return str(self.path)

    def open(self, *, migrate: bool = True) -> SQLiteStore:
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
            if migrate:
                self.migrate()
            if self.schema_version() >= 1:
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

    def schema_version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def migrate(self) -> tuple[int, int]:
        with self.transaction() as conn:
            before = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, entry in enumerate(MIGRATIONS[before:], start=before + 1):
                script = entry if isinstance(entry, str) else _for_sqlite(entry)
                # Split on ";" only where a statement is complete: a ";" inside a "--" comment
                # (migration 1 has one) or a string literal is not a statement boundary.
                statement = ""
                for piece in script.split(";"):
                    statement += piece + ";"
                    if sqlite3.complete_statement(statement):
                        conn.execute(statement)
                        statement = ""
                conn.execute(f"PRAGMA user_version={number}")
        return before, len(MIGRATIONS)

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

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return self._require().execute(sql, params).fetchall()

    def append(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self.transaction() as conn:
            most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)
            for size, params in _statements(rows, min(most, _ROWS_PER_INSERT)):
                conn.execute(_insert_sql(table, tuple(columns), size), params)

    def follow_ids(self, conn: Any, table: str) -> None:
        """Nothing to do: SQLite's next rowid is always above the largest."""

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"store {self.path} is not open")
        return self._conn


def _for_sqlite(entry: Only) -> str:
    return entry.sql if entry.backend == "sqlite" else ""


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    values = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([values] * rows)


def _statements(rows: Sequence[Sequence[Any]], most: int) -> Iterator[tuple[int, list[Any]]]:
    """``rows`` as (rows per statement, flat parameter list) pieces: pieces of the largest
    power of two up to ``most`` rows, then the binary digits of the remainder."""
    start, size = 0, 1 << (max(1, most).bit_length() - 1)
    while start < len(rows):
        while start + size > len(rows):
            size //= 2
        yield size, list(itertools.chain.from_iterable(rows[start : start + size]))
        start += size
