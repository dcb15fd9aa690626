"""The processes that wait: each kept for one caller's conversation (keyed by its hash), or
started ahead as a warm spare for one caller's next first turn (keyed by its options).

Every idle process has a deadline (``continuation_ttl_s``) after which ``on_expiry`` stops
it, and together they hold at most ``live_memory_mb`` of resident memory: making room
evicts the longest idle first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meridian.providers.claude.process import CliProcess


class IdleProcesses:
    def __init__(
        self, ttl_s: float, memory_mb: int, on_expiry: Callable[[CliProcess, str], None]
    ) -> None:
        self.ttl_s, self.memory_mb = ttl_s, memory_mb
        self._evict = on_expiry  # (process, reason): stop it
        self._kept: dict[bytes, CliProcess] = {}  # conversation key -> its process
        self._spares: dict[bytes, list[CliProcess]] = {}  # caller + options -> spares

    @property
    def kept(self) -> int:
        return len(self._kept)

    @property
    def spares(self) -> int:
        return sum(len(ps) for ps in self._spares.values())

    def all(self) -> list[CliProcess]:
        return [*self._kept.values(), *(p for ps in self._spares.values() for p in ps)]

    def rss_mb(self) -> float:
        return sum(p.rss_mb() for p in self.all())

    def keep(self, proc: CliProcess, key: bytes) -> None:
        replaced = self._kept.pop(key, None)
        if replaced is not None:
            self._evict(replaced, "replaced")
        self._kept[key] = proc
        self._arm(proc, key)

    def add_spare(self, proc: CliProcess, key: bytes) -> None:
        self._spares.setdefault(key, []).append(proc)
        self._arm(proc, key)

    def take(self, key: bytes) -> CliProcess | None:
        """The process kept under ``key`` (or a spare for it), out of the idle set."""
        proc = self._kept.get(key)
        if proc is None:
            spares = self._spares.get(key)
            proc = spares[-1] if spares else None
        if proc is not None:
            self.remove(proc)
        return proc

    def oldest(self) -> CliProcess | None:
        idle = self.all()
        return min(idle, key=lambda p: p.idle_since) if idle else None

    def remove(self, proc: CliProcess) -> None:
        if proc.expiry is not None:
            proc.expiry.cancel()
            proc.expiry = None
        if proc.key is not None:
            if self._kept.get(proc.key) is proc:
                del self._kept[proc.key]
            spares = self._spares.get(proc.key, [])
            if proc in spares:
                spares.remove(proc)
                if not spares:
                    del self._spares[proc.key]
        proc.key = None

    def room_for(self, proc: CliProcess) -> bool:
        """Whether ``proc`` may wait too, evicting the longest idle to stay under the cap."""
        mine = proc.rss_mb()
        if mine > self.memory_mb:
            return False
        idle = sorted(self.all(), key=lambda p: p.idle_since)
        total = mine + sum(p.rss_mb() for p in idle)
        while total > self.memory_mb and idle:
            oldest = idle.pop(0)
            total -= oldest.rss_mb()
            self.remove(oldest)
            self._evict(oldest, "memory")
        return True

    def _arm(self, proc: CliProcess, key: bytes) -> None:
        loop = asyncio.get_running_loop()
        proc.key, proc.idle_since = key, loop.time()
        proc.expiry = loop.call_later(self.ttl_s, self._expire, proc)

    def _expire(self, proc: CliProcess) -> None:
        self.remove(proc)
        self._evict(proc, "ttl")
