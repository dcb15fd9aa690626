"""Where keys and the usage ledger live: SQLite (one file, the default) or PostgreSQL.

`open_store(url)` gives a `Store` for ``sqlite:///abs/path`` or ``postgresql://...`` (a URL
libpq takes, the unix-socket form ``postgresql:///db?host=/run/postgresql`` included).
"""

from __future__ import annotations

from pathlib import Path

from meridian.redact import redact_url
from meridian.storage.base import Connection, Cursor, Row, Store, StoreError
from meridian.storage.migrations import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "Connection",
    "Cursor",
    "Row",
    "Store",
    "StoreError",
    "driver_errors",
    "make_store",
    "sqlite_path",
]

SCHEMES = ("sqlite", "postgresql", "postgres")


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (absolute: ``sqlite:////abs`` and ``sqlite:///abs``
    name the same file); None for any other URL."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :]
    return Path(rest) if rest == ":memory:" else Path("/" + rest.lstrip("/"))


def driver_errors() -> tuple[type[Exception], ...]:
    """Every error a database driver in use may raise (psycopg's only once it is loaded)."""
    import sqlite3
    import sys

    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


def make_store(url: str) -> Store:
    """The store for ``url`` (or a SQLite file's path), not yet opened (`Store.open` connects
    and migrates)."""
    path = sqlite_path(url) if "://" in url else Path(url).expanduser()
    if path is not None:
        from meridian.storage.sqlite import SQLiteStore

        return SQLiteStore(path)
    if url.split(":", 1)[0] in ("postgresql", "postgres"):
        from meridian.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"{redact_url(url)}: not a storage URL: expected sqlite:///ABSOLUTE/PATH or "
        "postgresql://USER:PASSWORD@HOST/DATABASE"
    )
