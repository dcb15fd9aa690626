"""The ledger's read side: summaries per key/model/day, chart series, latency percentiles."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from ledgerhelpers import T0, rec

from meridian.ledger import (
    Ledger,
    latency_percentiles,
    recent_errors,
    usage_series,
    usage_summary,
)
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.records import CallRecord
from meridian.storage import Store, make_store

HOUR = 3600.0


def sample() -> list[CallRecord]:
    """Three keys, three aliases, a few errors, spread over three days."""
    out = []
    keys = ["pulse", "notes", None]
    aliases = [("gpt-test", "oai", "gpt-4o-mini"), ("claude-test", "ant", "claude-haiku-4-5"),
               ("local", "ollama", "llama3.1:8b")]  # fmt: skip
    for i in range(60):
        alias, provider, model = aliases[i % 3]
        out.append(
            rec(
                i,
                started_at=T0 + i * HOUR * 1.2,
                key_name=keys[i % 4 % 3],
                alias=alias,
                provider=provider,
                upstream_model=model,
                status=500 if i % 7 == 0 else 200,
                error_type="api_error" if i % 7 == 0 else None,
                usage=Usage(input_tokens=100 * i, output_tokens=7 * i, cache_read_tokens=i),
                latency_ms=float(10 * (i + 1)),
                ttft_ms=float(i + 1) if i % 2 else None,
                stream=bool(i % 2),
            )
        )
    return out


@pytest.fixture
async def filled(store: Store) -> list[CallRecord]:
    records = sample()
    ledger = Ledger(store, PriceTable())
    for r in records:
        ledger.record(r)
    await ledger.aclose()
    return records


def _expected(records: list[CallRecord], group: object) -> dict[tuple[str, ...], dict[str, float]]:
    out: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        g = out[group(r)]  # type: ignore[operator]
        g["requests"] += 1
        g["errors"] += r.status >= 400
        g["input"] += r.usage.input_tokens
        g["output"] += r.usage.output_tokens
        g["cache_read"] += r.usage.cache_read_tokens
        cost = PriceTable().estimate(r.upstream_model, r.usage)
        g["cost"] += cost or 0
        g["unpriced"] += cost is None
    return out


@pytest.mark.parametrize(
    ("by", "group"),
    [
        ("key", lambda r: (r.key_name or "-",)),
        ("model", lambda r: (r.alias, r.provider, r.upstream_model)),
        ("day", lambda r: (time.strftime("%Y-%m-%d", time.localtime(r.started_at)),)),
    ],
)
def test_summary_groups(store: Store, filled: list[CallRecord], by: str, group: object) -> None:
    rows = usage_summary(store, T0, by)  # type: ignore[arg-type]
    expected = _expected(filled, group)
    assert {r.group for r in rows} == set(expected)
    for r in rows:
        e = expected[r.group]
        assert r.requests == e["requests"]
        assert r.errors == e["errors"]
        assert r.input_tokens == e["input"]
        assert r.output_tokens == e["output"]
        assert r.cache_read_tokens == e["cache_read"]
        assert r.cost_usd == pytest.approx(e["cost"])
        assert r.unpriced == e["unpriced"]
    if by == "day":
        assert [r.group for r in rows] == sorted(r.group for r in rows)
    else:
        assert [r.requests for r in rows] == sorted((r.requests for r in rows), reverse=True)


def test_summary_respects_the_window(store: Store, filled: list[CallRecord]) -> None:
    since, until = T0 + 10 * HOUR, T0 + 30 * HOUR
    inside = [r for r in filled if since <= r.started_at < until]
    rows = usage_summary(store, since, "key", until)
    assert sum(r.requests for r in rows) == len(inside) > 0
    assert sum(r.input_tokens for r in rows) == sum(r.usage.input_tokens for r in inside)
    assert usage_summary(store, T0 + 1000 * HOUR, "key") == []


def test_series_buckets_and_groups(store: Store, filled: list[CallRecord]) -> None:
    step = 6 * HOUR
    series = usage_series(store, T0, T0 + 72 * HOUR, step, by="alias")
    assert series.buckets == 12
    per = {g.name: g for g in series.groups}
    assert set(per) == {"gpt-test", "claude-test", "local"}
    for name, g in per.items():
        mine = [r for r in filled if r.alias == name]
        assert len(g.requests) == len(g.tokens) == 12
        for b in range(12):
            inside = [r for r in mine if T0 + b * step <= r.started_at < T0 + (b + 1) * step]
            assert g.requests[b] == len(inside)
            u = [r.usage for r in inside]
            assert g.tokens[b] == sum(
                x.input_tokens + x.output_tokens + x.cache_read_tokens for x in u
            )


def test_series_folds_the_tail_into_other(store: Store, filled: list[CallRecord]) -> None:
    series = usage_series(store, T0, T0 + 72 * HOUR, 72 * HOUR, by="key", top=2)
    names = [g.name for g in series.groups]
    assert len(names) == 2 and names[-1] == "other"
    assert sum(g.requests[0] for g in series.groups) == len(filled)
    as_dict = series.as_dict()
    assert as_dict["buckets"] == 1 and as_dict["groups"][0]["name"] == names[0]


def test_latency_percentiles(store: Store, filled: list[CallRecord]) -> None:
    rows = {r.group: r for r in latency_percentiles(store, T0)}
    ok = [r for r in filled if r.status < 400]
    assert rows["all"].count == len(ok)
    lat = sorted(r.latency_ms for r in ok)
    # Nearest rank: the smallest value with at least p% of the values at or below it.
    for p, got in ((50, rows["all"].p50_ms), (90, rows["all"].p90_ms), (99, rows["all"].p99_ms)):
        below = sum(v <= got for v in lat)
        assert got in lat and below >= p / 100 * len(lat) > below - 1
    assert rows["all"].p50_ms <= rows["all"].p90_ms <= rows["all"].p99_ms
    ttft = sorted(r.ttft_ms for r in ok if r.ttft_ms is not None)
    assert rows["all"].ttft_p50_ms == ttft[(len(ttft) + 1) // 2 - 1]
    assert rows["gpt-test"].count == sum(r.alias == "gpt-test" for r in ok)
    assert list(rows)[-1] == "all"


def test_recent_errors_newest_first(store: Store, filled: list[CallRecord]) -> None:
    errors = recent_errors(store, limit=3)
    failed = sorted((r for r in filled if r.status >= 400), key=lambda r: -r.started_at)
    assert [e["request_id"] for e in errors] == [r.request_id for r in failed[:3]]
    assert errors[0]["status"] == 500 and errors[0]["error_type"] == "api_error"


@pytest.fixture
def far_east(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The reader's clock 14 hours ahead of UTC (a time zone no database server defaults to)."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_days_are_split_on_the_readers_clock(far_east: None, store_url: str) -> None:
    store = make_store(store_url).open()  # opened in that zone, as `meridian usage` would be
    try:
        ledger = Ledger(store, PriceTable())
        midnight = datetime(2026, 5, 29, tzinfo=ZoneInfo("Pacific/Kiritimati")).timestamp()
        for n, ts in enumerate((midnight - 1800, midnight + 1800, midnight + 3600)):
            ledger.record(rec(n, started_at=ts))
        await ledger.aclose()
        rows = usage_summary(store, 0.0, "day")
        assert [(r.group, r.requests) for r in rows] == [(("2026-05-28",), 1), (("2026-05-29",), 2)]
    finally:
        store.close()
