"""What every store offers: the interface keys, the ledger, the reports and the CLI use.

A store is synchronous: async callers run it off the event loop with ``asyncio.to_thread``
or from a writer task's thread (the SQLite driver is synchronous, and PostgreSQL's pooled
connections are used the same way, so one code path serves both). Queries are written once,
in SQLite's words with ``?`` placeholders (`Dialect` translates); a row is indexed by
position or by column name, and ``dict(row)`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from meridian.storage.dialect import Dialect

# A result row: ``row[0]``, ``row["name"]``, ``dict(row)``, unpacking. (`sqlite3.Row` on
# SQLite, `storage.postgres.Row` on PostgreSQL.)
Row = Any


class StoreError(Exception):
    """The database cannot be used; the message names it (never with a password) and says
    what is wrong and, where it can, what to do."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row | None: ...

    def fetchall(self) -> list[Row]: ...


class Connection(Protocol):
    """A connection inside `Store.transaction`: placeholders are already the portable ``?``."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Cursor: ...


class Store(Protocol):
    dialect: Dialect

    @property
    def is_open(self) -> bool: ...

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        """The driver's errors that mean "the database cannot be reached now" (rather than a
        bug or a closed store): worth retrying, and no reason to stop answering from a cache."""
        ...

    @property
    def conflict(self) -> tuple[type[Exception], ...]:
        """The driver's error for a row that a unique index refused."""
        ...

    def describe(self) -> str:
        """The database, for messages: a file's path, or a URL without its password."""
        ...

    def open(self, *, migrate: bool = True) -> Store:
        """Connect (and, unless told not to, run the migrations not yet run), or raise
        `StoreError`."""
        ...

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    def migrate(self) -> tuple[int, int]:
        """Run the migrations not yet run: (version before, version after)."""
        ...

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction: all or nothing."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def append(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows in one transaction, the backend's fastest way."""
        ...

    def follow_ids(self, conn: Connection, table: str) -> None:
        """After rows were inserted with explicit ids: new rows get ids above them."""
        ...
