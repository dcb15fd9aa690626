"""Per-key limits: requests and tokens per minute, calls in parallel, monthly token and dollar
budgets. One `Limiter` per process, shared by every listener, all in memory.

A call reserves before it runs and settles when it ends. `admit` takes the call's estimated
cost (its input tokens, estimated, plus the ``max_tokens`` it will be sent with, and that
priced) and admits it only if the key's settled usage plus every reservation in flight plus
this estimate stays within each limit; the reservation then counts until `settle` replaces it
with what the upstream reported. Concurrent calls therefore cannot all slip under a limit
together: a key overshoots at most by what calls used beyond their estimates (their input
estimate running short, since output is bounded by ``max_tokens``).

- rpm: a sliding 60 s window of admitted requests.
- tpm: settled tokens of the last 60 s plus reservations in flight.
- max_parallel: calls admitted and not yet settled.
- budgets: this calendar month's (UTC) usage, read from the ledger once per key and month and
  then kept current by `settle`, plus reservations in flight.

Rejections are `RateLimited` with ``retry-after`` and OpenAI-style ``x-ratelimit-*`` headers.
One that retrying cannot fix (an exhausted budget, a request larger than a limit) also says
``x-should-retry: false``; an exhausted budget's retry-after is the start of next month.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from meridian.auth import Principal
from meridian.errors import RateLimited
from meridian.keys import KeyStore, human_time, month_start, next_month_start
from meridian.model import Usage
from meridian.storage import Store

WINDOW_S = 60.0
# A caller refused because its own calls in flight hold the limit: try again about then.
IN_FLIGHT_RETRY_S = 1.0


@dataclass(slots=True)
class Ticket:
    """A call's reservation; `Limiter.settle` releases it exactly once."""

    key_id: int | None
    tokens: int = 0
    usd: float = 0.0
    settled: bool = False


class KeyView(Protocol):
    """What the checks and headers read of a key's state: `_KeyState` here, a snapshot of
    the shared state in `meridian.limits.redis`."""

    @property
    def requests(self) -> Sequence[float]: ...  # admitted in the window, oldest first
    @property
    def tokens(self) -> Sequence[tuple[float, int]]: ...  # settled (time, tokens), oldest first
    @property
    def tokens_in_window(self) -> int: ...
    @property
    def reserved_tokens(self) -> int: ...
    @property
    def reserved_usd(self) -> float: ...
    @property
    def parallel(self) -> int: ...
    @property
    def month_end(self) -> float: ...
    @property
    def budget_tokens(self) -> int | None: ...
    @property
    def budget_usd(self) -> float | None: ...
    @property
    def used_tokens(self) -> int: ...
    @property
    def used_usd(self) -> float: ...


@dataclass(slots=True)
class _KeyState:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    tokens_in_window: int = 0
    # Reservations of the calls in flight, and how many there are.
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    parallel: int = 0
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

    async def admit(
        self, principal: Principal, alias: str, *, tokens: int = 0, usd: float = 0.0
    ) -> Ticket:
        """Admit a call estimated at ``tokens`` (and ``usd``) or raise `RateLimited`."""
        if principal.key_id is None:
            return Ticket(None)  # the master key has no limits
        state = self._state(principal.key_id)
        now = self._clock()
        if not state.month_begin <= now < state.month_end:
            await self._load_month(principal.key_id, state, now)
            now = self._clock()
        # From here to the reservation there is no await: concurrent admissions see each
        # other's reservations.
        self._prune(state, now)
        refuse(principal, state, now, tokens, usd)
        if principal.rpm is not None:
            # Without an rpm limit (limits never change for a key) there is nothing to count;
            # a busy key would otherwise keep a minute of timestamps, ~270k at 4,500 req/s.
            state.requests.append(now)
        state.reserved_tokens += tokens
        state.reserved_usd += usd
        state.parallel += 1
        return Ticket(principal.key_id, tokens, usd)

    def settle(self, principal: Principal, ticket: Ticket | None, usage: Usage) -> None:
        """Replace ``ticket``'s reservation with the call's real usage (``usage.cost_usd``,
        when priced). Safe to call twice: the second call does nothing."""
        if principal.key_id is None or ticket is None or ticket.settled:
            return
        ticket.settled = True
        state = self._state(principal.key_id)
        state.reserved_tokens -= ticket.tokens
        state.reserved_usd -= ticket.usd
        state.parallel -= 1
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
        return headers(principal, state, now)

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

    @staticmethod
    def _prune(state: _KeyState, now: float) -> None:
        horizon = now - WINDOW_S
        requests, tokens = state.requests, state.tokens
        while requests and requests[0] <= horizon:
            requests.popleft()
        while tokens and tokens[0][0] <= horizon:
            state.tokens_in_window -= tokens.popleft()[1]


