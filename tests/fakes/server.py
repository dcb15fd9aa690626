"""The core of the fake upstreams: the loopback server, its reply queue and the `Reply`
values; `fakes.upstream` is the module to import (it documents how to use them)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from aiohttp import web

Failure = Literal["error", "truncate", "reset"]


@dataclass(frozen=True)
class ToolCall:
    name: str
    # A dict, or a raw string sent as is (e.g. to test invalid JSON).
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(self.arguments).decode()

    def arguments_object(self) -> Any:
        try:
            return orjson.loads(self.arguments_json() or "{}")
        except orjson.JSONDecodeError:
            return {}


@dataclass(frozen=True)
class Reply:
    text: str | None = None  # None: the default echo, "pong from <model>"
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str | None = None
    signature: str = "EqQBCkYIBBgCIkBmYWtlLXNpZ25hdHVyZQ=="
    stop_reason: str | None = None  # Anthropic's names; None: tool_use if tool calls else end_turn
    input_tokens: int | None = None  # None: derived from the request's size
    output_tokens: int | None = None  # None: derived from the answer's size
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    piece_size: int = 4  # characters per streamed text / thinking / arguments delta
    # An HTTP error instead of an answer (status >= 400), with the format's error body.
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Stream faults and pacing.
    fail: Failure | None = None
    fail_after: int = 3
    delay_s: float = 0.0  # before each streamed event (a slow stream)
    headers_delay_s: float = 0.0  # before the response starts (a slow first byte)
    # A stall of stall_s before streamed event number stall_at (0: after the headers,
    # before the first event; None: no stall).
    stall_at: int | None = None
    stall_s: float = 0.0
    # After the last event, keep the connection open this long before ending the body.
    linger_s: float = 0.0
    # Bytes sent verbatim as a 200 body instead of a rendered answer.
    raw: bytes | None = None
    raw_content_type: str = "application/json"

    @property
    def final_stop_reason(self) -> str:
        return self.stop_reason or ("tool_use" if self.tool_calls else "end_turn")


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any
    # The reply served, with the defaults resolved (text, token counts); None for GETs.
    reply: Reply | None = None
    # The response body bytes written, exactly (for byte-for-byte relay assertions).
    sent: bytes = b""
    events_sent: int = 0
    # How the exchange ended, seen from the upstream: "completed", "cancelled" (the client
    # closed the connection while the handler waited), "disconnected" (a write failed
    # because the client had gone), or "" while it runs. `ended` is set then.
    outcome: str = ""
    ended: threading.Event = field(default_factory=threading.Event)


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def sse(event: str | None, data: Any) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


class FakeUpstream:
    """The server and the reply queue; subclasses render the wire format."""

    default_models: tuple[str, ...] = ()

    def __init__(self, models: tuple[str, ...] | None = None) -> None:
        self.models = models if models is not None else self.default_models
        self.requests: list[ReceivedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to configure for this provider."""
        return self.origin

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        if failure:
            raise failure[0]

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._routes(app)
        # handler_cancellation: a client that goes away stops a slow stream at once.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ scripting

    def reply(self, reply: Reply | None = None, **fields: Any) -> Reply:
        """Queue ``reply`` (or a `Reply` built from ``fields``); replies are used in order."""
        reply = replace(reply, **fields) if reply is not None else Reply(**fields)
        with self._lock:
            self._queue.append(reply)
        return reply

    def reply_text(self, text: str, **fields: Any) -> Reply:
        return self.reply(text=text, **fields)

    def reply_tool_calls(
        self, *calls: ToolCall | tuple[str, Mapping[str, Any] | str], text: str = "", **fields: Any
    ) -> Reply:
        """Parallel tool calls (one or more), optionally after some text."""
        tools = tuple(c if isinstance(c, ToolCall) else ToolCall(c[0], c[1]) for c in calls)
        return self.reply(text=text, tool_calls=tools, **fields)

    def reply_thinking(self, thinking: str, text: str, **fields: Any) -> Reply:
        return self.reply(thinking=thinking, text=text, **fields)

    def reply_error(
        self,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An HTTP error before the first byte, with the format's real error body."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            hdrs["retry-after-ms"] = f"{retry_after_ms:g}"
        if should_retry is not None:
            hdrs["x-should-retry"] = "true" if should_retry else "false"
        return self.reply(
            status=status, error_message=message, error_type=type, error_code=code, headers=hdrs
        )

    def reply_rate_limited(self, retry_after: float | None = 2, **kw: Any) -> Reply:
        return self.reply_error(429, retry_after=retry_after, **kw)

    def reply_server_error(self, **kw: Any) -> Reply:
        return self.reply_error(500, **kw)

    def reply_auth_error(self, **kw: Any) -> Reply:
        return self.reply_error(401, **kw)

    def reply_overloaded(self, **kw: Any) -> Reply:
        raise NotImplementedError

    def reply_stream_error(
        self, after: int = 3, *, type: str | None = None, message: str | None = None, **kw: Any
    ) -> Reply:
        """A stream that starts well and then carries the format's mid-stream error."""
        return self.reply(
            fail="error", fail_after=after, error_type=type, error_message=message, **kw
        )

    def reply_truncated(self, after: int = 3, **kw: Any) -> Reply:
        """A stream that ends cleanly (HTTP-wise) before its terminal event."""
        return self.reply(fail="truncate", fail_after=after, **kw)

    def reply_reset(self, after: int = 3, **kw: Any) -> Reply:
        """A stream whose TCP connection is reset (RST) after ``after`` events."""
        return self.reply(fail="reset", fail_after=after, **kw)

    def reply_slow(self, delay_s: float, text: str = "slow and steady", **kw: Any) -> Reply:
        """A stream that pauses ``delay_s`` before each event."""
        return self.reply(text=text, delay_s=delay_s, **kw)

    @property
    def pending(self) -> int:
        """Queued replies not used yet."""
        return len(self._queue)

    @property
    def last(self) -> ReceivedRequest:
        return self.requests[-1]

    # ------------------------------------------------------------------ serving

    def _next(self, model: str, body: bytes) -> tuple[int, Reply]:
        with self._lock:
            self._counter += 1
            reply = self._queue.popleft() if self._queue else Reply()
            n = self._counter
        text = reply.text if reply.text is not None else f"pong from {model}"
        produced = (
            len(text)
            + len(reply.thinking or "")
            + sum(len(c.name) + len(c.arguments_json()) for c in reply.tool_calls)
        )
        return n, replace(
            reply,
            text=text,
            input_tokens=reply.input_tokens
            if reply.input_tokens is not None
            else max(1, len(body) // 8),
            output_tokens=reply.output_tokens
            if reply.output_tokens is not None
            else max(1, produced // 4),
        )

    async def _record(self, request: web.Request) -> tuple[ReceivedRequest, Any]:
        body = await request.read()
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        rec = ReceivedRequest(
            request.method, request.path, dict(request.query), headers, body, data
        )
        self.requests.append(rec)
        return rec, data

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        rec, data = await self._record(request)
        try:
            resp = await self._serve_reply(request, rec, data)
        except asyncio.CancelledError:
            rec.outcome = rec.outcome or "cancelled"
            rec.ended.set()
            raise
        rec.outcome = rec.outcome or "completed"
        rec.ended.set()
        return resp

    async def _serve_reply(
        self, request: web.Request, rec: ReceivedRequest, data: Any
    ) -> web.StreamResponse:
        data = data if isinstance(data, dict) else {}
        model = str(data.get("model", ""))
        n, reply = self._next(model, rec.body)
        rec.reply = reply
        if reply.headers_delay_s:
            await asyncio.sleep(reply.headers_delay_s)
        if reply.status >= 400:
            rec.sent = orjson.dumps(self._error_body(n, reply))
            return web.Response(
                status=reply.status,
                body=rec.sent,
                headers={
                    "content-type": "application/json",
                    **self._id_headers(n),
                    **reply.headers,
                },
            )
        if reply.raw is not None:
            rec.sent = reply.raw
            return web.Response(
                body=reply.raw, headers={"content-type": reply.raw_content_type, **reply.headers}
            )
        if not data.get("stream"):
            if reply.fail == "reset":
                reset(request)
            rec.sent = orjson.dumps(self._body(n, reply, model, rec.path))
            return web.Response(
                body=rec.sent,
                headers={
                    "content-type": "application/json",
                    **self._id_headers(n),
                    **reply.headers,
                },
            )
        events = self._events(n, reply, model, data, rec.path)
        resp = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                **self._id_headers(n),
                **reply.headers,
            }
        )
        await resp.prepare(request)
        try:
            for i, event in enumerate(events):
                if reply.fail is not None and i == reply.fail_after:
                    break
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                if reply.stall_at == i:
                    await asyncio.sleep(reply.stall_s)
                rec.sent += event
                await resp.write(event)
                rec.events_sent += 1
            if reply.fail == "reset":
                reset(request)
                return resp
            if reply.fail == "error":
                error = self._stream_error(n, reply)
                rec.sent += error
                await resp.write(error)
            if reply.linger_s:
                await asyncio.sleep(reply.linger_s)
            await resp.write_eof()
        except ConnectionError:
            rec.outcome = "disconnected"  # the client went away; nothing to tell it
        return resp

    # Format-specific rendering.
    def _id_headers(self, n: int) -> dict[str, str]:
        raise NotImplementedError

    def _body(self, n: int, reply: Reply, model: str, path: str = "") -> dict[str, Any]:
        raise NotImplementedError

    def _events(
        self, n: int, reply: Reply, model: str, request: dict[str, Any], path: str = ""
    ) -> list[bytes]:
        raise NotImplementedError

    def _error_body(self, n: int, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _stream_error(self, n: int, reply: Reply) -> bytes:
        raise NotImplementedError


def reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed upstream would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
