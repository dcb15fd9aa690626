"""Cooldowns shared between replicas through a real Redis: what one opens the others skip,
what it sees recover the others forget, and a replica that cannot reach Redis keeps its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meridian.config import Cooldown
from meridian.cooldowns import KEY, SharedCooldowns
from meridian.errors import ApiError, Overloaded
from meridian.health import Health
from meridian.limits.redis import client

P, M = "oai", "gpt-4o-mini"


def replica(url: str) -> tuple[Health, SharedCooldowns]:
    health = Health(Cooldown(failures=1, seconds=300, max_s=600))
    return health, SharedCooldowns(client(url, timeout_s=2), health, timeout_s=2)


@pytest.fixture
async def two(
    redis_url: str,
) -> AsyncIterator[tuple[Health, SharedCooldowns, Health, SharedCooldowns]]:
    one, one_sync = replica(redis_url)
    two, two_sync = replica(redis_url)
    yield one, one_sync, two, two_sync
    await one_sync.aclose()
    await two_sync.aclose()


async def test_a_cooldown_opened_on_one_replica_is_skipped_by_the_other_until_it_recovers(
    two: tuple[Health, SharedCooldowns, Health, SharedCooldowns], redis_url: str
) -> None:
    one, one_sync, other, other_sync = two
    one.failed(P, M, ApiError("bad gateway", status=502))
    assert not one.available(P, M)
    await one_sync.sync()  # published
    await other_sync.sync()  # adopted
    assert not other.available(P, M)
    st = other.state(P, M)
    assert st is not None and st.remote and st.state_at(time.time()) == "open"
    assert st.open_until == one.state(P, M).open_until  # type: ignore[union-attr]

    # A call that was already in flight on replica one when the circuit opened comes back
    # well: the deployment is fine after all. Replica one closes it, and tells the others.
    one.succeeded(P, M)
    assert one.available(P, M)
    await one_sync.sync()
    raw = client(redis_url, timeout_s=2)
    try:
        assert await raw.zcard(KEY) == 0
    finally:
        await raw.aclose()
    await other_sync.sync()
    assert other.state(P, M) is None and other.available(P, M)
    assert (one_sync.failures, other_sync.failures) == (0, 0)


async def test_a_replica_keeps_its_own_cooldowns_when_another_recovers(
    two: tuple[Health, SharedCooldowns, Health, SharedCooldowns],
) -> None:
    """Replica two saw the deployment fail itself: replica one's recovery does not overrule
    what replica two measured (it probes it when its own cooldown is over)."""
    one, one_sync, other, other_sync = two
    one.failed(P, M, Overloaded("busy"))
    other.failed(P, M, Overloaded("busy"))
    await one_sync.sync()
    await other_sync.sync()
    one.succeeded(P, M)
    await one_sync.sync()
    await other_sync.sync()
    st = other.state(P, M)
    assert st is not None and not st.remote and not other.available(P, M)


async def test_the_longer_cooldown_wins_and_reaches_both(
    two: tuple[Health, SharedCooldowns, Health, SharedCooldowns],
) -> None:
    one, one_sync, other, other_sync = two
    one.failed(P, M, Overloaded("busy"))
    await one_sync.sync()
    other.failed(P, M, Overloaded("busy", retry_after=500))  # longer than 300 s
    await other_sync.sync()
    await one_sync.sync()
    longer = other.state(P, M).open_until  # type: ignore[union-attr]
    assert one.state(P, M).open_until == longer  # type: ignore[union-attr]


async def test_without_redis_a_replica_keeps_its_own_cooldowns() -> None:
    health, shared = replica("redis://127.0.0.1:9/0")  # nothing listens on port 9
    try:
        health.failed(P, M, ApiError("bad gateway", status=502))
        await shared.sync()
        assert (shared.failures, shared.syncs) == (1, 0) and not health.available(P, M)
    finally:
        await shared.aclose()


async def test_the_sync_is_a_heartbeat_that_reports_an_outage_once_it_repeats(
    redis_url: str,
) -> None:
    heard: list[str | None] = []
    _, down = replica("redis://127.0.0.1:9/0")
    _, up = replica(redis_url)
    down.observer = up.observer = heard.append
    try:
        await down.sync()
        assert heard == []  # one failure may be a busy event loop
        await down.sync()
        assert len(heard) == 1 and heard[0] is not None and "ConnectionError" in heard[0]
        await up.sync()
        assert heard[1:] == [None]  # an answer counts at once
    finally:
        await down.aclose()
        await up.aclose()


class DeafOnce:
    """A Redis client whose pipeline, once, carries on through a cancel that lands while it
    runs, as redis-py's writes (bounded by ``asyncio.wait_for``) do on Python 3.11 when the
    cancel comes as the write completes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = asyncio.Event()
        self.swallowed = 0

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.real.pipeline(**kwargs)
        execute = pipe.execute

        async def deaf_execute() -> Any:
            self.entered.set()
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1
            return await execute()

        pipe.execute = deaf_execute
        return pipe

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_closing_stops_the_sync_even_when_a_cancel_is_lost(redis_url: str) -> None:
    deaf = DeafOnce(client(redis_url, timeout_s=2))
    health = Health(Cooldown(failures=1, seconds=300, max_s=600))
    shared = SharedCooldowns(deaf, health, timeout_s=2)
    await shared.start()
    await deaf.entered.wait()
    closing = asyncio.ensure_future(shared.aclose())
    done, _ = await asyncio.wait([closing], timeout=30)  # a bound, not a measured time
    assert done, "aclose waits for a sync that goes on for ever"
    assert deaf.swallowed == 1
    syncs = shared.syncs
    await asyncio.sleep(1.5)  # three intervals
    assert shared.syncs == syncs  # nothing runs any more
