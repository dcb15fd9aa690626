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

A reservation expires at admission + ``hold_s`` (the call's deadline plus a margin): a
replica killed mid-call cannot hold a key's tokens or parallel slots for longer than that.
Errors of the client library are mapped here, once, to `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meridian.auth import Principal
from meridian.keys import next_month_start

WINDOW_S = 60
# Keys outlive the last reservation they hold by this much, then Redis drops them.
_KEEP_S = 120
_UNLIMITED = -1

_PRUNE = """
local st, req, tok, fly = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', fly, '-inf', now)
for _, m in ipairs(dead) do
  local t, u = string.match(m, '^[^:]+:([^:]+):(.+)$')
  redis.call('HINCRBY', st, 'rtok', 0 - tonumber(t))
  redis.call('HINCRBYFLOAT', st, 'rusd', 0 - tonumber(u))
  redis.call('HINCRBY', st, 'par', -1)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', fly, '-inf', now) end
local horizon = now - 60
local old = redis.call('ZRANGEBYSCORE', tok, '-inf', horizon)
for _, m in ipairs(old) do
  redis.call('HINCRBY', st, 'tokw', 0 - tonumber(string.match(m, ':(%d+)$')))
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', tok, '-inf', horizon) end
redis.call('ZREMRANGEBYSCORE', req, '-inf', horizon)
"""

# ARGV: now, id, tokens, usd, rpm, tpm, max_parallel, budget tokens, budget usd (-1: none),
# hold_s, keep_s, month_ttl_s, seed tokens, seed usd ('' : no seed).
ADMIT = (
    _PRUNE
    + """
local mon = KEYS[5]
local tokens, usd = tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm, tpm, maxpar = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local btok, busd = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[13] ~= '' then
  -- The ledger's count, unless Redis counted more (settles the ledger has not written yet).
  local cur = redis.call('HMGET', mon, 'tok', 'usd')
  if not cur[1] or tonumber(ARGV[13]) > tonumber(cur[1]) then
    redis.call('HSET', mon, 'tok', ARGV[13])
  end
  if not cur[2] or tonumber(ARGV[14]) > tonumber(cur[2]) then
    redis.call('HSET', mon, 'usd', ARGV[14])
  end
  redis.call('EXPIRE', mon, ARGV[12])
elseif redis.call('EXISTS', mon) == 0 then
  return {-1}
end
local s = redis.call('HMGET', st, 'rtok', 'rusd', 'par', 'tokw')
local rtok, rusd = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local par, tokw = tonumber(s[3]) or 0, math.max(0, tonumber(s[4]) or 0)
local m = redis.call('HMGET', mon, 'tok', 'usd')
local utok, uusd = tonumber(m[1]) or 0, tonumber(m[2]) or 0
local nreq = redis.call('ZCARD', req)
local ok = not (
  (btok >= 0 and (utok >= btok or utok + rtok + tokens > btok)) or
  (busd >= 0 and (uusd >= busd or uusd + rusd + usd > busd)) or
  (maxpar >= 0 and par >= maxpar) or
  (rpm >= 0 and nreq >= rpm) or
  (tpm >= 0 and tokw + rtok + tokens > tpm))
if ok then
  if rpm >= 0 then
    redis.call('ZADD', req, ARGV[1], ARGV[2])
    nreq = nreq + 1
  end
  redis.call('ZADD', fly, now + tonumber(ARGV[10]), ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4])
  rtok = redis.call('HINCRBY', st, 'rtok', tokens)
  rusd = tonumber(redis.call('HINCRBYFLOAT', st, 'rusd', usd))
  par = redis.call('HINCRBY', st, 'par', 1)
end
for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}) do redis.call('EXPIRE', k, ARGV[11]) end
local first = redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')
local last = redis.call('ZRANGE', req, -1, -1, 'WITHSCORES')
local tlast = redis.call('ZRANGE', tok, -1, -1, 'WITHSCORES')
local out = {ok and 1 or 0, redis.call('HINCRBY', st, 'v', 1), nreq, first[2] or '',
  last[2] or '', tokw, tlast[2] or '', rtok, string.format('%.17g', rusd), par, utok,
  string.format('%.17g', uusd)}
if not ok and tpm >= 0 then
  for _, v in ipairs(redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')) do out[#out + 1] = v end
end
return out
"""
)

# ARGV: the reservation (id:tokens:usd), id, tokens used, usd used, now, count tokens (1/0),
# keep_s.
SETTLE = """
local st, tok, fly, mon = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('ZREM', fly, ARGV[1]) == 1 then
  local t, u = string.match(ARGV[1], '^[^:]+:([^:]+):(.+)$')
  if redis.call('HINCRBY', st, 'par', -1) <= 0 then
    redis.call('HSET', st, 'par', 0, 'rtok', 0, 'rusd', 0)
  else
    redis.call('HINCRBY', st, 'rtok', 0 - tonumber(t))
    redis.call('HINCRBYFLOAT', st, 'rusd', 0 - tonumber(u))
  end
end
local n = tonumber(ARGV[3])
if n > 0 and ARGV[6] == '1' then
  redis.call('ZADD', tok, ARGV[5], ARGV[2] .. ':' .. ARGV[3])
  redis.call('HINCRBY', st, 'tokw', n)
end
if redis.call('EXISTS', mon) == 1 then
  redis.call('HINCRBY', mon, 'tok', n)
  redis.call('HINCRBYFLOAT', mon, 'usd', ARGV[4])
end
for _, k in ipairs({st, tok, fly}) do redis.call('EXPIRE', k, ARGV[7]) end
local s = redis.call('HMGET', st, 'rtok', 'rusd', 'par', 'tokw')
local tlast = redis.call('ZRANGE', tok, -1, -1, 'WITHSCORES')
return {redis.call('HINCRBY', st, 'v', 1), tonumber(s[1]) or 0, s[2] or '0', tonumber(s[3]) or 0,
  math.max(0, tonumber(s[4]) or 0), tlast[2] or ''}
"""


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
    """The two scripts over one connection pool; every call bounded by ``timeout_s``."""

    def __init__(self, client: Any, *, timeout_s: float, prefix: str = "meridian") -> None:
        self._client = client
        self._timeout = timeout_s
        self._prefix = prefix
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)

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
        out = await self._run(self._admit, self._keys(principal.key_id, month), args)
        if out[0] == -1:
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
        return ok == 1, snapshot

    async def settle(
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
    ) -> Snapshot | None:
        """Settle, and return ``seen`` brought up to date with the key's state after it."""
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
        out = await self._run(self._settle, [keys[0], keys[2], keys[3], keys[4]], args)
        if seen is None:
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

    async def ping(self) -> None:
        await self._run(None, [], [])

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                if script is None:
                    return await self._client.ping()
                return await script(keys=keys, args=args)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
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
