"""The usage ledger's writer: batching off the request path, flush on close, retention."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pytest
from ledgerhelpers import T0, Clock, rec

from meridian.ledger import DAY, Ledger, usage_summary
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.records import AttemptRecord
from meridian.storage import Store


def count(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) FROM usage")[0][0])


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_burst_of_concurrent_records_is_written_exactly(store: Store) -> None:
    ledger = Ledger(store, PriceTable(), flush_interval_s=0.05, batch_size=64)
    await ledger.start()
    rng = random.Random(7)
    sent = []

    async def client(c: int) -> None:
        for i in range(25):
            usage = Usage(
                input_tokens=rng.randrange(1, 5000),
                output_tokens=rng.randrange(1, 900),
                cache_read_tokens=rng.randrange(0, 300),
            )
            r = rec(c * 100 + i, usage=usage, stream=bool(i % 2))
            sent.append(r)
            ledger.record(r)
            await asyncio.sleep(0)

    await asyncio.gather(*(client(c) for c in range(40)))
    await ledger.aclose()

    assert ledger.written == len(sent) == 1000
    row = store.query(
        "SELECT COUNT(*), COUNT(DISTINCT request_id), SUM(input_tokens), SUM(output_tokens), "
        "SUM(cache_read_tokens), SUM(stream), COALESCE(SUM(cost_usd), 0) FROM usage"
    )[0]
    assert row[0] == row[1] == 1000
    assert row[2] == sum(r.usage.input_tokens for r in sent)
    assert row[3] == sum(r.usage.output_tokens for r in sent)
    assert row[4] == sum(r.usage.cache_read_tokens for r in sent)
    assert row[5] == sum(r.stream for r in sent)
    expected_cost = sum(PriceTable().estimate("gpt-4o-mini", r.usage) or 0 for r in sent)
    assert row[6] == pytest.approx(expected_cost)


async def test_writer_works_in_the_background(store: Store) -> None:
    ledger = Ledger(store, PriceTable(), flush_interval_s=0.05)
    await ledger.start()
    for i in range(5):
        ledger.record(rec(i))
    await wait_until(lambda: count(store) == 5)
    assert ledger.pending == 0
    await ledger.aclose()


async def test_aclose_flushes_records_still_queued(store: Store) -> None:
    # The writer would not wake for an hour and the batch is never full: only aclose writes.
    ledger = Ledger(store, PriceTable(), flush_interval_s=3600, batch_size=10**6)
    await ledger.start()
    for i in range(300):
        ledger.record(rec(i))
    await asyncio.sleep(0.1)
    assert count(store) == 0
    assert ledger.pending == 300
    await ledger.aclose()
    assert count(store) == 300
    assert ledger.pending == 0


async def test_a_full_batch_wakes_the_writer_early(store: Store) -> None:
    ledger = Ledger(store, PriceTable(), flush_interval_s=3600, batch_size=50)
    await ledger.start()
    for i in range(50):
        ledger.record(rec(i))
    await wait_until(lambda: count(store) == 50)
    await ledger.aclose()


async def test_records_before_start_are_kept(store: Store) -> None:
    ledger = Ledger(store, PriceTable())
    ledger.record(rec(1))
    await ledger.start()
    await ledger.aclose()
    assert count(store) == 1


async def test_failed_write_is_retried_not_lost(store: Store) -> None:
    ledger = Ledger(store, PriceTable(), flush_interval_s=3600)
    store.close()
    for i in range(5):
        ledger.record(rec(i))
    await ledger.flush()
    assert ledger.write_failures >= 1
    assert ledger.pending == 5
    store.open()
    await ledger.start()
    await ledger.aclose()
    assert count(store) == 5


async def test_a_failing_disk_warns_once_a_minute_and_recovers(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing write (here: the store closed under the writer) keeps every row, warns once
    a minute rather than on every 20 ms tick, marks the ledger unhealthy, and once writes
    work again writes every row and says so."""
    ledger = Ledger(store, PriceTable(), flush_interval_s=0.02)
    await ledger.start()
    store.close()
    with caplog.at_level(logging.WARNING, logger="meridian.ledger"):
        for i in range(5):
            ledger.record(rec(i))
        for _ in range(200):
            if ledger.write_failures >= 5:
                break
            await asyncio.sleep(0.01)
        assert ledger.write_failures >= 5
        assert not ledger.healthy and "not open" in (ledger.last_error or "")
        failing = [r for r in caplog.records if "writes are failing" in r.getMessage()]
        assert len(failing) == 1 and failing[0].exc_info is None  # one line, no traceback
        store.open()
        for _ in range(200):
            if ledger.healthy:
                break
            await asyncio.sleep(0.01)
    assert ledger.healthy and ledger.pending == 0
    assert any("work again" in r.getMessage() for r in caplog.records)
    await ledger.aclose()
    assert count(store) == 5


