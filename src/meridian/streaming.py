"""Streams to clients: a pump with keep-alives, and a response that always cleans up.

`Pump` consumes a source (a provider's event stream, or a relay's SSE chunks) to the end in
ONE task of its own. That matters: async generators that hold anyio cancel scopes or task
groups (the Claude Agent SDK's do) must be iterated and closed in the same task, and the
response side needs to wait with a timeout to send keep-alives while the upstream is quiet
(OpenCode drops a stream after 300 s of silence). A small queue gives back-pressure: a slow
client slows the upstream read instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")


class Idle:
    """Returned by `Pump.get` when nothing arrived for ``keepalive_s`` seconds."""


IDLE = Idle()


class _End:
    pass


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Pump(Generic[T]):
    def __init__(self, source: AsyncIterator[T], keepalive_s: float, maxsize: int = 32) -> None:
        self._queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue(maxsize)
        self._keepalive_s = keepalive_s
        self._done = False
        self.finished = False  # the source ended (or failed) and the consumer saw it
        self._task = asyncio.create_task(self._run(source))

    async def _run(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await self._queue.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, who decides what it means
            await self._queue.put(_Failed(exc))
        else:
            await self._queue.put(_End())
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def get(self) -> T | Idle | None:
        """The next item, `IDLE` after a quiet spell, None at the end; re-raises the source's
        exception."""
        if self._done:
            return None
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                item = await asyncio.wait_for(self._queue.get(), self._keepalive_s)
            except TimeoutError:
                return IDLE
        if isinstance(item, _End):
            self._done = self.finished = True
            return None
        if isinstance(item, _Failed):
            self._done = self.finished = True
            raise item.exc
        return item

    async def aclose(self) -> None:
        """Stop the source (cancelling it if still running) and wait until it has cleaned up."""
        self._done = True
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class SSEResponse(StreamingResponse):
    """A streaming response that closes its body iterator however the stream ends.

    Starlette cancels the sending task when the client disconnects; if that lands while the
    iterator is parked at a ``yield``, nothing would close it until garbage collection, and
    the upstream (or a Claude CLI process) would keep generating. Closing it here runs its
    ``finally`` at once.
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
            await super().__call__(scope, receive, send)
        finally:
            await self._source.aclose()
            # An async generator closed before it started never runs its own ``finally``.
            if self._on_close is not None:
                await self._on_close()
