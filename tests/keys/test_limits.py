"""Per-key limits with an injected clock: windows slide because the test moves time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from keyhelpers import T0, Clock, add_usage

from meridian.auth import Principal
from meridian.errors import RateLimited
from meridian.keys import KeyStore
from meridian.limits import Limiter, Ticket
from meridian.model import Usage
from meridian.storage import Store

APRIL = datetime(2026, 4, 1, tzinfo=UTC).timestamp()


def principal(keys: KeyStore, name: str, **limits: int | float) -> Principal:
    _, info = keys.create(name, **limits)  # type: ignore[arg-type]
    return info.principal()


async def test_the_master_key_has_no_limits(keys: KeyStore, clock: Clock) -> None:
    limiter = Limiter(keys, clock)
    master = Principal("master")
    for _ in range(1000):
        t = await limiter.admit(master, "m")
        limiter.settle(master, t, Usage(input_tokens=10**6))
    assert limiter.headers(master) == {}


async def test_rpm_is_a_sliding_window(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", rpm=3)
    limiter = Limiter(keys, clock)
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


async def test_rpm_holds_under_concurrent_first_requests(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", rpm=5)
    limiter = Limiter(keys, clock)
    results = await asyncio.gather(
        *(limiter.admit(p, "m") for _ in range(12)), return_exceptions=True
    )
    assert sum(isinstance(r, Ticket) for r in results) == 5
    assert all(isinstance(r, RateLimited) for r in results if not isinstance(r, Ticket))


async def test_tpm_counts_settled_tokens_in_the_last_minute(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", tpm=1000)
    limiter = Limiter(keys, clock)
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
    keys: KeyStore, clock: Clock
) -> None:
    p = principal(keys, "k", tpm=100)
    limiter = Limiter(keys, clock)
    tickets = [await limiter.admit(p, "m") for _ in range(3)]  # three calls in flight
    for t in tickets:
        limiter.settle(p, t, Usage(output_tokens=60))  # 60 at T0, T0+1, T0+2: 180 in all
        clock.advance(1)
    with pytest.raises(RateLimited) as e:
        await limiter.admit(p, "m")
    # Dropping 60 leaves 120, still over; dropping two leaves 60: that happens at T0+61.
    assert e.value.retry_after == pytest.approx(58)


async def test_token_budget_uses_the_ledger_then_settle(
    keys: KeyStore, store: Store, clock: Clock
) -> None:
    p = principal(keys, "k", budget_tokens_month=1000)
    assert p.key_id is not None
    add_usage(store, p.key_id, T0 - 86400, tokens=900)  # earlier this month, before a restart
    add_usage(store, p.key_id, T0 - 40 * 86400, tokens=5000)  # last month
    limiter = Limiter(store, clock)  # a Store works as well as a KeyStore
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


async def test_usd_budget(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", budget_usd_month=1.0)
    limiter = Limiter(keys, clock)
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10, cost_usd=0.6))
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10))  # unpriced: counts no dollars
    t = await limiter.admit(p, "m")
    limiter.settle(p, t, Usage(input_tokens=10, cost_usd=0.45))
    with pytest.raises(RateLimited, match=r"monthly USD budget: \$1.05 of \$1.00 used") as e:
        await limiter.admit(p, "m")
    assert e.value.should_retry is False


async def test_limits_are_per_key(keys: KeyStore, clock: Clock) -> None:
    a = principal(keys, "a", rpm=1)
    b = principal(keys, "b", rpm=1)
    limiter = Limiter(keys, clock)
    await limiter.admit(a, "m")
    await limiter.admit(b, "m")
    with pytest.raises(RateLimited, match="key 'a'"):
        await limiter.admit(a, "m")


# ---------------------------------------------------------------- reservations


async def test_concurrent_calls_reserve_against_the_token_budget(
    keys: KeyStore, clock: Clock
) -> None:
    """50 calls at once, each estimated at 30 tokens, against 100: three fit, whatever
    their order, because each reserves before the next is judged."""
    p = principal(keys, "k", budget_tokens_month=100)
    limiter = Limiter(keys, clock)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", tokens=30) for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if isinstance(r, Ticket)]
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
    assert isinstance(await limiter.admit(p, "m", tokens=10), Ticket)


async def test_usd_budget_reserves_the_estimated_cost(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", budget_usd_month=1.0)
    limiter = Limiter(keys, clock)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", usd=0.3) for _ in range(50)), return_exceptions=True
    )
    assert sum(isinstance(r, Ticket) for r in results) == 3


async def test_tpm_counts_reservations_in_flight(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", tpm=1000)
    limiter = Limiter(keys, clock)
    results = await asyncio.gather(
        *(limiter.admit(p, "m", tokens=300) for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if isinstance(r, Ticket)]
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


async def test_max_parallel(keys: KeyStore, clock: Clock) -> None:
    p = principal(keys, "k", max_parallel=2)
    limiter = Limiter(keys, clock)
    results = await asyncio.gather(
        *(limiter.admit(p, "m") for _ in range(50)), return_exceptions=True
    )
    tickets = [r for r in results if isinstance(r, Ticket)]
    assert len(tickets) == 2
    refused = next(r for r in results if isinstance(r, RateLimited))
    assert "max_parallel 2" in refused.message and refused.retry_after == 1.0
    limiter.settle(p, tickets[0], Usage())
    assert isinstance(await limiter.admit(p, "m"), Ticket)
    with pytest.raises(RateLimited):
        await limiter.admit(p, "m")
