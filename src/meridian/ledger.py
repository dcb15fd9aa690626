"""The usage ledger: one row per API call in the store, written off the request path.

`Ledger.record` only turns the record into its row and appends that to an in-memory queue
(a deque: no lock, no await, no I/O). A writer task wakes every ``flush_interval_s`` (or as
soon as ``batch_size`` rows wait), takes what is queued and inserts it in a worker thread, in
one transaction, the store's fastest way (SQLite: a few multi-row INSERTs, in WAL mode, so
readers such as ``meridian usage`` never wait; PostgreSQL: COPY).
`Ledger.aclose` drains what is still queued: a completed request is never left unrecorded by
a graceful shutdown. A failed write (a full or failing disk, a database server that went
away) puts its rows back and is retried on the next tick; the ledger reports itself unhealthy
(``/ready`` says "degraded", the ``meridian_ledger_healthy`` gauge drops,
``meridian_ledger_pending_records`` grows) and logs one warning a minute, not one per tick,
until a write succeeds again. Rows wait in memory up to ``max_pending`` (a million by
default); beyond that new ones are dropped and counted.

A call is one row (``final = 1``); each of its failed attempts that was retried or fallen back
from is a row of its own (``final = 0``), so failed attempts show without counting a call twice.

Retention: rows older than ``retention_days`` are purged when the writer starts and daily.

The read side (``usage_summary``, ``usage_series``, ``latency_percentiles``, ``recent_errors``)
is at the end: plain synchronous functions over a `Store`, for ``meridian usage`` and
(through ``asyncio.to_thread``) the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meridian.prices import PriceTable
from meridian.records import AttemptRecord, CallRecord
from meridian.storage import Store

log = logging.getLogger("meridian.ledger")

DAY = 86_400.0
# While writes keep failing, one warning per this many seconds.
WARN_EVERY_S = 60.0

COLUMNS = (
    "ts",
    "request_id",
    "key_id",
    "key_name",
    "surface",
    "endpoint",
    "alias",
    "provider",
    "upstream_model",
    "status",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "stream",
    "error_type",
    "path",
    "final",
)
Row = tuple[Any, ...]  # one usage row, in COLUMNS order
# Rows per transaction when a large backlog drains: keeps each hold of the store lock short.
_CHUNK = 2000


class Ledger:
    """An `Observer` that writes every `CallRecord` to the ``usage`` table."""

    def __init__(
        self,
        store: Store,
        prices: PriceTable,
        *,
        retention_days: int = 90,
        clock: Callable[[], float] = time.time,
        flush_interval_s: float = 0.5,
        # Each write is a thread hand-off and a transaction: under load, fewer and larger
        # ones cost less CPU. The interval still bounds how long a row waits.
        batch_size: int = 1024,
        max_pending: int = 1_000_000,
    ) -> None:
        self._store = store
        self._prices = prices
        self._retention_s = retention_days * DAY
        self._clock = clock
        self._interval = flush_interval_s
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._pending: deque[Row] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_purge = 0.0
        self.written = 0
        self.dropped = 0
        self.write_failures = 0
        self.last_error: str | None = None  # while writes fail: why
        self._warned_at = -1e18

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    # -------------------------------------------------------------- the request path

    def record(self, rec: CallRecord) -> None:
        """Queue ``rec``'s row; never blocks."""
        if len(self._pending) >= self._max_pending:
            # Only when the disk has been failing for a long time: bound memory, say so.
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("usage ledger backlog full; %d records dropped so far", self.dropped)
            return
        # The row now (a tuple of plain values, which the collector soon stops tracking),
        # so that the writer thread runs as little Python, holding the GIL, as possible.
        for attempt in rec.attempts:
            self._pending.append(self._attempt_row(rec, attempt))
        self._pending.append(self._row(rec))
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="meridian-ledger-writer")

    async def aclose(self) -> None:
        """Stop the writer and write everything still queued."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except Exception:
                log.exception("usage ledger writer failed")
        for attempt in range(3):
            if await self._drain():
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        if self._pending:
            log.error("usage ledger closed with %d records unwritten", len(self._pending))

    async def flush(self) -> None:
        """Write everything queued now (tests, and readers that want the latest rows)."""
        await self._drain()

    async def purge(self) -> int:
        """Delete rows older than the retention period; returns how many went."""
        cutoff = self._clock() - self._retention_s
        self._next_purge = self._clock() + DAY
        return await asyncio.to_thread(self._delete_before, cutoff)

    # -------------------------------------------------------------- the writer

    async def _run(self) -> None:
        await self._purge_quietly()
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            # Only what is queued now: rows that arrive during the write wait for the next
            # wake-up (batch_size queued, or the interval) rather than trickling out as a
            # stream of tiny transactions, each a thread hand-off and a commit.
            await self._drain(len(self._pending))
            if self._clock() >= self._next_purge:
                await self._purge_quietly()

    async def _purge_quietly(self) -> None:
        try:
            removed = await self.purge()
        except Exception:
            log.exception("usage ledger retention purge failed")
            return
        if removed:
            log.info("usage ledger purged %d rows older than the retention period", removed)

    async def _drain(self, limit: int | None = None) -> bool:
        """Write the queued records (at most ``limit`` of them); False if a write failed (its
        rows are queued again)."""
        left = float("inf") if limit is None else limit
        while self._pending and left > 0:
            n = int(min(len(self._pending), _CHUNK, left))
            left -= n
            batch = [self._pending.popleft() for _ in range(n)]
            try:
                await asyncio.to_thread(self._insert, batch)
            except Exception as exc:
                self.write_failures += 1
                self._pending.extendleft(reversed(batch))
                self._failing(exc)
                return False
            self.written += n
            if self.last_error is not None:
                log.warning(
                    "usage ledger writes work again; %d rows were waiting", len(self._pending) + n
                )
                self.last_error = None
        return True

    def _failing(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "usage ledger writes are failing (%s); %d rows kept in memory and retried",
                self.last_error,
                len(self._pending),
            )

    def _insert(self, batch: Sequence[Row]) -> None:
        self._store.append("usage", COLUMNS, batch)

    def _delete_before(self, cutoff: float) -> int:
        with self._store.transaction() as conn:
            return conn.execute("DELETE FROM usage WHERE ts < ?", (cutoff,)).rowcount

    def _row(self, rec: CallRecord) -> Row:
        u = rec.usage
        # The Claude CLI reports an API-dollar equivalent; everything else is priced here.
        cost = u.cost_usd
        if cost is None:
            cost = self._prices.estimate(rec.upstream_model, u)
        return (
            rec.started_at,
            rec.request_id,
            rec.key_id,
            rec.key_name,
            rec.surface,
            rec.endpoint,
            rec.alias,
            rec.provider,
            rec.upstream_model,
            rec.status,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
            cost,
            rec.latency_ms,
            rec.ttft_ms,
            int(rec.stream),
            rec.error_type,
            rec.path,
            1,
        )

    @staticmethod
    def _attempt_row(rec: CallRecord, attempt: AttemptRecord) -> Row:
        return (
            attempt.started_at,
            rec.request_id,
            rec.key_id,
            rec.key_name,
            rec.surface,
            rec.endpoint,
            rec.alias,
            attempt.provider,
            attempt.upstream_model,
            attempt.status,
            0,
            0,
            0,
            0,
            0,
            None,
            attempt.latency_ms,
            None,
            int(rec.stream),
            attempt.error_type,
            rec.path,
            0,
        )


# ================================================================== the read side

GroupBy = Literal["key", "model", "day"]

# The columns that name a group, per ``by``.
GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "key": ("key",),
    "model": ("alias", "provider", "upstream_model"),
    "day": ("day",),
}
_GROUP_SQL: dict[str, tuple[str, ...]] = {
    "key": ("COALESCE(key_name, '-')",),
    "model": ("COALESCE(alias, '-')", "COALESCE(provider, '-')", "COALESCE(upstream_model, '-')"),
    "day": (),  # the store's dialect: a local calendar day
}


@dataclass(frozen=True, slots=True)
class SummaryRow:
    group: tuple[str, ...]
    requests: int
    errors: int  # HTTP status >= 400
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost_usd: float  # sum over the priced calls
    unpriced: int  # calls whose model has no price (their cost is not in cost_usd)
    avg_latency_ms: float | None


def usage_summary(
    store: Store, since: float, by: GroupBy = "key", until: float | None = None
) -> list[SummaryRow]:
    """Totals per key, per (alias, provider, upstream model), or per local day."""
    columns = _GROUP_SQL[by] or (store.dialect.local_day("ts"),)
    group = ", ".join(columns)
    n = len(GROUP_COLUMNS[by])
    order = "1" if by == "day" else f"{n + 1} DESC, {store.dialect.bytewise(columns[0])}"
    sql = f"""
        SELECT {group}, SUM(final), SUM(CASE WHEN final = 1 AND status >= 400 THEN 1 END),
               SUM(input_tokens), SUM(output_tokens),
               SUM(cache_read_tokens), SUM(cache_creation_tokens), SUM(reasoning_tokens),
               COALESCE(SUM(cost_usd), 0.0),
               COUNT(CASE WHEN final = 1 AND cost_usd IS NULL THEN 1 END),
               AVG(CASE WHEN final = 1 THEN latency_ms END)
        FROM usage WHERE ts >= ? AND ts < ?
        GROUP BY {", ".join(str(i + 1) for i in range(n))} ORDER BY {order}
    """
    rows = store.query(sql, (since, _until(until)))
    out = []
    for r in rows:
        c = [int(v or 0) for v in r[n : n + 7]]
        out.append(
            SummaryRow(
                group=tuple(str(v) for v in r[:n]),
                requests=c[0],
                errors=c[1],
                input_tokens=c[2],
                output_tokens=c[3],
                cache_read_tokens=c[4],
                cache_creation_tokens=c[5],
                reasoning_tokens=c[6],
                # Rounded past any precision shown: a sum of floats depends on the order the
                # database adds them in, and both backends must report the same figures.
                cost_usd=round(float(r[n + 7]), 9),
                unpriced=int(r[n + 8]),
                avg_latency_ms=None if r[n + 9] is None else round(float(r[n + 9]), 6),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class SeriesGroup:
    name: str
    requests: list[int]
    tokens: list[int]  # input + output + cache read + cache write


@dataclass(frozen=True, slots=True)
class Series:
    start: float  # unix seconds of the first bucket
    step: float  # seconds per bucket
    buckets: int
    groups: list[SeriesGroup]  # busiest first; the tail folded into "other"

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "step": self.step,
            "buckets": self.buckets,
            "groups": [
                {"name": g.name, "requests": g.requests, "tokens": g.tokens} for g in self.groups
            ],
        }


def usage_series(
    store: Store,
    since: float,
    until: float,
    step: float,
    *,
    by: Literal["alias", "key"] = "alias",
    top: int = 8,
) -> Series:
    """Requests and tokens per time bucket and per alias (or key), for the charts."""
    column = "alias" if by == "alias" else "key_name"
    buckets = max(1, int((until - since + step - 1e-9) // step))
    rows = store.query(
        f"""
        SELECT {store.dialect.bucket("(ts - ?) / ?")}, COALESCE({column}, '-'), SUM(final),
               SUM(input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens)
        FROM usage WHERE ts >= ? AND ts < ? GROUP BY 1, 2
        """,
        (since, step, since, until),
    )
    per: dict[str, SeriesGroup] = {}
    for bucket, name, requests, tokens in rows:
        g = per.get(name)
        if g is None:
            g = per[name] = SeriesGroup(name, [0] * buckets, [0] * buckets)
        if 0 <= bucket < buckets:
            g.requests[bucket] += requests
            g.tokens[bucket] += tokens
    ranked = sorted(per.values(), key=lambda g: (-sum(g.requests), g.name))
    if len(ranked) > top:
        other = SeriesGroup("other", [0] * buckets, [0] * buckets)
        for g in ranked[top - 1 :]:
            for i in range(buckets):
                other.requests[i] += g.requests[i]
                other.tokens[i] += g.tokens[i]
        ranked = [*ranked[: top - 1], other]
    return Series(since, step, buckets, ranked)


@dataclass(frozen=True, slots=True)
class LatencyRow:
    group: str  # an alias, or "all"
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    ttft_p50_ms: float | None  # streams only
    ttft_p90_ms: float | None


def latency_percentiles(
    store: Store, since: float, until: float | None = None, limit: int = 100_000
) -> list[LatencyRow]:
    """Latency and time-to-first-token percentiles of successful calls, per alias and overall.

    SQLite has no percentile function: the newest ``limit`` rows are sorted here instead, on
    every backend alike (the same nearest-rank answer from both).
    """
    rows = store.query(
        """
        SELECT COALESCE(alias, '-'), latency_ms, ttft_ms FROM usage
        WHERE ts >= ? AND ts < ? AND status < 400 AND final = 1 AND latency_ms IS NOT NULL
        ORDER BY ts DESC LIMIT ?
        """,
        (since, _until(until), limit),
    )
    lat: dict[str, list[float]] = {}
    ttft: dict[str, list[float]] = {}
    for alias, latency, first in rows:
        for name in (alias, "all"):
            lat.setdefault(name, []).append(latency)
            if first is not None:
                ttft.setdefault(name, []).append(first)
    out = []
    for name in sorted(lat, key=lambda n: (n == "all", n)):
        values = sorted(lat[name])
        firsts = sorted(ttft.get(name, ()))
        out.append(
            LatencyRow(
                name,
                len(values),
                _pct(values, 50),
                _pct(values, 90),
                _pct(values, 99),
                _pct(firsts, 50) if firsts else None,
                _pct(firsts, 90) if firsts else None,
            )
        )
    return out


def recent_errors(store: Store, limit: int = 50, since: float = 0.0) -> list[dict[str, Any]]:
    rows = store.query(
        """
        SELECT ts, request_id, key_name, surface, alias, provider, upstream_model, status,
               error_type, latency_ms, final
        FROM usage WHERE status >= 400 AND ts >= ? ORDER BY ts DESC LIMIT ?
        """,
        (since, limit),
    )
    return [dict(r) for r in rows]


def _pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return float(sorted_values[int(rank) - 1])


def _until(until: float | None) -> float:
    return float("inf") if until is None else until