def refuse(principal: Principal, state: KeyView, now: float, tokens: int, usd: float) -> None:
    """Raise the `RateLimited` a call estimated at ``tokens`` and ``usd`` gets from a key in
    ``state`` (its windows pruned to ``now``); return if it fits every limit."""
    _check_budgets(principal, state, now, tokens, usd)
    if principal.max_parallel is not None and state.parallel >= principal.max_parallel:
        raise RateLimited(
            f"key {principal.name!r} already has {state.parallel} calls in flight, its "
            f"limit (max_parallel {principal.max_parallel}); retry when one has finished",
            retry_after=IN_FLIGHT_RETRY_S,
            headers=headers(principal, state, now),
        )
    if principal.rpm is not None and len(state.requests) >= principal.rpm:
        wait = state.requests[0] + WINDOW_S - now
        raise RateLimited(
            f"key {principal.name!r} is over its limit of {principal.rpm} requests per "
            f"minute; retry in {math.ceil(wait)} s",
            retry_after=wait,
            headers=headers(principal, state, now),
        )
    if principal.tpm is not None:
        _check_tpm(principal, state, now, tokens)


def _check_budgets(
    principal: Principal, state: KeyView, now: float, tokens: int, usd: float
) -> None:
    resets = f"it resets on {human_time(state.month_end)}"
    budget, used = state.budget_tokens, state.used_tokens
    if budget is not None:
        if used >= budget:
            _exhausted(
                principal,
                state,
                now,
                f"has exhausted its monthly token budget: {used:,} of {budget:,} tokens "
                f"used this month; {resets}",
            )
        if used + tokens > budget:
            _exhausted(
                principal,
                state,
                now,
                f"has {budget - used:,} tokens left of its monthly budget, and this request "
                f"may use up to {tokens:,} (its input, estimated, plus max_tokens): lower "
                f"max_tokens or wait until the budget resets; {resets}",
                code="request_too_large",
            )
        if used + state.reserved_tokens + tokens > budget:
            _busy(principal, state, now, "its monthly token budget")
    cap, spent = state.budget_usd, state.used_usd
    if cap is not None:
        if spent >= cap:
            _exhausted(
                principal,
                state,
                now,
                f"has exhausted its monthly USD budget: ${spent:,.2f} of ${cap:,.2f} used "
                f"this month; {resets}",
            )
        if spent + usd > cap:
            _exhausted(
                principal,
                state,
                now,
                f"has ${cap - spent:,.4f} left of its monthly USD budget, and this request "
                f"may cost up to ${usd:,.4f}: lower max_tokens or wait until the budget "
                f"resets; {resets}",
                code="request_too_large",
            )
        if spent + state.reserved_usd + usd > cap:
            _busy(principal, state, now, "its monthly USD budget")


def _exhausted(
    principal: Principal,
    state: KeyView,
    now: float,
    what: str,
    code: str = "insufficient_quota",
) -> None:
    raise RateLimited(
        f"key {principal.name!r} {what}",
        retry_after=state.month_end - now,
        should_retry=False,
        code=code,
    )


def _busy(principal: Principal, state: KeyView, now: float, what: str) -> None:
    raise RateLimited(
        f"key {principal.name!r}: the {state.parallel} calls it has in flight hold the rest "
        f"of {what}; retry when they have finished",
        retry_after=IN_FLIGHT_RETRY_S,
        headers=headers(principal, state, now),
    )


def _check_tpm(principal: Principal, state: KeyView, now: float, tokens: int) -> None:
    tpm = principal.tpm
    assert tpm is not None
    if tokens > tpm:
        raise RateLimited(
            f"key {principal.name!r}: this request may use up to {tokens:,} tokens (its "
            f"input, estimated, plus max_tokens), more than the key's limit of {tpm:,} "
            "tokens per minute: lower max_tokens",
            should_retry=False,
            code="request_too_large",
            headers=headers(principal, state, now),
        )
    taken = state.tokens_in_window + state.reserved_tokens
    if taken + tokens <= tpm:
        return
    if state.tokens_in_window + tokens <= tpm:
        _busy(principal, state, now, "its tokens-per-minute limit")
    # Wait until enough settled tokens leave the window.
    excess, wait = taken + tokens - tpm, IN_FLIGHT_RETRY_S
    for ts, n in state.tokens:
        excess -= n
        wait = ts + WINDOW_S - now
        if excess <= 0:
            break
    raise RateLimited(
        f"key {principal.name!r} is over its limit of {tpm:,} tokens per minute "
        f"({state.tokens_in_window:,} used in the last minute, {state.reserved_tokens:,} "
        f"reserved by calls in flight, {tokens:,} asked); retry in {math.ceil(wait)} s",
        retry_after=max(wait, IN_FLIGHT_RETRY_S),
        headers=headers(principal, state, now),
    )


def headers(principal: Principal, state: KeyView, now: float) -> dict[str, str]:
    # "reset" is when the window is empty again, as OpenAI documents it.
    headers: dict[str, str] = {}
    if principal.rpm is not None:
        headers["x-ratelimit-limit-requests"] = str(principal.rpm)
        headers["x-ratelimit-remaining-requests"] = str(max(0, principal.rpm - len(state.requests)))
        reset = state.requests[-1] + WINDOW_S - now if state.requests else 0.0
        headers["x-ratelimit-reset-requests"] = _duration(reset)
    if principal.tpm is not None:
        headers["x-ratelimit-limit-tokens"] = str(principal.tpm)
        headers["x-ratelimit-remaining-tokens"] = str(
            max(0, principal.tpm - state.tokens_in_window - state.reserved_tokens)
        )
        reset = state.tokens[-1][0] + WINDOW_S - now if state.tokens else 0.0
        headers["x-ratelimit-reset-tokens"] = _duration(reset)
    return headers
