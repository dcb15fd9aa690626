"""Helpers for the client-key tests (a module of its own: every suite has a ``conftest``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from meridian.keys import KeyStore
from meridian.storage import Store

# Makes the limiter under test (the in-memory one or the shared one) over a store.
NewLimiter = Callable[[KeyStore | Store], Any]


async def drain(limiter: Any) -> None:
    """Wait for settles a shared limiter sends in the background (none in memory)."""
    if hasattr(limiter, "drain"):
        await limiter.drain()


# Mid-month, so month arithmetic in a test is deliberate, never an accident of today's date.
T0 = datetime(2026, 3, 15, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def add_usage(
    store: Store, key_id: int | None, ts: float, *, tokens: int = 0, usd: float | None = None
) -> None:
    """A ledger row as the usage writer leaves it (input/output split is irrelevant here)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO usage (ts, request_id, key_id, surface, endpoint, status, input_tokens, "
            "output_tokens, cost_usd) VALUES (?, 'req', ?, 'openai', '/v1/chat/completions', "
            "200, ?, ?, ?)",
            (ts, key_id, tokens // 2, tokens - tokens // 2, usd),
        )
