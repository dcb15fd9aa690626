"""The PostgreSQL store: several meridian replicas on one database.

psycopg 3 with a small synchronous connection pool (psycopg-pool), used exactly as the SQLite
store is: from the ledger's writer thread and through ``asyncio.to_thread`` (see
docs/scaling.md for why not the async pool). A connection is checked when it is taken from
the pool, so one that a database restart broke is replaced, not handed out. The ledger goes
in by ``COPY``; the schema version is the ``schema_migrations`` table, and migrations run
under an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from meridian.redact import redact_url
from meridian.storage.base import Row, StoreError
from meridian.storage.dialect import POSTGRESQL
from meridian.storage.migrations import MIGRATIONS
from meridian.storage.zone import session_time_zone

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

INSTALL_HINT = "PostgreSQL storage needs its driver: pip install 'meridian[postgres]'"
_MIGRATION_LOCK = 0x6D6572696469616E  # "meridian": one migrator at a time per database
CONNECT_TIMEOUT_S = 5
POOL_SIZE = 4  # the writer, the key resolver, the dashboard and the admin API at once
WAIT_S = 5.0  # for a free (or new) connection before an operation fails


class PgRow:
    """A result row: by position, by column name, unpacked, or ``dict(row)``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class _Connection:
    """A pooled connection inside a transaction, taking the portable ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(POSTGRESQL.sql(sql), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(POSTGRESQL.sql(sql), params)
        return cur


class PostgresStore:
    dialect = POSTGRESQL

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def unavailable(self) -> tuple[type[Exception], ...]:
        import psycopg  # imported by `open` already

        return (psycopg.OperationalError,)  # the pool's timeout is one too

    @property
    def conflict(self) -> tuple[type[Exception], ...]:
        import psycopg

        return (psycopg.errors.UniqueViolation,)

    def describe(self) -> str:
        return redact_url(self.url)

    def open(self, *, migrate: bool = True) -> PostgresStore:
        if self._pool is not None:
            return self
        try:
            import psycopg
            import psycopg_pool
        except ImportError:
            raise StoreError(f"{self.describe()}: {INSTALL_HINT}") from None
        try:
            # One plain connection first: its error says what is wrong (a pool's says only
            # that it timed out).
            psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            raise StoreError(explain(self.describe(), exc)) from None
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=_configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=WAIT_S,
            open=False,
            name="meridian",
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except psycopg_pool.PoolTimeout:
            pool.close()
            raise StoreError(f"{self.describe()}: no connection within the timeout") from None
        self._pool = pool
        try:
            if migrate:
                self.migrate()
            elif self.schema_version() > len(MIGRATIONS):
                raise self._newer(self.schema_version())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def schema_version(self) -> int:
        if self.query("SELECT to_regclass('schema_migrations')")[0][0] is None:
            return 0  # a database no meridian has migrated yet
        return int(self.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])

    def migrate(self) -> tuple[int, int]:
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            conn.raw.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version BIGINT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            before = int(row.fetchone()[0])  # type: ignore[index]
            if before > len(MIGRATIONS):
                raise self._newer(before)
            for number, entry in enumerate(MIGRATIONS[before:], start=before + 1):
                if isinstance(entry, str):
                    conn.raw.execute(POSTGRESQL.ddl(entry).encode())
                elif entry.backend == POSTGRESQL.name:
                    conn.raw.execute(entry.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", (number, time.time())
                )
        return before, len(MIGRATIONS)

    def _newer(self, version: int) -> StoreError:
        return StoreError(
            f"{self.describe()}: written by a newer meridian (schema version {version}; this "
            f"one knows up to {len(MIGRATIONS)}): upgrade meridian"
        )

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._require().connection() as conn, conn.transaction():
            yield _Connection(conn)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._require().connection() as conn:
            rows: list[Row] = conn.execute(POSTGRESQL.sql(sql), params).fetchall()
            return rows

    def append(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        copy_sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.transaction() as conn, conn.raw.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)

    def follow_ids(self, conn: Any, table: str) -> None:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        )

    def _require(self) -> psycopg_pool.ConnectionPool[Any]:
        if self._pool is None:
            raise RuntimeError(f"store {self.describe()} is not open")
        return self._pool


def _configure(conn: psycopg.Connection[Any]) -> None:
    from psycopg.adapt import Loader

    class _Number(Loader):
        # SUM over integers is a numeric there: give back what SQLite gives, int or float.
        def load(self, data: Any) -> int | float:
            text = bytes(data)
            return float(text) if b"." in text or b"e" in text.lower() else int(text)

    conn.adapters.register_loader("numeric", _Number)
    conn.row_factory = _rows
    # Reports group by the reader's calendar day, as SQLite's 'localtime' does.
    conn.execute("SELECT set_config('TimeZone', %s, false)", (session_time_zone(),))


def explain(where: str, exc: Exception) -> str:
    """The driver's error as one line with what to do about it."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "password authentication failed" in text or "no password supplied" in text:
        hint = "check the user name and password in storage.url"
    elif "role" in text and "does not exist" in text:
        hint = "create that role (CREATE ROLE ... LOGIN) or fix the user in storage.url"
    elif "database" in text and "does not exist" in text:
        hint = "create the database (createdb NAME) or fix its name in storage.url"
    elif "Connection refused" in text or "No such file or directory" in text or "timeout" in text:
        hint = "is the PostgreSQL server running and listening there? check the host and port"
    else:
        hint = "check storage.url and the server's log"
    return f"{where}: cannot connect to PostgreSQL: {first} ({hint})"

