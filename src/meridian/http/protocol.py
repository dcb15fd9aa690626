"""uvicorn's httptools protocol, guarded: what an unauthenticated peer may cost is bounded
before the application (and authentication) sees a byte.

uvicorn parses HTTP well and fast, but left alone it accepts a 200 MB header value, keeps a
connection that never sends a request (or half of one, or half a body) open for ever, and
lets connections pile up until file descriptors run out. `GuardedProtocol` adds, per
`meridian.config.HttpLimits`:

- ``max_connections``: a connection beyond it is answered 503 (``retry-after``) and closed;
- ``max_header_bytes`` / ``max_headers``: a longer head is answered 431 and closed, and at
  most one read chunk past the limit is ever buffered;
- ``header_timeout_s``: from a request's first byte (or the connection's start) to the end of
  its headers; ``body_timeout_s``: from there to the end of its body; past either, 408 and
  close (a connection that never sent a byte is closed without an answer);
- ``idle_timeout_s``: uvicorn's keep-alive timeout between requests.

Deadlines are checked by one `Guard` task per server (``reap``), not by a timer per request:
a request costs two clock reads, and the reaper walks the open connections a few times a
second.

It also gives the application what uvicorn does not: a `Watch` per request, in
``scope["extensions"]["meridian"]``, whose ``on_disconnect`` runs the moment the client's
connection is lost, so the call can stop its upstream at once in every phase (uvicorn only
says so to a task blocked in ``receive()``); an HTTP/1.0 client's stream is sent delimited
by the connection's end, never in chunked encoding, which 1.0 does not know; and a path's
trailing slash is dropped, so that no redirect is ever needed (or built from ``Host``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from meridian.config import HttpLimits

log = logging.getLogger("meridian.http")

# Seconds a shed client is asked to wait before it tries again.
SHED_RETRY_AFTER_S = 1


@dataclass(slots=True, eq=False)
class Watch:
    """What the HTTP layer tells the application about one request, as it happens."""

    disconnected: bool = False
    # The body did not arrive within body_timeout_s: the protocol answered 408 and closed.
    timed_out: bool = False
    on_disconnect: Callable[[], None] | None = None


def watch_of(scope: Any) -> Watch | None:
    extensions = scope.get("extensions")
    return extensions.get("meridian") if extensions else None


def error_body(status: int, kind: str, message: str) -> bytes:
    """An error both official SDKs read: Anthropic's envelope (``type: error``) whose
    ``error`` object also carries OpenAI's fields. The HTTP layer answers before it knows
    which API family the client speaks."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": kind, "message": message, "param": None, "code": kind},
        }
    )


def _response(status: int, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
    ]
    head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in extra]
    return b"".join([*head, b"\r\n", body])


