from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from keyhelpers import T0, Clock, add_usage

from meridian.errors import InvalidRequest, NotFound
from meridian.keys import (
    DuplicateKeyName,
    KeyStore,
    month_start,
    next_month_start,
    parse_expires,
)
from meridian.storage import Store


def test_create_returns_the_secret_once_and_stores_only_its_hash(
    keys: KeyStore, store: Store, db_path: Path
) -> None:
    secret, info = keys.create("pulse", models=["claude-haiku-4-5", "direct_gpt-4o"], rpm=60)
    assert re.fullmatch(r"mk-[A-Za-z0-9_-]{43}", secret)
    assert info.prefix == secret[:9]
    assert info.models == ("claude-haiku-4-5", "direct_gpt-4o")
    assert (info.rpm, info.tpm, info.expires_at, info.revoked) == (60, None, None, False)
    row = store.query("SELECT hash FROM keys WHERE id = ?", (info.id,))[0]
    assert bytes(row["hash"]) == hashlib.sha256(secret.encode()).digest()
    store.close()  # checkpoint the WAL so the main file holds everything
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob("meridian.db*"))
    assert secret.encode() not in raw
    assert secret[9:].encode() not in raw


def test_two_keys_never_share_a_secret(keys: KeyStore) -> None:
    a, _ = keys.create("a")
    b, _ = keys.create("b")
    assert a != b


def test_names_are_unique_among_active_keys_only(keys: KeyStore) -> None:
    keys.create("pulse")
    with pytest.raises(DuplicateKeyName, match="an active key named 'pulse' already exists") as e:
        keys.create("pulse")
    assert e.value.status == 409
    keys.revoke("pulse")
    _, again = keys.create("pulse")
    assert keys.get("pulse").id == again.id  # the active one wins over the revoked one


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name: expected"),
        ({"name": "has space"}, "name: expected"),
        ({"name": "x" * 65}, "name: expected"),
        ({"name": "k", "models": []}, "models: the list is empty"),
        ({"name": "k", "models": "a,b"}, "models: expected a list"),
        ({"name": "k", "rpm": 0}, "rpm: expected a positive integer"),
        ({"name": "k", "tpm": -5}, "tpm: expected a positive integer"),
        ({"name": "k", "rpm": True}, "rpm: expected a positive integer"),
        ({"name": "k", "rpm": 1.5}, "rpm: expected a positive integer"),
        ({"name": "k", "budget_tokens_month": "9"}, "budget_tokens_month: expected"),
        ({"name": "k", "budget_usd_month": float("nan")}, "budget_usd_month: expected a positive"),
        ({"name": "k", "expires_at": T0 - 1}, "expires: .* is in the past"),
    ],
)
def test_create_rejects_bad_input_with_a_message_naming_the_field(
    keys: KeyStore, kwargs: dict[str, object], message: str
) -> None:
    kwargs = dict(kwargs)  # the parameter is shared by every backend's run
    name = kwargs.pop("name")
    with pytest.raises(InvalidRequest, match=message):
        keys.create(name, **kwargs)  # type: ignore[arg-type]
    assert keys.list() == []


def test_list_reports_this_months_usage_per_key(keys: KeyStore, store: Store) -> None:
    _, a = keys.create("a", budget_tokens_month=10_000, budget_usd_month=5.0)
    _, b = keys.create("b")
    start = month_start(T0)
    add_usage(store, a.id, start, tokens=100, usd=0.25)  # the first instant of the month counts
    add_usage(store, a.id, T0 - 60, tokens=50, usd=None)  # an unpriced call adds tokens only
    add_usage(store, a.id, start - 1, tokens=7000, usd=9.0)  # last month: not counted
    add_usage(store, b.id, T0, tokens=3)
    add_usage(store, None, T0, tokens=999)  # the master key's calls belong to no key
    by_name = {info.name: info for info in keys.list()}
    assert (by_name["a"].tokens_month, by_name["a"].usd_month) == (150, 0.25)
    assert (by_name["b"].tokens_month, by_name["b"].usd_month) == (3, 0.0)
    assert keys.get("a").tokens_month == 150
    assert keys.usage_this_month(a.id, start - 1) == (7000, 9.0)


