"""``meridian storage copy``: keys and the usage ledger from one database into another.

Made for moving an existing SQLite file into PostgreSQL (any direction works). What a key is
travels whole: its id (the ledger's rows refer to it), hash and visible prefix (secrets are
never stored, so every client keeps its key), limits, expiry, revocation and last use. The
target must be empty (no key, no usage row): copying into a database in use would mix two
histories and collide on ids, and a second run of the same copy would count every call twice.
Everything goes in one transaction, so a copy that fails leaves the target as empty as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meridian.storage.base import Connection, Store, StoreError

# The source is read in pages of this many usage rows: memory stays flat for a large ledger.
PAGE = 5000


@dataclass(frozen=True, slots=True)
class Copied:
    keys: int
    usage: int


def copy_all(source: Store, target: Store) -> Copied:
    """Copy every key and usage row of ``source`` into the empty ``target`` (both open and
    migrated); raise `StoreError` if the target is not empty."""
    held = _count(target, "keys"), _count(target, "usage")
    if any(held):
        raise StoreError(
            f"{target.describe()}: already holds {held[0]} keys and {held[1]} usage rows; "
            "storage copy writes only into an empty database (create a new one, or drop and "
            "recreate this one)"
        )
    try:
        return _copy(source, target)
    except StoreError:
        raise
    except Exception as exc:  # the driver's: a row the target refuses, a lost connection
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreError(
            f"{target.describe()}: the copy failed and nothing was written "
            f"({type(exc).__name__}: {text})"
        ) from exc


def _copy(source: Store, target: Store) -> Copied:
    keys = source.query("SELECT * FROM keys ORDER BY id")
    copied_usage = 0
    with target.transaction() as conn:
        _insert(conn, "keys", keys)
        target.follow_ids(conn, "keys")
        last = -1
        while True:
            page = source.query(
                "SELECT * FROM usage WHERE id > ? ORDER BY id LIMIT ?", (last, PAGE)
            )
            if not page:
                break
            _insert(conn, "usage", page)
            copied_usage += len(page)
            last = page[-1]["id"]
        target.follow_ids(conn, "usage")
    return Copied(len(keys), copied_usage)


def _insert(conn: Connection, table: str, rows: Sequence[Any]) -> None:
    if not rows:
        return
    columns = list(rows[0].keys())
    marks = ", ".join("?" * len(columns))
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
        [tuple(row) for row in rows],
    )


def _count(store: Store, table: str) -> int:
    return int(store.query(f"SELECT COUNT(*) FROM {table}")[0][0])
