"""Client keys: created, listed, revoked and rotated in the store (`KeyStore`).

A secret is ``mk-`` + 43 url-safe characters. Only its sha256 is stored, with a short visible
prefix (``mk-AbC123``) so an operator can tell keys apart. `KeyStore` is the synchronous
bookkeeping used by the CLI and the admin API; the request hot path resolves keys from memory
(`meridian.resolver`).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meridian.auth import Principal
from meridian.errors import InvalidRequest, NotFound
from meridian.storage import Store

log = logging.getLogger("meridian.keys")

SECRET_PREFIX = "mk-"
VISIBLE_CHARS = 9  # "mk-" + 6: enough to tell keys apart, far too little to guess one
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Upper bounds on what a key may be given: beyond them 64-bit integers and the date
# functions overflow, and no real limit is that large.
MAX_LIMIT = 10**15
MAX_EXPIRY_S = 100 * 365 * 86400
# Tokens a budget counts: everything the upstream bills, cache reads and writes included.
USED_TOKENS_SQL = "input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens"


def _dollars(total: float | None) -> float:
    """A sum of costs, rounded past any precision that matters: a sum of floats depends on
    the order the database adds them in, and every backend must report the same figure."""
    return round(total or 0.0, 9)


class DuplicateKeyName(InvalidRequest):
    default_status = 409


def _duplicate(name: str) -> DuplicateKeyName:
    return DuplicateKeyName(
        f"an active key named {name!r} already exists: revoke or rotate it, or choose "
        "another name",
        param="name",
    )


def month_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()


def next_month_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts, UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        # A value no date can hold (written before expiry dates were bounded): shown as
        # the farthest date there is rather than breaking every listing.
        return "9999-12-31T23:59:59Z"


def human_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_expires(text: str, now: float) -> float:
    """``90d``, ``12h``, ``30m``, ``2w``, ``2027-01-01`` (midnight UTC) or an ISO date-time."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match:
        count = match.group(1)
        if len(count) > 7:  # more than 9,999,999 of any unit is past any date there is
            raise InvalidRequest(f"expires: {text!r} is too far in the future", param="expires")
        return now + int(count) * _UNIT_S[match.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"expires: expected a duration such as 90d, 12h, 30m or 2w, or a date such as "
            f"2027-01-01, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest(f"expires: {text!r} is not a usable date", param="expires") from None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    budget_tokens_month: int | None
    budget_usd_month: float | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    tokens_month: int = 0  # used this calendar month (UTC), from the usage ledger
    usd_month: float = 0.0

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: float) -> str:
        return "revoked" if self.revoked else "expired" if self.expired(now) else "active"

    def principal(self) -> Principal:
        models = None if self.models is None else frozenset(self.models)
        return Principal(
            self.name,
            key_id=self.id,
            models=models,
            rpm=self.rpm,
            tpm=self.tpm,
            max_parallel=self.max_parallel,
            budget_tokens_month=self.budget_tokens_month,
            budget_usd_month=self.budget_usd_month,
        )

    def as_dict(self, now: float) -> dict[str, Any]:
        """The JSON shape of the admin API and ``meridian keys list --json``."""
        return {
            "name": self.name,
            "id": self.id,
            "prefix": self.prefix,
            "status": self.status(now),
            "models": None if self.models is None else list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_tokens_month": self.budget_tokens_month,
            "budget_usd_month": self.budget_usd_month,
            "tokens_month": self.tokens_month,
            "usd_month": round(self.usd_month, 6),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def _info(row: Any, tokens: int = 0, usd: float = 0.0) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        models=None if row["models"] is None else tuple(json.loads(row["models"])),
        rpm=row["rpm"],
        tpm=row["tpm"],
        max_parallel=row["max_parallel"],
        budget_tokens_month=row["budget_tokens_month"],
        budget_usd_month=row["budget_usd_month"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        tokens_month=tokens,
        usd_month=usd,
    )


def _positive(field: str, value: float | None, *, integer: bool = True) -> None:
    if value is None:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not 0 < value < math.inf:
        noun = "a positive integer" if integer else "a positive number"
        raise InvalidRequest(f"{field}: expected {noun}, got {value!r}", param=field)
    if value > MAX_LIMIT:
        raise InvalidRequest(
            f"{field}: at most {MAX_LIMIT:,}; leave it out for no limit", param=field
        )


_SECRET = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{43}")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def checked_secret(secret: str) -> str:
    """A given secret must look like a generated one: the resolver only looks those up."""
    if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
        raise InvalidRequest(
            f"secret: expected {SECRET_PREFIX!r} and 43 URL-safe characters (letters, digits, "
            "'-', '_'), as `meridian keys generate` prints",
            param="secret",
        )
    return secret


def checked_limits(
    models: Sequence[str] | None,
    rpm: int | None,
    tpm: int | None,
    max_parallel: int | None,
    budget_tokens_month: int | None,
    budget_usd_month: float | None,
    expires_at: float | None,
    now: float,
) -> builtins.list[str] | None:
    """The limits of a key validated; returns the model list de-duplicated (None: all)."""
    listed = None
    if models is not None:
        if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("models: expected a list of model aliases", param="models")
        listed = list(dict.fromkeys(m.strip() for m in models if m.strip()))
        if not listed:
            raise InvalidRequest(
                "models: the list is empty; leave it out to allow every model", param="models"
            )
    _positive("rpm", rpm)
    _positive("tpm", tpm)
    _positive("max_parallel", max_parallel)
    _positive("budget_tokens_month", budget_tokens_month)
    _positive("budget_usd_month", budget_usd_month, integer=False)
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest(f"expires: {iso(expires_at)} is in the past", param="expires")
    if expires_at is not None and expires_at > now + MAX_EXPIRY_S:
        raise InvalidRequest(
            "expires: at most 100 years from now; leave it out for a key that never expires",
            param="expires",
        )
    return listed


_COLUMNS = (
    "id, name, prefix, models, rpm, tpm, max_parallel, budget_tokens_month, budget_usd_month, "
    "created_at, expires_at, revoked_at, last_used_at"
)


class KeyStore:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        # Bumped on every write through this object: PRAGMA data_version only sees writes made
        # by *other* connections, so the in-process resolver needs this to notice its own.
        self.generation = 0

    def create(
        self,
        name: str,
        *,
        models: Sequence[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
        budget_tokens_month: int | None = None,
        budget_usd_month: float | None = None,
        expires_at: float | None = None,
        secret: str | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key; the secret (generated unless given) is returned here and never again."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"name: expected 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
                f"or digit), got {name!r}",
                param="name",
            )
        now = self.clock()
        models = checked_limits(
            models, rpm, tpm, max_parallel, budget_tokens_month, budget_usd_month, expires_at, now
        )
        secret = new_secret() if secret is None else checked_secret(secret)
        try:
            with self.store.transaction() as conn:
                if conn.execute(
                    "SELECT 1 FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
                ).fetchone():
                    raise _duplicate(name)
                cur = conn.execute(
                    "INSERT INTO keys (name, prefix, hash, models, rpm, tpm, max_parallel, "
                    "budget_tokens_month, budget_usd_month, created_at, expires_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                    (
                        name,
                        secret[:VISIBLE_CHARS],
                        digest(secret),
                        None if models is None else json.dumps(models),
                        rpm,
                        tpm,
                        max_parallel,
                        budget_tokens_month,
                        None if budget_usd_month is None else float(budget_usd_month),
                        now,
                        expires_at,
                    ),
                )
                key_id = cur.fetchall()[0][0]
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)
                ).fetchone()
        except self.store.conflict:
            # Another connection created the name between our check and our insert (two
            # replicas' admin APIs at once, on PostgreSQL), or the secret is taken.
            if self.store.query(
                "SELECT 1 FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ):
                raise _duplicate(name) from None
            raise InvalidRequest(
                "secret: already the secret of another key", param="secret", status=409
            ) from None
        self.generation += 1
        return secret, _info(row)

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        """Every key with what it used this calendar month (UTC), newest first."""
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self.store.query(f"SELECT {_COLUMNS} FROM keys {where} ORDER BY id DESC")
        used = {
            r["key_id"]: (r["tokens"] or 0, _dollars(r["usd"]))
            for r in self.store.query(
                f"SELECT key_id, SUM({USED_TOKENS_SQL}) AS tokens, SUM(cost_usd) AS usd "
                "FROM usage WHERE ts >= ? AND key_id IS NOT NULL GROUP BY key_id",
                (month_start(self.clock()),),
            )
        }
        return [_info(r, *used.get(r["id"], (0, 0.0))) for r in rows]

    def get(self, name: str) -> KeyInfo:
        """The active key of that name, else its most recently revoked one."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM keys WHERE name = ? "
            "ORDER BY revoked_at IS NOT NULL, revoked_at DESC LIMIT 1",
            (name,),
        )
        if not rows:
            raise NotFound(f"no key named {name!r}")
        return self._with_usage(rows[0])

    def by_id(self, key_id: int, now: float | None = None) -> KeyInfo | None:
        """The key with that id and its usage in the month of ``now``; None if there is none."""
        rows = self.store.query(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,))
        return self._with_usage(rows[0], now) if rows else None

    def usage_this_month(self, key_id: int, now: float | None = None) -> tuple[int, float]:
        start = month_start(self.clock() if now is None else now)
        rows = self.store.query(
            f"SELECT SUM({USED_TOKENS_SQL}) AS tokens, SUM(cost_usd) AS usd FROM usage "
            "WHERE key_id = ? AND ts >= ? AND ts < ?",
            (key_id, start, next_month_start(start)),
        )
        return (rows[0]["tokens"] or 0, _dollars(rows[0]["usd"]))

    def revoke(self, name: str) -> KeyInfo:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (self.clock(), name),
            )
        if cur.rowcount == 0:
            self.get(name)  # raises NotFound for an unknown name
            raise InvalidRequest(f"key {name!r} is already revoked", status=409)
        self.generation += 1
        return self.get(name)

    def rotate(self, name: str, secret: str | None = None) -> str:
        """A new secret (generated unless given) for the active key ``name``: same id, limits
        and usage; the old secret stops working at once."""
        secret = new_secret() if secret is None else checked_secret(secret)
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE keys SET hash = ?, prefix = ? WHERE name = ? AND revoked_at IS NULL",
                (digest(secret), secret[:VISIBLE_CHARS], name),
            )
        if cur.rowcount == 0:
            self.get(name)
            raise InvalidRequest(f"key {name!r} is revoked: create a new one", status=409)
        self.generation += 1
        return secret

    def update(
        self,
        name: str,
        *,
        models: Sequence[str] | None,
        rpm: int | None,
        tpm: int | None,
        max_parallel: int | None = None,
        budget_tokens_month: int | None,
        budget_usd_month: float | None,
        expires_at: float | None,
    ) -> KeyInfo:
        """Set every limit of the active key ``name`` (None: no limit), as `create` takes them."""
        listed = checked_limits(
            models,
            rpm,
            tpm,
            max_parallel,
            budget_tokens_month,
            budget_usd_month,
            expires_at,
            self.clock(),
        )
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE keys SET models = ?, rpm = ?, tpm = ?, max_parallel = ?, "
                "budget_tokens_month = ?, budget_usd_month = ?, expires_at = ? "
                "WHERE name = ? AND revoked_at IS NULL",
                (
                    None if listed is None else json.dumps(listed),
                    rpm,
                    tpm,
                    max_parallel,
                    budget_tokens_month,
                    None if budget_usd_month is None else float(budget_usd_month),
                    expires_at,
                    name,
                ),
            )
        if cur.rowcount == 0:
            self.get(name)
            raise InvalidRequest(f"key {name!r} is revoked: create a new one", status=409)
        self.generation += 1
        return self.get(name)

    def secret_matches(self, name: str, secret: str) -> bool:
        """Whether ``secret`` is the active key ``name``'s secret (compared in constant time)."""
        rows = self.store.query(
            "SELECT hash FROM keys WHERE name = ? AND revoked_at IS NULL", (name,)
        )
        return bool(rows) and hmac.compare_digest(bytes(rows[0]["hash"]), digest(secret))

    def all_rows(self) -> builtins.list[tuple[bytes, KeyInfo]]:
        """(hash, info) of every key, for the resolver's cache."""
        rows = self.store.query(f"SELECT hash, {_COLUMNS} FROM keys")
        return [(bytes(r["hash"]), _info(r)) for r in rows]

    def data_version(self) -> int:
        """A number that changes when another connection changes a key."""
        return int(self.store.query(self.store.dialect.keys_version_sql)[0][0])

    def touch(self, last_used: dict[int, float]) -> None:
        latest = self.store.dialect.greatest("COALESCE(last_used_at, 0)", "?")
        with self.store.transaction() as conn:
            conn.executemany(
                f"UPDATE keys SET last_used_at = {latest} WHERE id = ?",
                [(ts, key_id) for key_id, ts in last_used.items()],
            )

    def _with_usage(self, row: Any, now: float | None = None) -> KeyInfo:
        return _info(row, *self.usage_this_month(row["id"], now))
