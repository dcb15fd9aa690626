"""Streams to clients: a pump with keep-alives and deadlines, and a response that always
cleans up.

`Pump` consumes a source (a provider's event stream, or a relay's SSE chunks) to the end in
ONE task of its own. That matters: async generators that hold anyio cancel scopes or task
groups (the Claude Agent SDK's do) must be iterated and closed in the same task, and the
response side must wait with a timeout, to send keep-alives while the upstream is quiet
(OpenCode drops a stream after 300 s of silence) and to enforce the idle limit and the
call's deadline. A bounded buffer gives back-pressure: a slow client slows the upstream read
instead of buffering without bound.

The consumer waits on a plain future with a timer, not ``asyncio.wait_for``: on Python 3.11
``wait_for`` returns the item and drops a cancellation that lands as the item arrives, which
kept a fast upstream streaming to a client that had left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from meridian.errors import MeridianError, Timeout
from meridian.http.protocol import watch_of

T = TypeVar("T")


class Idle:
    """Returned by `Pump.get` when it is time for a keep-alive."""


IDLE = Idle()


class _End:
    pass


_END = _End()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Pump(Generic[T]):
    """``get`` hands out the source's items; ``deadline`` (loop time) and ``idle_s`` bound
    how long it waits, raising `Timeout` with ``name`` and the config key in the message."""

    def __init__(
        self,
        source: AsyncIterator[T],
        *,
        name: str,
        keepalive_s: float,
        idle_s: float | None = None,
        deadline: float | None = None,
        maxsize: int = 32,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[T | _End | _Failed] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self.name = name
        self.keepalive_s = keepalive_s
        self.idle_s = idle_s
        self.deadline = deadline
        # Which setting the deadline comes from, for the timeout's message.
        self.deadline_key = "server.request_timeout_s"
        self.last_at = self._loop.time()  # when the last item (or the start) was seen
        self._done = False
        self.finished = False  # the source ended (or failed) and the consumer saw it
        self._task = self._loop.create_task(self._run(source))

    async def _run(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                self._push(item)
                if len(self._items) >= self._maxsize:
                    space = self._space = self._loop.create_future()
                    await space
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, who decides what it means
            self._push(_Failed(exc))
        else:
            self._push(_END)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _push(self, item: T | _End | _Failed) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T | Idle | None:
        """The next item; `IDLE` when a keep-alive is due; None at the end (or once closed);
        re-raises the source's exception; `Timeout` past the idle limit or the deadline."""
        while not self._items:
            if self._done:
                return None
            now = self._loop.time()
            wait = self.keepalive_s
            if self.deadline is not None:
                if now >= self.deadline:
                    raise Timeout(f"{self.name}: no complete answer in time ({self.deadline_key})")
                wait = min(wait, self.deadline - now)
            if self.idle_s is not None:
                idle_until = self.last_at + self.idle_s
                if now >= idle_until:
                    raise Timeout(
                        f"{self.name}: the upstream sent nothing for {self.idle_s:g} s "
                        "(timeouts.idle_s)"
                    )
                wait = min(wait, idle_until - now)
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(wait, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._items and not self._done and wait == self.keepalive_s:
                return IDLE
        item = self._items.popleft()
        self._make_space()
        if isinstance(item, _End):
            self._done = self.finished = True
            return None
        if isinstance(item, _Failed):
            self._done = self.finished = True
            raise item.exc
        self.last_at = self._loop.time()
        return item

    def get_nowait(self) -> T | None:
        """The next item if the source has already produced it, else None; never the end
        or a failure (the next `get` reports those). Lets the consumer send what arrived
        together in one write."""
        items = self._items
        if not items or isinstance(items[0], _End | _Failed):
            return None
        item = items.popleft()
        self._make_space()
        self.last_at = self._loop.time()
        return item  # type: ignore[return-value]

    def _make_space(self) -> None:
        space = self._space
        if space is not None and not space.done():
            self._space = None
            space.set_result(None)

    def push_front(self, item: T) -> None:
        """Put back an item taken with `get` (the commit point peeks at the first one)."""
        self._items.appendleft(item)

    def stop(self, error: MeridianError | None = None) -> None:
        """End the stream now, from any callback: the source is cancelled, and the consumer
        gets ``error`` raised (or the end of the stream) instead of its next item."""
        if self._done:
            return
        self._items.clear()
        self._items.append(_END if error is None else _Failed(error))
        if not self._task.done():
            self._task.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def aclose(self) -> None:
        """Stop the source (cancelling it if still running) and wait until it has cleaned up."""
        self._done = True
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class SSEResponse(StreamingResponse):
    """A streaming response that closes its body iterator however the stream ends.

    Behind meridian's HTTP protocol the call itself hears of a disconnect (its watch) and
    ends the body, so no task listens for one here: two tasks fewer per stream. Elsewhere
    Starlette's own listener runs. Either way the iterator is closed at the end, which runs
    its ``finally`` at once (an iterator parked at a ``yield`` would otherwise wait for the
    garbage collector, and the upstream, or a Claude CLI process, would keep generating).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            content,
            # x-accel-buffering: nginx in front of meridian must not hold SSE back.
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
        )
        self._source: Any = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if watch_of(scope) is not None:
                await self.stream_response(send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            await self._source.aclose()
            # An async generator closed before it started never runs its own ``finally``.
            if self._on_close is not None:
                await self._on_close()
