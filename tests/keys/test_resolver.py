"""The resolver answers from memory and notices changes made anywhere within about a second."""

from __future__ import annotations

import asyncio

import pytest
from keyhelpers import T0, Clock

from meridian.auth import Authenticator, Principal
from meridian.errors import AuthenticationFailed
from meridian.keys import KeyInfo, KeyStore
from meridian.resolver import StoreKeyResolver
from meridian.storage import Store, make_store

MASTER = "sk-master-test-0123456789"


async def test_a_key_resolves_to_its_principal(keys: KeyStore) -> None:
    secret, info = keys.create("pulse", models=["a", "b"], rpm=60, tpm=1000)
    resolver = StoreKeyResolver(keys)
    principal = await resolver.resolve(secret)
    assert principal == Principal(
        "pulse", key_id=info.id, models=frozenset({"a", "b"}), rpm=60, tpm=1000
    )
    assert principal.may_use("a") and not principal.may_use("c")
    every, _ = keys.create("all")
    unscoped = await resolver.resolve(every)
    assert unscoped is not None and unscoped.models is None and unscoped.may_use("anything")
    assert unscoped.rpm is None and unscoped.tpm is None


async def test_unknown_and_foreign_secrets_resolve_to_none(keys: KeyStore) -> None:
    secret, _ = keys.create("k")
    resolver = StoreKeyResolver(keys)
    wrong_tail = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # same prefix, other digest
    for candidate in (wrong_tail, "mk-" + "x" * 43, "sk-ant-api03-whatever", "", "mk-"):
        assert await resolver.resolve(candidate) is None
    assert await resolver.resolve(secret) is not None


async def test_revoked_and_expired_keys_say_so(keys: KeyStore, clock: Clock) -> None:
    revoked, _ = keys.create("old")
    keys.revoke("old")
    expiring, _ = keys.create("temp", expires_at=T0 + 3600)
    resolver = StoreKeyResolver(keys)
    with pytest.raises(AuthenticationFailed, match="key 'old' was revoked"):
        await resolver.resolve(revoked)
    assert (await resolver.resolve(expiring)) is not None
    clock.advance(3600)
    with pytest.raises(AuthenticationFailed, match="key 'temp' expired on 2026-03-15 13:00 UTC"):
        await resolver.resolve(expiring)


async def test_changes_through_the_same_keystore_apply_at_once(keys: KeyStore) -> None:
    secret, _ = keys.create("k")
    resolver = StoreKeyResolver(keys)
    assert await resolver.resolve(secret) is not None
    new = keys.rotate("k")
    assert await resolver.resolve(secret) is None
    assert await resolver.resolve(new) is not None
    keys.revoke("k")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await resolver.resolve(new)


async def test_changes_from_another_connection_apply_within_a_second(
    keys: KeyStore, store_url: str, clock: Clock
) -> None:
    resolver = StoreKeyResolver(keys)
    other_store = make_store(store_url).open()  # as `meridian keys` in another process would
    other = KeyStore(other_store, clock=clock)
    try:
        assert await resolver.resolve("mk-" + "q" * 43) is None  # cache loaded, empty
        secret, _ = other.create("cli-made")
        # A cache miss checks the database: a fresh key works on its first request.
        assert (await resolver.resolve(secret)).name == "cli-made"  # type: ignore[union-attr]
        other.revoke("cli-made")
        clock.advance(0.5)
        # Within the refresh interval the cache answers, without reading the database.
        assert await resolver.resolve(secret) is not None
        clock.advance(0.6)
        with pytest.raises(AuthenticationFailed, match="key 'cli-made' was revoked"):
            await resolver.resolve(secret)
    finally:
        other_store.close()


async def test_a_key_revoked_on_one_replica_is_refused_by_another_within_its_refresh(
    keys: KeyStore, store_url: str, clock: Clock
) -> None:
    # Two replicas: each its own store (its own connections) and resolver on one database.
    other_store = make_store(store_url).open()
    here, there = keys, KeyStore(other_store, clock=clock)
    try:
        secret, _ = here.create("shared")
        mine, theirs = StoreKeyResolver(here), StoreKeyResolver(there)
        assert await mine.resolve(secret) is not None
        assert await theirs.resolve(secret) is not None
        there.revoke("shared")  # the admin API of the other replica
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await theirs.resolve(secret)  # its own write: at once
        clock.advance(1.0)
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await mine.resolve(secret)  # within its one-second refresh
        if store_url.startswith("postgresql"):
            # A last_used_at write is not a key change: no replica reloads for it. (SQLite's
            # data_version counts every write of another connection.)
            version = here.data_version()
            there.touch({1: clock()})
            assert here.data_version() == version
    finally:
        other_store.close()


async def test_the_hot_path_does_not_touch_sqlite(
    keys: KeyStore, store: Store, clock: Clock
) -> None:
    secret, _ = keys.create("k")
    resolver = StoreKeyResolver(keys, touch_s=3600)
    assert await resolver.resolve(secret) is not None
    store.close()  # any query now raises "store ... is not open"
    for _ in range(100):
        clock.advance(0.005)
        assert await resolver.resolve(secret) is not None
    clock.advance(1)
    with pytest.raises(RuntimeError, match="not open"):
        await resolver.resolve(secret)  # the once-a-second check does read it


async def test_last_used_is_written_in_batches(keys: KeyStore, clock: Clock) -> None:
    a, _ = keys.create("a")
    b, _ = keys.create("b")
    resolver = StoreKeyResolver(keys, touch_s=5)
    await resolver.resolve(a)
    clock.advance(1)
    await resolver.resolve(b)
    assert keys.get("a").last_used_at is None  # not written per request
    clock.advance(4)
    await resolver.resolve(a)  # due: written by a task of its own
    for _ in range(200):
        if keys.get("a").last_used_at is not None:
            break
        await asyncio.sleep(0.01)
    assert keys.get("a").last_used_at == T0 + 5
    assert keys.get("b").last_used_at == T0 + 1
    clock.advance(1)
    await resolver.resolve(b)
    await resolver.aclose()  # shutdown writes what is pending
    assert keys.get("b").last_used_at == T0 + 6


async def test_authenticator_with_the_resolver(keys: KeyStore) -> None:
    secret, _ = keys.create("ha", models=["m"])
    auth = Authenticator(MASTER, StoreKeyResolver(keys))
    assert (await auth.authenticate({"authorization": f"Bearer {MASTER}"})).is_master
    by_header = await auth.authenticate({"x-api-key": secret})
    by_bearer = await auth.authenticate({"authorization": f"Bearer {secret}"})
    assert by_header == by_bearer and by_header.name == "ha" and not by_header.is_master
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        await auth.authenticate({"x-api-key": secret + "x"})


async def test_concurrent_first_requests_share_one_load(keys: KeyStore) -> None:
    secrets_ = [keys.create(f"k{i}")[0] for i in range(20)]
    loads = 0
    all_rows = keys.all_rows

    def counting() -> list[tuple[bytes, KeyInfo]]:
        nonlocal loads
        loads += 1
        return all_rows()

    keys.all_rows = counting  # type: ignore[method-assign]
    resolver = StoreKeyResolver(keys)
    principals = await asyncio.gather(*(resolver.resolve(s) for s in secrets_))
    assert [p.name for p in principals if p] == [f"k{i}" for i in range(20)]
    assert loads == 1
