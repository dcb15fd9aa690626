"""Deployment cooldowns shared by every replica through Redis (with ``limits.redis_url``).

A deployment whose circuit one replica opens (`meridian.health`) is skipped by the others
too, until the same time. One sorted set holds them: member ``provider<TAB>model``, score
the Unix time until which it is open (``ZADD GT``: a longer cooldown wins). A replica that
sees the deployment recover removes it, and the others forget what they adopted.

The router's fast path stays local: it reads `Health` in memory, as without Redis. This
module keeps that copy current with one pipelined round trip per ``interval_s`` (0.5 s) and
per cooldown opened or closed here, at once: a cooldown reaches the other replicas within
about half a second, and a replica does no Redis I/O per request for it. Redis down: each
replica keeps its own cooldowns, as without Redis, and logs nothing more than the limits do.

That round trip is also the replica's heartbeat on Redis, told to ``observer`` (the shared
limiter): Redis answering at once, Redis failing after ``FAILURES_TO_REPORT`` syncs in a row
(one late answer from a busy event loop is not an outage). So ``/ready``, the metrics and the
log say Redis is failing, or back, within a second, whether or not a limited call comes (a
wrong password shows at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.exceptions

from meridian.health import DeploymentState, Health, Key
from meridian.limits.redis import describe

log = logging.getLogger("meridian.cooldowns")

KEY = "meridian:cooldowns"
INTERVAL_S = 0.5
FAILURES_TO_REPORT = 2
# The set lives this long after its last write; its entries expire by score anyway.
_KEEP_S = 86400


class SharedCooldowns:
    def __init__(
        self, client: Any, health: Health, *, timeout_s: float, interval_s: float = INTERVAL_S
    ) -> None:
        self._client = client
        self._health = health
        self._timeout = timeout_s
        self._interval = interval_s
        self._outbox: dict[Key, float] = {}  # open until (0: closed), to publish
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.syncs = 0
        self.failures = 0
        self._failing = 0  # syncs failed in a row
        # Told that Redis answered (None), or why it did not (repeatedly).
        self.observer: Callable[[str | None], None] | None = None
        health.listener = self

    def opened(self, st: DeploymentState) -> None:
        self._outbox[(st.provider, st.model)] = st.open_until
        self._wake.set()

    def closed(self, provider: str, model: str) -> None:
        self._outbox[(provider, model)] = 0.0
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meridian-shared-cooldowns")

    async def aclose(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            # One cancel may not be enough: redis-py bounds each write with asyncio.wait_for,
            # which on Python 3.11 returns normally when a cancel lands as its write
            # completes, and the sync goes on (a worker's shutdown hung on it for good).
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            await self.sync()  # the first at once: a Redis that refuses shows at start
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def sync(self) -> None:
        """Publish what opened or closed here, and adopt what the other replicas opened."""
        outbox, self._outbox = self._outbox, {}
        now = self._health.clock()
        pipe = self._client.pipeline(transaction=False)
        for (provider, model), until in outbox.items():
            member = f"{provider}\t{model}"
            if until > now:
                pipe.zadd(KEY, {member: until}, gt=True)
            else:
                pipe.zrem(KEY, member)
        if outbox:
            pipe.expire(KEY, _KEEP_S)
        pipe.zremrangebyscore(KEY, "-inf", now)
        pipe.zrange(KEY, 0, -1, withscores=True)
        try:
            async with asyncio.timeout(self._timeout):
                replies = await pipe.execute()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            # Try these again next time (unless something newer replaced them).
            for key, until in outbox.items():
                self._outbox.setdefault(key, until)
            self._failing += 1
            if self.observer is not None and self._failing >= FAILURES_TO_REPORT:
                self.observer(describe(exc))
            return
        self.syncs += 1
        self._failing = 0
        if self.observer is not None:
            self.observer(None)
        shared: set[Key] = set()
        for member, until in replies[-1]:
            provider, _, model = member.decode().partition("\t")
            shared.add((provider, model))
            self._health.adopt(provider, model, float(until))
        self._health.drop_remote(shared)
