"""The schema, as an append-only list of migrations shared by every backend.

A released migration is never edited; a change is a new entry. An entry is portable SQL,
written in SQLite's words and translated by the backend's `Dialect` (``INTEGER`` columns,
``BLOB``, ``REAL``, ``INTEGER PRIMARY KEY``), or an `Only` entry that one backend runs and the
others count without running (what one engine has built in, another needs tables for).
SQLite records how many have run in ``PRAGMA user_version`` (as every meridian before the
storage package did); PostgreSQL in the ``schema_migrations`` table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Only:
    """A migration for one backend (``"sqlite"`` or ``"postgresql"``); a no-op elsewhere."""

    backend: str
    sql: str


MIGRATIONS: list[str | Only] = [
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
    # 3: what SQLite's PRAGMA data_version gives for free: a number that changes whenever any
    # connection changes a key, so that every replica's resolver sees a revocation within its
    # refresh by reading one row, not the keys table. Bumped by a trigger, in the writer's own
    # transaction, for every writer (the CLI, the admin API, `storage copy`); last_used_at
    # alone is left out, as it changes every few seconds and no resolver needs it.
    Only(
        "postgresql",
        """
        CREATE TABLE keys_version (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        );
        INSERT INTO keys_version VALUES (1, 0);
        CREATE FUNCTION meridian_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE keys_version SET version = version + 1 WHERE id = 1;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER keys_changed
            AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF name, prefix, hash, models, rpm,
                tpm, max_parallel, budget_tokens_month, budget_usd_month, expires_at, revoked_at
            ON keys FOR EACH STATEMENT EXECUTE FUNCTION meridian_keys_changed();
        """,
    ),
]