@dataclass(slots=True, eq=False)
class Guard:
    """The limits, and the one task that enforces every connection's deadlines."""

    limits: HttpLimits
    connections: set[GuardedProtocol] = field(default_factory=set)
    shed: int = 0  # connections refused at max_connections
    timeouts: int = 0  # requests answered 408
    too_large: int = 0  # heads answered 431
    _task: asyncio.Task[None] | None = None

    def protocol_factory(self) -> Callable[..., GuardedProtocol]:
        """What ``uvicorn.Config(http=...)`` takes."""
        return functools.partial(GuardedProtocol, guard=self)

    def ensure_reaper(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._reap(), name="meridian-http-deadlines")

    async def _reap(self) -> None:
        limits = self.limits
        # Often enough that a deadline is overshot by a quarter of the shortest one at most.
        shortest = min(limits.header_timeout_s, limits.body_timeout_s)
        interval = min(1.0, max(0.02, shortest / 4))
        loop = asyncio.get_running_loop()
        while self.connections:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.connections):
                if conn.deadline is not None and now >= conn.deadline:
                    conn.expired()
        self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class GuardedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: Guard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.limits = guard.limits
        # loop.time() by which the current head or body must be complete; None: no deadline
        # (a response is being written, or the connection idles between requests).
        self.deadline: float | None = None
        self._in_head = True
        self._head_bytes = 0
        self._shed = False
        self._rejected = False

    # ------------------------------------------------------------------ connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(guard.connections) >= self.limits.max_connections:
            self._shed = True
            self.transport = transport
            guard.shed += 1
            body = error_body(
                503,
                "overloaded_error",
                f"meridian has {self.limits.max_connections} connections open, its limit "
                "(server.http.max_connections); retry shortly",
            )
            transport.write(_response(503, body, (("retry-after", str(SHED_RETRY_AFTER_S)),)))
            transport.close()
            return
        super().connection_made(transport)
        guard.connections.add(self)
        guard.ensure_reaper(self.loop)
        self.deadline = self.loop.time() + self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shed:
            return
        self.guard.connections.discard(self)
        self.deadline = None
        cycle = self.cycle
        callback = None
        if cycle is not None and not cycle.response_complete:
            watch = watch_of(cycle.scope)
            if watch is not None:
                watch.disconnected = True
                callback, watch.on_disconnect = watch.on_disconnect, None
        super().connection_lost(exc)
        if callback is not None:
            callback()

    # ------------------------------------------------------------------ the head

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Counted before parsing: httptools buffers a header until it is complete, so a
            # 200 MB value must be stopped here, one read chunk past the limit at most.
            if self._head_bytes > self.limits.max_header_bytes:
                self._reject_head(
                    f"the request head is larger than {self.limits.max_header_bytes} bytes "
                    "(server.http.max_header_bytes)"
                )
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"meridian": Watch()}  # type: ignore[dict-item]
        if not self._in_head:
            # A kept-alive connection's next request: the head's deadline starts now.
            self._in_head = True
            self._head_bytes = 0
            self.deadline = self.loop.time() + self.limits.header_timeout_s

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if len(self.headers) > self.limits.max_headers:
            self._reject_head(
                f"the request has {len(self.headers)} header fields; the limit is "
                f"{self.limits.max_headers} (server.http.max_headers)"
            )
            # Stops the parser mid-buffer: nothing after this head may reach the app.
            raise _Rejected
        super().on_headers_complete()
        scope = self.scope
        path = scope.get("path", "")
        if path[-1:] == "/" and len(path) > 1:
            # "/v1/messages/" is "/v1/messages": never a redirect (Starlette would build one
            # from the Host header, an open redirect for whoever sets it).
            scope["path"] = path.rstrip("/") or "/"
        if scope.get("http_version") == "1.0":
            self.cycle.__class__ = Http10Cycle
        # The body's deadline; a request without one completes in this same parse.
        self.deadline = self.loop.time() + self.limits.body_timeout_s

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.deadline = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request httptools cannot parse (and how a rejection raised
        # inside a parser callback surfaces: already answered, nothing more to say).
        if self._rejected:
            return
        self._rejected = True
        self.deadline = None
        body = error_body(400, "invalid_request_error", f"malformed HTTP request: {msg}")
        self.transport.write(_response(400, body))
        self.transport.close()

    def _reject_head(self, message: str) -> None:
        self._rejected = True
        self.guard.too_large += 1
        self.deadline = None
        self.transport.write(_response(431, error_body(431, "request_too_large", message)))
        self.transport.close()
        self.data_received = _discard  # type: ignore[method-assign]

    # ------------------------------------------------------------------ deadlines

    def expired(self) -> None:
        """The head or the body did not arrive in time (called by the guard's reaper)."""
        self.deadline = None
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        in_head = self._in_head
        if in_head and self._head_bytes == 0:
            # Never said a word (a fresh connection, or an idle one): nothing to answer.
            transport.close()
            return
        self.guard.timeouts += 1
        if in_head or cycle is None or not cycle.response_started:
            what = "headers" if in_head else "body"
            limit = self.limits.header_timeout_s if in_head else self.limits.body_timeout_s
            if cycle is not None and not in_head:
                watch = watch_of(cycle.scope)
                if watch is not None:
                    watch.timed_out = True
                # The app must not answer as well: from here its sends are dropped and its
                # receive() says the client is gone (the watch says why).
                cycle.disconnected = True
                cycle.message_event.set()
            body = error_body(
                408,
                "timeout_error",
                f"the request {what} did not arrive within {limit:g} s "
                f"(server.http.{'header' if in_head else 'body'}_timeout_s)",
            )
            transport.write(_response(408, body))
        transport.close()


class _Rejected(Exception):
    """Raised inside a parser callback to stop httptools after a rejection."""


def _discard(data: bytes) -> None:
    return None


class Http10Cycle(RequestResponseCycle):
    """HTTP/1.0 knows no chunked encoding: a response without a length is sent as it comes
    and ends when the connection closes (uvicorn closes 1.0 connections after a response)."""

    _raw = False

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not any(
            name.lower() == b"content-length" for name, _ in message.get("headers", ())
        ):
            self._raw = True
            self.chunked_encoding = False
        elif kind == "http.response.body" and self._raw:
            # Let uvicorn's length bookkeeping pass each piece through as it is.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)
