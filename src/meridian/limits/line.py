"""One Redis connection that every limiter call of a process shares, pipelined.

The limiter makes two round trips per call (admit, settle). Through redis-py's client API
each one checked a connection out of the pool and back, packed its twenty-odd arguments one
isinstance chain at a time, started a task to bound the write and a timer to bound the read,
and recorded its own metrics: about 0.9 ms of CPU per admit + settle here (bench/limits.py),
several times a whole request's budget. So the limiter talks to Redis through a `Line`:

- a command is packed into RESP bytes in one join, and written at once;
- calls in flight share one connection: each is written as it comes and waits on a future
  that one reader task resolves, replies arriving in the order the commands were written
  (Redis answers in order), so concurrent requests pipeline instead of taking a connection
  each;
- the caller bounds each call with its own deadline (`RedisLimits` wraps every call in
  ``asyncio.timeout``); a call that times out, or a connection that fails, drops the
  connection and fails every call still waiting on it, and the next call connects again.

redis-py still makes the connection (URL, password, TLS, database, protocol handshake) and
parses the replies; its errors reach the caller as they are, for `RedisLimits` to map.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions


class Script:
    """A Lua script run by its SHA1, sent whole only when Redis does not know it yet."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


def pack(words: Sequence[str]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    text = "".join([f"${len(word)}\r\n{word}\r\n" for word in words])
    if text.isascii():  # then a character is a byte: the lengths above are right
        return f"*{len(words)}\r\n{text}".encode()
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection:
    """A connected redis-py connection, the calls waiting on it in order, its reader."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.broken = False


class Line:
    def __init__(self, client: Any) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # No per-read timer: the reader waits for replies as long as calls wait on it, and
        # each call's own deadline bounds it.
        kwargs["socket_timeout"] = None
        self._make: Callable[[], Any] = lambda: pool.connection_class(**kwargs)
        self._client = client
        self._current: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def call(self, words: Sequence[str]) -> Any:
        """Send one command and return its reply (a Redis error raised as redis-py's)."""
        line = self._current
        if line is None or line.broken:
            line = await self._connect()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Appended and written with no await in between: the futures are in write order.
        line.waiting.append(reply)
        await line.conn.send_packed_command(pack(words), check_health=False)
        return await reply

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        tail = [str(len(keys)), *keys, *args]
        try:
            return await self.call(["EVALSHA", script.sha, *tail])
        except redis.exceptions.NoScriptError:
            # Redis restarted, or the cache was flushed: nothing ran. EVAL caches it again.
            return await self.call(["EVAL", script.body, *tail])

    def script_now(
        self, script: Script, keys: Sequence[str], args: Sequence[str]
    ) -> asyncio.Future[Any] | None:
        """Write the script's call now, with no await, and return the future of its reply;
        None when there is no connection to write on (then use `script`). Redis runs what is
        written on one connection in order: a call made after this one, on this line, sees
        its effects."""
        line = self._current
        # redis-py 8.1 (pinned) keeps the connection's asyncio stream writer here; its public
        # send_packed_command is a coroutine, so it could not write before an await.
        writer = None if line is None or line.broken else getattr(line.conn, "_writer", None)
        if line is None or writer is None or writer.is_closing():
            return None
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        line.waiting.append(reply)
        writer.write(pack(["EVALSHA", script.sha, str(len(keys)), *keys, *args]))
        return reply

    async def finish(
        self, sent: asyncio.Future[Any], script: Script, keys: Sequence[str], args: Sequence[str]
    ) -> Any:
        """The reply to what `script_now` wrote."""
        try:
            return await sent
        except redis.exceptions.NoScriptError:
            return await self.call(["EVAL", script.body, str(len(keys)), *keys, *args])

    async def _connect(self) -> _Connection:
        async with self._connecting:
            line = self._current
            if line is not None and not line.broken:
                return line  # a concurrent call connected meanwhile
            conn = self._make()
            try:
                await conn.connect()
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            line = _Connection(conn)
            line.reader = asyncio.get_running_loop().create_task(
                self._read(line), name="meridian-limits-redis-reader"
            )
            self._current = line
            return line

    async def _read(self, line: _Connection) -> None:
        error: BaseException = redis.exceptions.ConnectionError("the connection was closed")
        try:
            while True:
                try:
                    reply = await line.conn.read_response(timeout=math.inf)
                    failed = None
                except redis.exceptions.ResponseError as exc:
                    reply, failed = None, exc  # this command failed, the connection is fine
                if not line.waiting:
                    raise redis.exceptions.ConnectionError("a reply nobody asked for")
                waiter = line.waiting.popleft()
                if waiter.done():  # its caller gave up (a timeout): the reply is dropped
                    continue
                if failed is None:
                    waiter.set_result(reply)
                else:
                    waiter.set_exception(failed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection failed: nothing more will come on it
            error = exc
        finally:
            await self._drop(line, error)

    async def _drop(self, line: _Connection, error: BaseException) -> None:
        line.broken = True
        if self._current is line:
            self._current = None
        waiting, line.waiting = line.waiting, deque()
        for waiter in waiting:
            if not waiter.done():
                failure = redis.exceptions.ConnectionError(f"Redis connection lost: {error}")
                waiter.set_exception(failure)
        await line.conn.disconnect(nowait=True)

    async def reset(self) -> None:
        """Drop the connection (a call on it timed out: what else waits on it may never
        come); the next call connects again."""
        line = self._current
        if line is None:
            return
        reader = line.reader
        await self._drop(line, TimeoutError("a call timed out"))
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.wait([reader])

    async def aclose(self) -> None:
        await self.reset()
        await self._client.aclose()