def test_list_includes_revoked_keys_unless_asked_not_to(keys: KeyStore) -> None:
    keys.create("gone")
    keys.create("kept")
    keys.revoke("gone")
    assert {(i.name, i.revoked) for i in keys.list()} == {("gone", True), ("kept", False)}
    assert [i.name for i in keys.list(include_revoked=False)] == ["kept"]


def test_rotate_keeps_the_key_and_changes_the_secret(keys: KeyStore, store: Store) -> None:
    old, before = keys.create("pulse", models=["m"], rpm=5, tpm=500, budget_usd_month=2.5)
    add_usage(store, before.id, T0, tokens=40)
    new = keys.rotate("pulse")
    after = keys.get("pulse")
    assert new != old and new.startswith("mk-")
    assert after.prefix == new[:9] != before.prefix
    assert (after.id, after.models, after.rpm, after.tpm, after.budget_usd_month) == (
        before.id,
        ("m",),
        5,
        500,
        2.5,
    )
    assert after.tokens_month == 40  # usage follows the key, not the secret
    stored = {bytes(r["hash"]) for r in store.query("SELECT hash FROM keys")}
    assert stored == {hashlib.sha256(new.encode()).digest()}


def test_revoke_and_rotate_unknown_or_revoked_keys(keys: KeyStore, clock: Clock) -> None:
    with pytest.raises(NotFound, match="no key named 'nope'"):
        keys.revoke("nope")
    with pytest.raises(NotFound):
        keys.rotate("nope")
    with pytest.raises(NotFound):
        keys.get("nope")
    keys.create("k")
    clock.advance(10)
    info = keys.revoke("k")
    assert info.revoked_at == clock.now
    with pytest.raises(InvalidRequest, match="already revoked") as e:
        keys.revoke("k")
    assert e.value.status == 409
    with pytest.raises(InvalidRequest, match="is revoked"):
        keys.rotate("k")


def test_expiry_and_status(keys: KeyStore, clock: Clock) -> None:
    _, info = keys.create("k", expires_at=parse_expires("12h", clock.now))
    assert info.expires_at == T0 + 12 * 3600
    assert info.status(clock.now) == "active"
    assert info.status(T0 + 12 * 3600) == "expired"
    assert info.as_dict(clock.now)["expires_at"] == "2026-03-16T00:00:00Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", T0 + 90 * 86400),
        ("12h", T0 + 12 * 3600),
        ("30m", T0 + 1800),
        ("2w", T0 + 14 * 86400),
        ("2027-01-01", datetime(2027, 1, 1, tzinfo=UTC).timestamp()),
        ("2027-01-01T08:30:00Z", datetime(2027, 1, 1, 8, 30, tzinfo=UTC).timestamp()),
        ("2027-01-01T08:30:00+02:00", datetime(2027, 1, 1, 6, 30, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_expires(text: str, expected: float) -> None:
    assert parse_expires(text, T0) == expected


@pytest.mark.parametrize("text", ["", "90", "5x", "d90", "tomorrow", "2027-13-01"])
def test_parse_expires_rejects_nonsense(text: str) -> None:
    with pytest.raises(InvalidRequest, match="expires: expected a duration"):
        parse_expires(text, T0)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type,misc]


@pytest.mark.parametrize(
    ("when", "start", "end"),
    [
        (_utc(2026, 3, 15, 12), _utc(2026, 3, 1), _utc(2026, 4, 1)),
        (_utc(2026, 12, 31, 23, 59), _utc(2026, 12, 1), _utc(2027, 1, 1)),
        (_utc(2026, 2, 1), _utc(2026, 2, 1), _utc(2026, 3, 1)),
    ],
)
def test_calendar_month_bounds_are_utc(when: datetime, start: datetime, end: datetime) -> None:
    assert month_start(when.timestamp()) == start.timestamp()
    assert next_month_start(when.timestamp()) == end.timestamp()
