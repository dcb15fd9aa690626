"""Per-key limits with an injected clock: windows slide because the test moves time. Every
test runs twice: against the in-memory limiter and against the shared one on a real Redis
(``new_limiter``, tests/keys/conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from keyhelpers import T0, Clock, NewLimiter, add_usage, drain

from meridian.auth import Principal
from meridian.errors import RateLimited
from meridian.keys import KeyStore
from meridian.model import Usage
from meridian.storage import Store

APRIL = datetime(2026, 4, 1, tzinfo=UTC).timestamp()


def admitted(result: object) -> bool:
    return not isinstance(result, BaseException)


def principal(keys: KeyStore, name: str, **limits: int | float) -> Principal:
    _, info = keys.create(name, **limits)  # type: ignore[arg-type]
    return info.principal()


async def test_the_master_key_has_no_limits(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    limiter = new_limiter(keys)
    master = Principal("master")
    for _ in range(1000):
        t = await limiter.admit(master, "m")
        limiter.settle(master, t, Usage(input_tokens=10**6))
    assert limiter.headers(master) == {}


async def test_rpm_is_a_sliding_window(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", rpm=3)
    limiter = new_limiter(keys)
    for _ in range(3):
        await limiter.admit(p, "m")
        clock.advance(10)  # requests at T0, T0+10, T0+20
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m")  # at T0+30
    err = e.value
    assert err.status == 429 and err.should_retry is None
    assert err.retry_after == pytest.approx(30)  # when the request at T0 leaves the window
    assert "limit of 3 requests per minute" in err.message
    headers = err.headers()
    assert headers["retry-after"] == "30"
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "50s"  # the window empties at T0+80
    assert "x-ratelimit-limit-tokens" not in headers
    clock.advance(30)  # T0+60: the first request has left the window
    await limiter.admit(p, "m")
    with pytest.raises(RateLimited):
        await limiter.admit(p, "m")  # a rejection is not counted, the window is full again
    clock.advance(10)
    await limiter.admit(p, "m")


async def test_rpm_holds_under_concurrent_first_requests(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", rpm=5)
    limiter = new_limiter(keys)
    results = await asyncio.gather(
        *(limiter.admit(p, "m") for _ in range(12)), return_exceptions=True
    )
    assert sum(admitted(r) for r in results) == 5
    assert all(isinstance(r, RateLimited) for r in results if not admitted(r))


async def test_tpm_counts_settled_tokens_in_the_last_minute(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", tpm=1000)
    limiter = new_limiter(keys)
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=300, output_tokens=300))  # 600 at T0
    clock.advance(20)
    t = await limiter.admit(p, "m")
    limiter.settle(
        p,
        t,
        Usage(input_tokens=100, cache_read_tokens=200, cache_creation_tokens=50, output_tokens=150),
    )  # 500 at T0+20: 1100 in the window
    clock.advance(5)
    await drain(limiter)  # a shared limiter settles in the background
    assert limiter.headers(p)["x-ratelimit-remaining-tokens"] == "0"
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m")
    err = e.value
    assert "limit of 1,000 tokens per minute (1,100 used" in err.message
    assert err.retry_after == pytest.approx(35)  # T0+60 takes the window to 500
    headers = err.headers()
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-reset-tokens"] == "55s"
    clock.advance(35)
    await limiter.admit(p, "m")
    assert limiter.headers(p) == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "500",
        "x-ratelimit-reset-tokens": "20s",
    }


async def test_tpm_retry_after_waits_for_enough_tokens_to_leave(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", tpm=100)
    limiter = new_limiter(keys)
    tickets = [await limiter.admit(p, "m") for _ in range(3)]  # three calls in flight
    for t in tickets:
        limiter.settle(p, t, Usage(output_tokens=60))  # 60 at T0, T0+1, T0+2: 180 in all
        clock.advance(1)
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m")
    # Dropping 60 leaves 120, still over; dropping two leaves 60: that happens at T0+61.
    assert e.value.retry_after == pytest.approx(58)


async def test_token_budget_uses_the_ledger_then_settle(
    new_limiter: NewLimiter, keys: KeyStore, store: Store, clock: Clock
) -> None:
    p = principal(keys, "k", budget_tokens_month=1000)
    assert p.key_id is not None
    add_usage(store, p.key_id, T0 - 86400, tokens=900)  # earlier this month, before a restart
    add_usage(store, p.key_id, T0 - 40 * 86400, tokens=5000)  # last month
    limiter = new_limiter(store)  # a Store works as well as a KeyStore
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=60, output_tokens=60))
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m")
    err = e.value
    assert err.should_retry is False and err.code == "insufficient_quota"
    assert err.message == (
        "key 'k' has exhausted its monthly token budget: 1,020 of 1,000 tokens used this "
        "month; it resets on 2026-04-01 00:00 UTC"
    )
    assert err.retry_after == pytest.approx(APRIL - T0)
    assert err.headers()["x-should-retry"] == "false"
    clock.now = APRIL  # a new month: a new budget
    await limiter.admit(p, "m")


async def test_usd_budget(new_limiter: NewLimiter, keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", budget_usd_month=1.0)
    limiter = new_limiter(keys)
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10, cost_usd=0.6))
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10))  # unpriced: counts no dollars
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10, cost_usd=0.45))
    with pytest.raises(RateLimited, match=r"monthly USD budget: \$1.05 of \$1.00 used") as e:
        await limiter.admit(p, "m")
    assert e.value.should_retry is False


async def test_limits_are_per_key(new_limiter: NewLimiter, keys: KeyStore, clock: Clock) -> None:
    a = principal(keys, "a", rpm=1)
    b = principal(keys, "b", rpm=1)
    limiter = new_limiter(keys)
    await limiter.admit(a, "m")
    await limiter.admit(b, "m")
    with pytest.raises(RateLimited, match="key 'a'"):
        await limiter.admit(a, "m")


# ---------------------------------------------------------------- reservations


async def test_concurrent_calls_reserve_against_the_token_budget(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    """50 calls at once, each estimated at 30 tokens, against 100: three fit, whatever
    their order, because each reserves before the next is judged."""
    p = principal(keys, "k", budget_tokens_month=100)
    limiter = new_limiter(keys)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", tokens=30) for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if admitted(r)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(tickets) == 3 and len(refused) == 47
    # Refused because calls in flight hold the rest: worth retrying soon.
    assert all(r.should_retry is None and r.retry_after == 1.0 for r in refused)
    assert "in flight hold the rest of its monthly token budget" in refused[0].message
    # Settling replaces a reservation by the real use: here less than estimated.
    for t in tickets:
        limiter.settle(p, t, Usage(input_tokens=5, output_tokens=5))
    t = await limiter.admit(p, "m", tokens=30)  # 30 used + 30 reserved
    t2 = await limiter.admit(p, "m", tokens=30)
    with pytest.raises(RateLimited):
        await limiter.admit(p, "m", tokens=30)
    limiter.settle(p, t, Usage(output_tokens=30))
    limiter.settle(p, t, Usage(output_tokens=30))  # a second settle of a ticket: nothing
    limiter.settle(p, t2, Usage(output_tokens=30))
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m", tokens=30)  # 90 used: 10 left, 30 asked
    assert e.value.should_retry is False and e.value.code == "request_too_large"
    assert "has 10 tokens left" in e.value.message and "lower max_tokens" in e.value.message
    assert admitted(await limiter.admit(p, "m", tokens=10))


async def test_usd_budget_reserves_the_estimated_cost(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", budget_usd_month=1.0)
    limiter = new_limiter(keys)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", usd=0.3) for _ in range(50)), return_exceptions=True
    )
    assert sum(admitted(r) for r in results) == 3


async def test_tpm_counts_reservations_in_flight(
    new_limiter: NewLimiter, keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", tpm=1000)
    limiter = new_limiter(keys)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", tokens=300) for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if admitted(r)]
    assert len(tickets) == 3
    assert limiter.headers(p)["x-ratelimit-remaining-tokens"] == "100"
    for t in tickets:
        limiter.settle(p, t, Usage(output_tokens=300))
    # 900 settled in the window: a 300-token call waits until the first of them leaves.
    clock.advance(10)
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m", tokens=300)
    assert e.value.retry_after == pytest.approx(50)
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m", tokens=2000)  # more than the limit itself
    assert e.value.should_retry is False and "more than the key's limit" in e.value.message


async def test_max_parallel(new_limiter: NewLimiter, keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", max_parallel=2)
    limiter = new_limiter(keys)
    results = await asyncio.gather(
        *(limiter.admit(p, "m") for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if admitted(r)]
    assert len(tickets) == 2
    refused = next(r for r in results if isinstance(r, RateLimited))
    assert "max_parallel 2" in refused.message and refused.retry_after == 1.0
    limiter.settle(p, tickets[0], Usage())
    assert admitted(await limiter.admit(p, "m"))
    with pytest.raises(RateLimited):
        await limiter.admit(p, "m")


async def test_a_redis_that_lost_its_data_reads_the_month_from_the_ledger_again(
    keys: KeyStore, store: Store, clock: Clock, redis_server: Any, redis_url: str
) -> None:
    from meridian.limits.redis import connect
    from meridian.limits.shared import SharedLimiter

    p = principal(keys, "k", budget_tokens_month=1000)
    assert p.key_id is not None
    add_usage(store, p.key_id, T0 - 86400, tokens=990)
    limiter = SharedLimiter(
        keys, connect(redis_url, timeout_s=5), where="test", on_error="closed", hold_s=630
    )
    try:
        limiter.settle(p, await limiter.admit(p, "m", tokens=10), Usage(output_tokens=5))
        assert redis_server.command("FLUSHALL") == "+OK"  # a restart without persistence
        with pytest.raises(RateLimited) as e:
            await limiter.admit(p, "m", tokens=20)
        assert e.value.code == "request_too_large" and "has 10 tokens left" in e.value.message
    finally:
        await limiter.aclose()


async def test_every_key_in_redis_expires(
    keys: KeyStore, clock: Clock, redis_server: Any, redis_url: str
) -> None:
    from meridian.limits.redis import connect
    from meridian.limits.shared import SharedLimiter

    p = principal(keys, "k", rpm=5, tpm=1000, budget_tokens_month=10**6)
    limiter = SharedLimiter(
        keys, connect(redis_url, timeout_s=5), where="test", on_error="closed", hold_s=630
    )
    try:
        limiter.settle(p, await limiter.admit(p, "m", tokens=10), Usage(output_tokens=5))
        await limiter.admit(p, "m", tokens=10)  # one in flight
        await limiter.drain()
    finally:
        await limiter.aclose()
    ttl = {
        name: int(redis_server.command("TTL", f"meridian:{{k{p.key_id}}}:{name}")[1:])
        for name in ("st", "req", "tok", "fly", "m202603")
    }
    assert all(0 < ttl[n] <= 630 + 120 for n in ("st", "req", "tok", "fly")), ttl
    # A day after the month: APRIL - T0 is 16.5 days.
    assert APRIL - T0 + 86400 - 60 <= ttl["m202603"] <= APRIL - T0 + 86400, ttl


async def test_a_settle_sent_again_counts_once_and_a_released_admission_reserves_nothing(
    keys: KeyStore, clock: Clock, redis_server: Any, redis_url: str
) -> None:
    """What a replica does after Redis timed out: send the settle again (it may have run),
    release an admission whose answer it never got (it may run later)."""
    from meridian.limits.redis import StoreUnavailable, connect

    p = principal(keys, "k", max_parallel=5, budget_tokens_month=1000)
    store = connect(redis_url, timeout_s=5)
    args: dict[str, Any] = {"month": "202603", "hold_s": 600}
    try:
        assert await store.admit(p, "a", T0, 10, 0.0, seed=(0, 0.0), **args)
        for _ in range(2):
            _, done = store.start_settle(
                p.key_id or 0, "a:10:0.0", T0, 7, 0.0, count_tokens=False, **args
            )
            await done
        assert redis_server.command("HGET", f"meridian:{{k{p.key_id}}}:m202603", "tok") == "7"
        assert await store.release(p.key_id or 0, "b:10:0.0", 600) is False  # before it ran
        with pytest.raises(StoreUnavailable, match="abandoned"):
            await store.admit(p, "b", T0, 10, 0.0, seed=None, **args)
        seen = await store.admit(p, "c", T0, 10, 0.0, seed=None, **args)
        assert seen is not None and seen[1].parallel == 1 and seen[1].used_tokens == 7
    finally:
        await store.aclose()
