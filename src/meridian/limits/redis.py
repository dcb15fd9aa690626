"""Per-key limit state in Redis: two Lua scripts, one round trip per admission and per settle.

Every replica that names the same Redis sees the same windows, reservations and month
counters, so a limit holds across replicas as it holds in one process. The scripts take the
caller's clock (replicas keep theirs in step with NTP), which keeps them testable with an
injected clock; Redis's own TTLs only collect keys nobody uses any more.

Keys of one client key (``{k7}`` is a hash tag: one Cluster slot per client key):

    meridian:{k7}:st       hash: rtok, rusd, par (reservations in flight), tokw (window sum)
    meridian:{k7}:req      zset: admitted requests of the last 60 s (rpm)
    meridian:{k7}:tok      zset: settled ``id:tokens`` of the last 60 s (tpm)
    meridian:{k7}:fly      zset: reservations ``id:tokens:usd`` scored by when they expire
    meridian:{k7}:m202603  hash: tok, usd used this month, seeded from the ledger
    meridian:{k7}:x:ID     a call settled or abandoned: its settle counts once, and a late
                           admission of an abandoned call reserves nothing

A reservation expires at admission + ``hold_s`` (the call's deadline plus a margin): a
replica killed mid-call cannot hold a key's tokens or parallel slots for longer than that.
Errors of the client library are mapped here, once, to `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meridian.auth import Principal
from meridian.keys import next_month_start
from meridian.limits.line import Line, Script
from meridian.limits.scripts import ADMIT, RELEASE, SETTLE

# Keys outlive the last reservation they hold by this much, then Redis drops them.
_KEEP_S = 120
_UNLIMITED = -1


class StoreUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or failed the command."""


