"""``max_concurrency`` places for CLI processes, and a bounded queue of requests waiting.

A place is held from a process's spawn until its stop has ended (an idle process holds one).
A freed place passes straight to the longest waiter, never back to the pool first: a request
arriving meanwhile cannot take it, so there are never more processes than places. The same
holds for a place freed by evicting an idle process: it belongs to the request that evicted.
"""

from __future__ import annotations

import asyncio
from collections import deque

from meridian.errors import Overloaded

QUEUE_RETRY_AFTER_S = 2.0


class Slots:
    def __init__(self, limit: int, max_queue: int, timeout_s: float, name: str) -> None:
        self.limit, self.max_queue, self.timeout_s, self.name = limit, max_queue, timeout_s, name
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def free(self) -> int:
        return self.limit - self.used

    def take(self) -> bool:
        """A free place now, if there is one."""
        if self.free() <= 0 or self._waiters:
            return False
        self.used += 1
        return True

    async def wait(self) -> None:
        """A place, once one is handed over; `Overloaded` if the queue is full or none came
        within the timeout."""
        if len(self._waiters) >= self.max_queue:
            raise Overloaded(
                f"{self.name}: all {self.limit} CLI slots are busy and the queue is full "
                f"({self.max_queue} waiting)",
                retry_after=QUEUE_RETRY_AFTER_S,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        got = False
        try:
            async with asyncio.timeout(self.timeout_s):
                await waiter
            got = True
        except TimeoutError:
            raise Overloaded(
                f"{self.name}: no CLI slot became free within {self.timeout_s:g} s",
                retry_after=QUEUE_RETRY_AFTER_S,
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not got and waiter.done() and not waiter.cancelled():
                self.release()  # handed over as this request gave up: pass it on

    def release(self) -> None:
        """A place is free: to the longest waiter, else back to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.used -= 1
