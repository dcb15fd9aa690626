"""Fixtures for the client-key tests: a store on a temporary file and a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from keyhelpers import Clock, NewLimiter

from meridian.keys import KeyStore
from meridian.limits import Limiter
from meridian.storage import Store, make_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meridian.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated store on each backend (see `store_url` in tests/conftest.py)."""
    s = make_store(store_url).open()
    yield s
    s.close()


@pytest.fixture
def keys(store: Store, clock: Clock) -> KeyStore:
    return KeyStore(store, clock=clock)


@pytest.fixture(params=["memory", "redis"])
async def new_limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[NewLimiter]:
    """The limiter under test: in memory, or shared through a real Redis (emptied first)."""
    made: list[Any] = []

    def new(keys: KeyStore | Store) -> Any:
        if request.param == "memory":
            return Limiter(keys, clock)
        from meridian.limits.redis import connect
        from meridian.limits.shared import SharedLimiter

        url = request.getfixturevalue("redis_url")
        keystore = keys if isinstance(keys, KeyStore) else KeyStore(keys, clock=clock)
        limiter = SharedLimiter(
            keystore, connect(url, timeout_s=5), where=url, on_error="closed", hold_s=630
        )
        made.append(limiter)
        return limiter

    yield new
    for limiter in made:
        await limiter.aclose()