async def test_failed_attempts_are_rows_of_their_own(store: Store) -> None:
    attempt = AttemptRecord("ant", "claude-sonnet-4-6", 529, "overloaded", 12.0, T0 - 1, True)
    ledger = Ledger(store, PriceTable())
    ledger.record(rec(1, attempts=[attempt], provider="oai", upstream_model="gpt-4o"))
    await ledger.aclose()
    rows = [dict(r) for r in store.query("SELECT * FROM usage ORDER BY final")]
    assert [(r["provider"], r["status"], r["final"], r["error_type"]) for r in rows] == [
        ("ant", 529, 0, "overloaded"),
        ("oai", 200, 1, None),
    ]
    assert rows[0]["request_id"] == rows[1]["request_id"]
    summary = usage_summary(store, since=0, by="key")
    assert summary[0].requests == 1 and summary[0].errors == 0  # one call, served


async def test_backlog_is_bounded(store: Store) -> None:
    ledger = Ledger(store, PriceTable(), max_pending=10)
    for i in range(15):
        ledger.record(rec(i))
    assert (ledger.pending, ledger.dropped) == (10, 5)


async def test_cost_reported_by_the_upstream_wins(store: Store) -> None:
    ledger = Ledger(store, PriceTable())
    ledger.record(rec(1, request_id="cli", upstream_model="claude-sonnet-4-5",
                      usage=Usage(input_tokens=10, output_tokens=10, cost_usd=0.125)))  # fmt: skip
    ledger.record(rec(2, request_id="priced", upstream_model="claude-sonnet-4-5",
                      usage=Usage(input_tokens=1_000_000, output_tokens=100_000)))  # fmt: skip
    ledger.record(rec(3, request_id="unknown", upstream_model="llama3.1:8b"))
    await ledger.aclose()
    cost = {r["request_id"]: r["cost_usd"] for r in store.query("SELECT * FROM usage")}
    assert cost["cli"] == 0.125
    assert cost["priced"] == pytest.approx(3.0 + 1.5)  # $3/M in, $15/M out
    assert cost["unknown"] is None


async def test_every_field_is_stored(store: Store) -> None:
    r = rec(
        4,
        key_name=None,
        key_id=None,
        ttft_ms=12.5,
        stream=True,
        status=429,
        error_type="rate_limit",
        usage=Usage(1, 2, 3, 4, 5),
    )
    ledger = Ledger(store, PriceTable())
    ledger.record(r)
    await ledger.aclose()
    row = dict(store.query("SELECT * FROM usage")[0])
    assert row == {
        "id": row["id"],
        "ts": r.started_at,
        "request_id": r.request_id,
        "key_id": None,
        "key_name": None,
        "surface": "openai",
        "endpoint": "/v1/chat/completions",
        "alias": "gpt-test",
        "provider": "oai",
        "upstream_model": "gpt-4o-mini",
        "status": 429,
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
        "reasoning_tokens": 5,
        "cost_usd": pytest.approx(PriceTable().estimate("gpt-4o-mini", r.usage)),
        "latency_ms": r.latency_ms,
        "ttft_ms": 12.5,
        "stream": 1,
        "error_type": "rate_limit",
        "path": "relay",
        "final": 1,
    }


async def test_retention_purges_old_rows_at_start(store: Store) -> None:
    writer = Ledger(store, PriceTable(), clock=Clock(T0 - 400 * DAY))
    writer.record(rec(1, request_id="old", started_at=T0 - 91 * DAY))
    writer.record(rec(2, request_id="new", started_at=T0 - 89 * DAY))
    await writer.start()
    await writer.aclose()
    assert count(store) == 2

    ledger = Ledger(store, PriceTable(), retention_days=90, clock=Clock(T0))
    await ledger.start()
    await ledger.aclose()
    assert [r[0] for r in store.query("SELECT request_id FROM usage")] == ["new"]


async def test_retention_purges_daily(store: Store) -> None:
    clock = Clock(T0)
    ledger = Ledger(store, PriceTable(), retention_days=90, clock=clock, flush_interval_s=0.02)
    await ledger.start()
    ledger.record(rec(1, started_at=T0 - 89.5 * DAY))
    await wait_until(lambda: count(store) == 1)
    clock.now += DAY  # a day later the row is 90.5 days old
    await wait_until(lambda: count(store) == 0)
    await ledger.aclose()