class _Span(Sequence[float]):
    """The admitted requests of a window as the checks read them: how many, first, last."""

    __slots__ = ("_first", "_last", "_n")

    def __init__(self, n: int, first: float, last: float) -> None:
        self._n, self._first, self._last = n, first, last

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> float: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[float]: ...
    def __getitem__(self, i: int | slice) -> float | Sequence[float]:
        if isinstance(i, slice) or not -self._n <= i < self._n:
            raise IndexError(i)
        return self._first if i in (0, -self._n) else self._last


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A key's shared state as one admission or settle saw it: a `meridian.limits.KeyView`.
    ``version`` orders the snapshots of one key (each script run counts one)."""

    version: int
    requests: _Span
    tokens: Sequence[tuple[float, int]]
    tokens_in_window: int
    reserved_tokens: int
    reserved_usd: float
    parallel: int
    month_end: float
    budget_tokens: int | None
    budget_usd: float | None
    used_tokens: int
    used_usd: float


def _limit(value: float | None) -> str:
    return str(_UNLIMITED if value is None else value)


class RedisLimits:
    """The three scripts over one pipelined connection (`meridian.limits.line`); every call
    bounded by ``timeout_s``."""

    def __init__(self, client: Any, *, timeout_s: float, prefix: str = "meridian") -> None:
        self._line = Line(client)
        self._timeout = timeout_s
        self._prefix = prefix
        self._admit = Script(ADMIT)
        self._settle = Script(SETTLE)
        self._release = Script(RELEASE)

    def _keys(self, key_id: int, month: str) -> list[str]:
        base = f"{self._prefix}:{{k{key_id}}}:"
        return [base + "st", base + "req", base + "tok", base + "fly", base + "m" + month]

    async def admit(
        self,
        principal: Principal,
        member: str,
        now: float,
        tokens: int,
        usd: float,
        *,
        month: str,
        hold_s: float,
        seed: tuple[int, float] | None,
    ) -> tuple[bool, Snapshot] | None:
        """(admitted?, the state it saw), or None when the month's counters are missing
        (never seeded, or Redis lost them): call again with ``seed`` from the ledger."""
        assert principal.key_id is not None
        month_end = next_month_start(now)
        args = [
            repr(now),
            member,
            str(tokens),
            repr(usd),
            _limit(principal.rpm),
            _limit(principal.tpm),
            _limit(principal.max_parallel),
            _limit(principal.budget_tokens_month),
            _limit(principal.budget_usd_month),
            repr(hold_s),
            str(int(hold_s) + _KEEP_S),
            str(int(month_end - now) + 86400),
            "" if seed is None else str(seed[0]),
            "" if seed is None else repr(seed[1]),
        ]
        keys = self._keys(principal.key_id, month)
        keys.append(self._mark(principal.key_id, member))
        out = (await self._run(self._admit, keys, args)).split(b" ")
        if out[0] == b"-2":
            raise StoreUnavailable("this admission was abandoned")
        if out[0] == b"-1":
            return None
        ok, version, nreq, first, last, tokw, tlast, rtok, rusd, par, utok, uusd = out[:12]
        if len(out) > 12:
            rest = out[12:]
            window = [
                (float(rest[i + 1]), int(rest[i].rsplit(b":", 1)[1]))
                for i in range(0, len(rest), 2)
            ]
        else:
            window = [(float(tlast), 0)] if tlast else []
        snapshot = Snapshot(
            version=int(version),
            requests=_Span(int(nreq), float(first or 0), float(last or 0)),
            tokens=window,
            tokens_in_window=int(tokw),
            reserved_tokens=int(rtok),
            reserved_usd=float(rusd),
            parallel=int(par),
            month_end=month_end,
            budget_tokens=principal.budget_tokens_month,
            budget_usd=principal.budget_usd_month,
            used_tokens=int(utok),
            used_usd=float(uusd),
        )
        return ok == b"1", snapshot

    def start_settle(
        self,
        key_id: int,
        member: str,
        now: float,
        tokens: int,
        usd: float,
        *,
        month: str,
        count_tokens: bool,
        hold_s: float,
        seen: Snapshot | None = None,
    ) -> tuple[bool, Coroutine[Any, Any, Snapshot | None]]:
        """Settle (once: sent again, it does nothing). Written to Redis now if the connection
        is up (then True: an admission sent after this returns runs after the settle); the
        coroutine of its result: ``seen`` brought up to date with the key's state after it."""
        keys = self._keys(key_id, month)
        args = [
            f"{member}",
            member.split(":", 1)[0],
            str(tokens),
            repr(usd),
            repr(now),
            "1" if count_tokens else "0",
            str(int(hold_s) + _KEEP_S),
        ]
        keys = [keys[0], keys[2], keys[3], keys[4], self._mark(key_id, args[1])]
        sent = self._line.script_now(self._settle, keys, args)
        return sent is not None, self._settled(sent, keys, args, tokens, usd, seen)

    async def _settled(
        self,
        sent: asyncio.Future[Any] | None,
        keys: list[str],
        args: list[str],
        tokens: int,
        usd: float,
        seen: Snapshot | None,
    ) -> Snapshot | None:
        out = (await self._run(self._settle, keys, args, sent)).split(b" ")
        if seen is None or out[0] == b"-2":
            return None
        version, rtok, rusd, par, tokw, tlast = out
        return replace(
            seen,
            version=int(version),
            tokens=[(float(tlast), 0)] if tlast else [],
            tokens_in_window=int(tokw),
            reserved_tokens=int(rtok),
            reserved_usd=float(rusd),
            parallel=int(par),
            used_tokens=seen.used_tokens + tokens,
            used_usd=seen.used_usd + usd,
        )

    async def release(self, key_id: int, reservation: str, hold_s: float) -> bool:
        """Abandon an admission whose answer never came: whether it ran or will run, it
        holds nothing. True if it had reserved."""
        base = f"{self._prefix}:{{k{key_id}}}:"
        ident = reservation.split(":", 1)[0]
        keys = [base + "st", base + "fly", self._mark(key_id, ident)]
        out = await self._run(self._release, keys, [reservation, str(int(hold_s) + _KEEP_S)])
        return bool(out)

    def _mark(self, key_id: int, ident: str) -> str:
        return f"{self._prefix}:{{k{key_id}}}:x:{ident}"

    async def ping(self) -> None:
        await self._run(None, [], [])

    async def aclose(self) -> None:
        await self._line.aclose()

    async def _run(
        self,
        script: Script | None,
        keys: list[str],
        args: list[str],
        sent: asyncio.Future[Any] | None = None,
    ) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                if script is None:
                    return await self._line.call(["PING"])
                if sent is not None:
                    return await self._line.finish(sent, script, keys, args)
                return await self._line.script(script, keys, args)
        except TimeoutError as exc:
            # What else waits on the connection may never come either: start afresh.
            await self._line.reset()
            raise StoreUnavailable(describe(exc)) from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise StoreUnavailable(describe(exc)) from exc


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    # redis-py's messages name the host and port, never the password.
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def connect(url: str, *, timeout_s: float) -> RedisLimits:
    """Limits in the Redis at ``url`` (no connection yet: the first command makes one)."""
    return RedisLimits(client(url, timeout_s=timeout_s), timeout_s=timeout_s)


def client(url: str, *, timeout_s: float) -> Any:
    """A redis-py asyncio client for ``url``, every command bounded by ``timeout_s``."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # The limiter decides what a failure means (fall back or refuse): no retries here,
        # which would multiply the time a dead Redis costs each request.
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )
