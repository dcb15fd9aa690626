"""Two writers on one PostgreSQL database: the unique index decides, and says so clearly.

On SQLite a write transaction holds the whole file, so a name check and its insert cannot be
interleaved; on PostgreSQL two replicas' admin APIs can both pass the check, and the second
insert waits on the first's index entry, then fails: it must still be a 409 naming the key.
"""

from __future__ import annotations

import threading
import time

import pytest
from keyhelpers import Clock

from meridian.errors import InvalidRequest
from meridian.keys import DuplicateKeyName, KeyStore
from meridian.storage import make_store
from pgserver import PostgresServer


def test_two_replicas_create_the_same_name_at_once(
    postgres: PostgresServer, clock: Clock
) -> None:
    url = postgres.url(postgres.new_database())
    first, second = make_store(url).open(), make_store(url).open()
    outcome: list[BaseException | None] = []

    def create() -> None:
        try:
            KeyStore(second, clock=clock).create("race")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        with first.transaction() as conn:
            conn.execute(
                "INSERT INTO keys (name, prefix, hash, created_at) VALUES (?, ?, ?, ?)",
                ("race", "mk-aaaaaa", b"\x01" * 32, clock()),
            )
            worker = threading.Thread(target=create)
            worker.start()
            # Until the second insert waits on this transaction's index entry (its name check
            # saw no committed key).
            deadline = time.monotonic() + 60
            while not first.query(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ):
                assert time.monotonic() < deadline, "the second insert never waited"
                time.sleep(0.05)
        worker.join(60)
        [error] = outcome
        assert isinstance(error, DuplicateKeyName)
        assert "an active key named 'race' already exists" in str(error)
    finally:
        first.close()
        second.close()


def test_a_secret_already_in_use_is_a_clear_conflict(store_url: str, clock: Clock) -> None:
    store = make_store(store_url).open()
    try:
        keys = KeyStore(store, clock=clock)
        secret, _ = keys.create("one")
        with pytest.raises(InvalidRequest, match="secret: already the secret of another key"):
            keys.create("two", secret=secret)
    finally:
        store.close()
