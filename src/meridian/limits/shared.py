"""Admission shared by every replica through Redis (``limits.redis_url``), and what happens
while Redis does not answer (``limits.on_store_error``).

The decisions, messages and headers are `meridian.limits`'s own, applied to the state the
admit script saw (`meridian.limits.redis`). A key without any limit never reaches Redis.

While Redis fails (refused, timed out, erroring), the limiter is *down*: it says so once in
the log, in ``/ready`` and in ``meridian_limits_store_up``, and for a second at a time does
not try Redis at all, so that a dead Redis costs a request nothing. It learns that Redis
fails, or answers again, from its own calls and from the cooldown sync's round trip twice a
second (`observed`): so also while no limited call comes, and from the start. Then:

- ``open``: calls are admitted by this process's own in-memory `Limiter`, as without Redis:
  every limit holds per replica, so the fleet may admit up to N times a key's rpm, tpm and
  max_parallel; a budget holds against the ledger's count read when the outage began plus
  what this replica admitted since.
- ``closed``: calls of limited keys are refused with a 503 saying why.

When Redis answers again it is used at once; the month counters are raised to the ledger's
count (calls admitted during the outage), and the in-memory state of the outage is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from meridian.auth import Principal
from meridian.errors import ApiError, RateLimited
from meridian.keys import KeyStore, month_start
from meridian.limits import IN_FLIGHT_RETRY_S, Limiter, Ticket, headers, refuse, used_tokens
from meridian.limits.redis import RedisLimits, Snapshot, StoreUnavailable
from meridian.model import Usage

log = logging.getLogger("meridian.limits")

# After a failure, Redis is not tried again for this long.
RETRY_S = 1.0
# Settles and releases kept for Redis's return; beyond this, reservations simply expire.
MAX_UNSENT = 10_000


@dataclass(slots=True)
class SharedTicket:
    key_id: int | None
    member: str = ""  # the reservation in Redis, "" when none
    month: str = ""
    settled: bool = False
    # Admitted by the in-memory fallback (on_store_error: open) instead.
    local: Ticket | None = None
    limiter: Limiter | None = None


def _month(now: float) -> str:
    return datetime.fromtimestamp(month_start(now), UTC).strftime("%Y%m")


def _limited(p: Principal) -> bool:
    return p.token_limited or p.rpm is not None or p.max_parallel is not None


class SharedLimiter:
    def __init__(
        self,
        keys: KeyStore,
        store: RedisLimits,
        *,
        where: str,
        on_error: Literal["open", "closed"],
        hold_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._keys = keys
        self._store = store
        self.where = where  # the URL, password redacted: for logs and /ready
        self.on_error = on_error
        self._hold_s = hold_s
        self._clock = clock or keys.clock
        self.up = True
        self.last_error: str | None = None
        self.errors = 0
        self._retry_at = 0.0  # loop time
        self._local: Limiter | None = None
        self._seeded: dict[int, str] = {}  # key id -> the month this process seeded
        self._snapshots: dict[int, Snapshot] = {}
        self._reading: dict[int, asyncio.Future[tuple[int, float]]] = {}
        # What failed and must reach Redis when it is back: settles, and the release of
        # admissions that failed (a timed-out one may still run and reserve).
        self._unsent: list[Callable[[], Awaitable[object]]] = []
        self._sending: asyncio.Task[None] | None = None
        # Settle tasks per key: not yet written to Redis (an admission of the key waits for
        # them), and written (only drain waits for them).
        self._settling: dict[int, set[asyncio.Task[None]]] = {}
        self._sent: dict[int, set[asyncio.Task[None]]] = {}

    async def admit(
        self, principal: Principal, alias: str, *, tokens: int = 0, usd: float = 0.0
    ) -> SharedTicket:
        key_id = principal.key_id
        if key_id is None or not _limited(principal):
            return SharedTicket(None)
        settling = self._settling.get(key_id)
        if settling:
            # This replica's own settles of the key count before its next admission.
            await asyncio.wait(settling)
        loop = asyncio.get_running_loop()
        if not self.up and loop.time() < self._retry_at:
            return await self._fallback(principal, alias, tokens, usd)
        member = secrets.token_hex(8)
        try:
            now = self._clock()
            month = _month(now)
            seed = None if self._seeded.get(key_id) == month else await self._ledger(key_id)
            seen = await self._admit(principal, member, tokens, usd, month, seed)
            if seen is None:  # the month's counters are gone (Redis restarted): reseed
                seed = await self._ledger(key_id)
                seen = await self._admit(principal, member, tokens, usd, month, seed)
            if seen is None:
                raise StoreUnavailable("the month's counters vanished twice")
        except StoreUnavailable as exc:
            self._failed(str(exc))
            reservation = f"{member}:{tokens}:{usd!r}"
            self._later(lambda: self._store.release(key_id, reservation, self._hold_s))
            return await self._fallback(principal, alias, tokens, usd)
        self._recovered()
        now, (ok, snapshot) = seen
        self._seeded[key_id] = month
        self._keep(key_id, snapshot)
        if not ok:
            refuse(principal, snapshot, now, tokens, usd)
            # The script and the checks read the same numbers; this is a float's last bit.
            raise RateLimited(
                f"key {principal.name!r} is at its limit; retry shortly",
                retry_after=IN_FLIGHT_RETRY_S,
                headers=headers(principal, snapshot, now),
            )
        # The reservation as the admit script wrote it.
        return SharedTicket(key_id, f"{member}:{tokens}:{usd!r}", month)

    async def _admit(
        self,
        principal: Principal,
        member: str,
        tokens: int,
        usd: float,
        month: str,
        seed: tuple[int, float] | None,
    ) -> tuple[float, tuple[bool, Snapshot]] | None:
        now = self._clock()
        seen = await self._store.admit(
            principal, member, now, tokens, usd, month=month, hold_s=self._hold_s, seed=seed
        )
        return None if seen is None else (now, seen)

    async def _ledger(self, key_id: int) -> tuple[int, float]:
        """The key's month usage from the ledger; concurrent first calls share one read."""
        reading = self._reading.get(key_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read_ledger(key_id))
            self._reading[key_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key_id, None))
        return await asyncio.shield(reading)

    async def _read_ledger(self, key_id: int) -> tuple[int, float]:
        info = await asyncio.to_thread(self._keys.by_id, key_id, self._clock())
        return (0, 0.0) if info is None else (info.tokens_month, info.usd_month)

    def settle(self, principal: Principal, ticket: SharedTicket | None, usage: Usage) -> None:
        """Release ``ticket`` with the call's real usage, exactly once. The Redis round trip
        runs as a task: a response never waits for it."""
        if ticket is None or ticket.settled or ticket.key_id is None:
            return
        ticket.settled = True
        if ticket.local is not None and ticket.limiter is not None:
            ticket.limiter.settle(principal, ticket.local, usage)
            return
        key_id = ticket.key_id
        now = self._clock()

        def send(seen: Snapshot | None = None) -> tuple[bool, Awaitable[Snapshot | None]]:
            return self._store.start_settle(
                key_id,
                ticket.member,
                now,
                used_tokens(usage),
                usage.cost_usd or 0.0,
                month=ticket.month,
                count_tokens=principal.tpm is not None,
                hold_s=self._hold_s,
                seen=seen,
            )

        written, reply = send(self._snapshots.get(key_id))
        task = asyncio.get_running_loop().create_task(
            self._settle(key_id, reply, lambda: send()[1])
        )
        # Written now, the settle runs in Redis before any admission this replica sends
        # after it (one connection, in order): only a settle not yet written must be waited
        # for. (Should that connection break meanwhile, the admission may count the
        # reservation still: a refusal at worst, and the settle is sent again.)
        tasks = (self._sent if written else self._settling).setdefault(key_id, set())
        tasks.add(task)
        table = self._sent if written else self._settling

        def done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            if not tasks and table.get(key_id) is tasks:
                del table[key_id]

        task.add_done_callback(done)

    async def _settle(
        self,
        key_id: int,
        reply: Awaitable[Snapshot | None],
        again: Callable[[], Awaitable[object]],
    ) -> None:
        try:
            seen = await reply
            if seen is not None:
                self._keep(key_id, seen)
        except StoreUnavailable as exc:
            # Sent again when Redis is back (it may have run: the script counts it once).
            self._failed(str(exc))
            self._later(again)

    def _keep(self, key_id: int, snapshot: Snapshot) -> None:
        kept = self._snapshots.get(key_id)
        if kept is None or kept.version < snapshot.version:
            self._snapshots[key_id] = snapshot

    def headers(self, principal: Principal) -> dict[str, str]:
        """The key's state as of the latest admission or settle this replica saw."""
        if principal.key_id is None or (principal.rpm is None and principal.tpm is None):
            return {}
        if not self.up and self._local is not None:
            return self._local.headers(principal)
        snapshot = self._snapshots.get(principal.key_id)
        return {} if snapshot is None else headers(principal, snapshot, self._clock())

    async def _fallback(
        self, principal: Principal, alias: str, tokens: int, usd: float
    ) -> SharedTicket:
        if self.on_error == "closed":
            raise ApiError(
                "usage limits cannot be checked: the limits store (Redis) does not answer "
                "and limits.on_store_error is closed; retry later",
                status=503,
                retry_after=IN_FLIGHT_RETRY_S,
            )
        if self._local is None:
            # A fresh one per outage: its month usage is read from the ledger now.
            self._local = Limiter(self._keys, self._clock)
        local = await self._local.admit(principal, alias, tokens=tokens, usd=usd)
        return SharedTicket(principal.key_id, local=local, limiter=self._local)

    async def check(self) -> bool:
        """Is the store up? While it is down, tries it (at most once a second), so that
        ``/ready`` sees Redis come back even before a limited call arrives."""
        if not self.up and asyncio.get_running_loop().time() >= self._retry_at:
            try:
                await self._store.ping()
            except StoreUnavailable as exc:
                self._failed(str(exc))
            else:
                self._recovered()
        return self.up

    def observed(self, error: str | None) -> None:
        """What the heartbeat saw (the cooldown sync, twice a second: `meridian.cooldowns`):
        None if Redis answered, else why it keeps failing. Keeps ``up`` current while no
        limited call comes."""
        if error is None:
            self._recovered()
        else:
            self._failed(error)

    def _failed(self, error: str) -> None:
        self.errors += 1
        self.last_error = error
        self._retry_at = asyncio.get_running_loop().time() + RETRY_S
        if self.up:
            self.up = False
            log.warning(
                "limits store %s unavailable (%s); %s",
                self.where,
                error,
                "admitting under this process's own limits"
                if self.on_error == "open"
                else "refusing calls of limited keys",
            )

    def _recovered(self) -> None:
        if self.up:
            return
        self.up = True
        self._local = None
        self._seeded.clear()  # raise the month counters to the ledger's, outage included
        log.warning("limits store %s answers again; limits are shared again", self.where)
        if self._unsent and self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_unsent())

    def _later(self, send: Callable[[], Awaitable[object]]) -> None:
        if len(self._unsent) < MAX_UNSENT:
            self._unsent.append(send)

    async def _send_unsent(self) -> None:
        try:
            while self._unsent:
                await self._unsent[0]()
                self._unsent.pop(0)
        except StoreUnavailable as exc:
            self._failed(str(exc))  # the rest wait for the next recovery
        finally:
            self._sending = None

    async def drain(self, timeout_s: float = 5) -> None:
        """Wait for the settles sent so far."""
        pending = [t for table in (self._settling, self._sent) for ts in table.values() for t in ts]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def aclose(self) -> None:
        await self.drain()
        if self._sending is not None:
            await asyncio.wait([self._sending], timeout=5)
        await self._store.aclose()
