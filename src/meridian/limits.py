"""Per-key limits: requests and tokens per minute, and monthly token and dollar budgets.

One `Limiter` per process, shared by every listener, all in memory. rpm is a sliding 60 s
window of admitted requests; tpm counts the tokens *settled* (reported by the upstream) in
the last 60 s, so a request is admitted while the window is below the limit and its tokens
count once it finishes. A budget is this calendar month's (UTC) usage of the key, read from the
ledger once per key and month and then kept current by `settle`.

Rejections are `RateLimited`: rpm/tpm with ``retry-after`` (when the window frees enough) and
OpenAI-style ``x-ratelimit-*`` headers; an exhausted budget with ``x-should-retry: false`` and
the start of next month, since retrying before then cannot help.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from meridian.auth import Principal
from meridian.errors import RateLimited
from meridian.keys import KeyStore, human_time, month_start, next_month_start
from meridian.model import Usage
from meridian.store import Store

WINDOW_S = 60.0


@dataclass(slots=True)
class _KeyState:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    tokens_in_window: int = 0
    # The month the budget counters below belong to: [month_begin, month_end).
    month_begin: float = math.inf
    month_end: float = -math.inf
    budget_tokens: int | None = None
    budget_usd: float | None = None
    used_tokens: int = 0
    used_usd: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _duration(seconds: float) -> str:
    """``850ms``, ``12.5s``, ``1m0s``: the format OpenAI uses for its reset headers."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def used_tokens(usage: Usage) -> int:
    return usage.total_input_tokens + usage.output_tokens


class Limiter:
    def __init__(self, keys: KeyStore | Store, clock: Callable[[], float] | None = None) -> None:
        self._keys = keys if isinstance(keys, KeyStore) else KeyStore(keys)
        self._clock = clock or self._keys.clock
        self._states: dict[int, _KeyState] = {}

    async def admit(self, principal: Principal, alias: str) -> None:
        if principal.key_id is None:
            return  # the master key has no limits
        state = self._state(principal.key_id)
        now = self._clock()
        if not state.month_begin <= now < state.month_end:
            await self._load_month(principal.key_id, state, now)
            now = self._clock()
        self._check_budgets(principal, state, now)
        self._prune(state, now)
        if principal.rpm is not None and len(state.requests) >= principal.rpm:
            wait = state.requests[0] + WINDOW_S - now
            raise RateLimited(
                f"key {principal.name!r} is over its limit of {principal.rpm} requests per "
                f"minute; retry in {math.ceil(wait)} s",
                retry_after=wait,
                headers=self._headers(principal, state, now),
            )
        if principal.tpm is not None and state.tokens_in_window >= principal.tpm:
            excess, wait = state.tokens_in_window - principal.tpm, 0.0
            for ts, n in state.tokens:
                excess -= n
                wait = ts + WINDOW_S - now
                if excess < 0:
                    break
            raise RateLimited(
                f"key {principal.name!r} is over its limit of {principal.tpm} tokens per "
                f"minute ({state.tokens_in_window} used in the last minute); retry in "
                f"{math.ceil(wait)} s",
                retry_after=wait,
                headers=self._headers(principal, state, now),
            )
        if principal.rpm is not None:
            # Without an rpm limit (limits never change for a key) there is nothing to count;
            # a busy key would otherwise keep a minute of timestamps, ~270k at 4,500 req/s.
            state.requests.append(now)

    def settle(self, principal: Principal, usage: Usage) -> None:
        """Count a finished call's tokens (and ``usage.cost_usd``, when priced) against the key."""
        if principal.key_id is None:
            return
        state = self._state(principal.key_id)
        now = self._clock()
        n = used_tokens(usage)
        if n and principal.tpm is not None:
            # Likewise: a minute of (time, tokens) pairs only when there is a tpm to check.
            state.tokens.append((now, n))
            state.tokens_in_window += n
        if state.month_begin <= now < state.month_end:
            state.used_tokens += n
            state.used_usd += usage.cost_usd or 0.0

    def headers(self, principal: Principal) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for a successful response (empty without limits)."""
        if principal.key_id is None or (principal.rpm is None and principal.tpm is None):
            return {}
        state = self._state(principal.key_id)
        now = self._clock()
        self._prune(state, now)
        return self._headers(principal, state, now)

    def _state(self, key_id: int) -> _KeyState:
        state = self._states.get(key_id)
        if state is None:
            state = self._states[key_id] = _KeyState()
        return state

    async def _load_month(self, key_id: int, state: _KeyState, now: float) -> None:
        async with state.lock:
            if state.month_begin <= now < state.month_end:
                return  # loaded by a concurrent request
            info = await asyncio.to_thread(self._keys.by_id, key_id, now)
            if info is not None:
                state.budget_tokens = info.budget_tokens_month
                state.budget_usd = info.budget_usd_month
                state.used_tokens = info.tokens_month
                state.used_usd = info.usd_month
            state.month_begin, state.month_end = month_start(now), next_month_start(now)

    def _check_budgets(self, principal: Principal, state: _KeyState, now: float) -> None:
        if state.budget_tokens is not None and state.used_tokens >= state.budget_tokens:
            what = (
                f"its monthly token budget: {state.used_tokens:,} of {state.budget_tokens:,} "
                "tokens used this month"
            )
        elif state.budget_usd is not None and state.used_usd >= state.budget_usd:
            what = (
                f"its monthly USD budget: ${state.used_usd:,.2f} of ${state.budget_usd:,.2f} "
                "used this month"
            )
        else:
            return
        raise RateLimited(
            f"key {principal.name!r} has exhausted {what}; it resets on "
            f"{human_time(state.month_end)}",
            retry_after=state.month_end - now,
            should_retry=False,
            code="insufficient_quota",
        )

    @staticmethod
    def _prune(state: _KeyState, now: float) -> None:
        horizon = now - WINDOW_S
        requests, tokens = state.requests, state.tokens
        while requests and requests[0] <= horizon:
            requests.popleft()
        while tokens and tokens[0][0] <= horizon:
            state.tokens_in_window -= tokens.popleft()[1]

    @staticmethod
    def _headers(principal: Principal, state: _KeyState, now: float) -> dict[str, str]:
        # "reset" is when the window is empty again, as OpenAI documents it.
        headers: dict[str, str] = {}
        if principal.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(principal.rpm)
            headers["x-ratelimit-remaining-requests"] = str(
                max(0, principal.rpm - len(state.requests))
            )
            reset = state.requests[-1] + WINDOW_S - now if state.requests else 0.0
            headers["x-ratelimit-reset-requests"] = _duration(reset)
        if principal.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(principal.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(
                max(0, principal.tpm - state.tokens_in_window)
            )
            reset = state.tokens[-1][0] + WINDOW_S - now if state.tokens else 0.0
            headers["x-ratelimit-reset-tokens"] = _duration(reset)
        return headers
