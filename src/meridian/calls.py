"""One API call, from request bytes to response bytes, for either wire family.

    read body (size limit) → authenticate → check → scope & limits → route
        ├─ same family as the upstream: relay (pass-through, bytes relayed as they come)
        └─ otherwise: parse → canonical Request → provider.stream() → encode for the client
    → one CallRecord to every observer (log line, ledger, metrics), and limits settled

Errors before the first byte become an HTTP status in the caller's envelope; after it, an
error event in the caller's stream. A stream never ends silently: it ends with its terminal
event or with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse

from meridian.auth import Admission, Authenticator, Principal
from meridian.dialects import Dialect
from meridian.errors import ApiError, InvalidRequest, MeridianError, RequestTooLarge, Timeout
from meridian.logs import RequestLog
from meridian.metrics import Metrics
from meridian.model import (
    BlockDelta,
    Collector,
    Event,
    MessageDelta,
    MessageStart,
    Request,
    Response,
    Usage,
)
from meridian.prices import PriceTable
from meridian.providers.base import CallContext, Relay
from meridian.records import CallRecord, Observer
from meridian.router import Route, Router
from meridian.streaming import IDLE, Idle, Pump, SSEResponse

log = logging.getLogger("meridian.calls")

_FORWARDED = ("anthropic-version", "anthropic-beta")


@dataclass(slots=True)
class Gateway:
    """Everything a call needs; built once at startup and kept in the app's state."""

    router: Router
    authenticator: Authenticator
    admission: Admission | None = None
    observers: Sequence[Observer] = ()
    max_body_bytes: int = 32 * 1024 * 1024
    keepalive_s: float = 15.0
    request_timeout_s: float = 600.0
    # Prices calls whose upstream reports no cost, before limits settle and observers record.
    prices: PriceTable | None = None
    metrics: Metrics | None = None
    # Set only when server.log_bodies is on.
    request_log: RequestLog | None = None


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


async def read_json(request: HttpRequest, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(_too_large(limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(_too_large(limit))
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("the request body is empty: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _too_large(limit: int) -> str:
    return f"request body is larger than the {limit // (1024 * 1024)} MB limit (server.max_body_mb)"


class Call:
    """The state of one API call; `run` answers it."""

    def __init__(self, gw: Gateway, dialect: Dialect, request: HttpRequest) -> None:
        self.gw = gw
        self.dialect = dialect
        self.http = request
        self.t0 = time.perf_counter()
        self.rec = CallRecord(
            request_id=new_request_id(),
            started_at=time.time(),
            surface=dialect.wire,
            endpoint=request.url.path,
        )
        self.principal: Principal | None = None
        self.headers = {"x-request-id": self.rec.request_id, "request-id": self.rec.request_id}
        self._parsed: Request | None = None
        self._finished = False
        if gw.metrics is not None:
            gw.metrics.in_flight_inc(dialect.wire)

    async def run(self) -> HttpResponse:
        try:
            self.principal = await self.gw.authenticator.authenticate(self.http.headers)
            self.rec.key_name, self.rec.key_id = self.principal.name, self.principal.key_id
            body = await read_json(self.http, self.gw.max_body_bytes)
            if self.gw.request_log is not None:
                self.gw.request_log.body(self.rec.request_id, "request", body)
            alias, stream = self.dialect.check(body)
            self.rec.alias, self.rec.stream = alias, stream
            self.principal.check_model(alias)
            routes = self.gw.router.resolve(alias)
            if self.gw.admission is not None:
                await self.gw.admission.admit(self.principal, alias)
            ctx = CallContext(
                self.rec.request_id,
                forward_headers={h: v for h in _FORWARDED if (v := self.http.headers.get(h))},
                timeout_s=self.gw.request_timeout_s,
            )
            if stream:
                return await self._stream(routes, body, ctx)
            return await self._complete(routes, body, ctx)
        except MeridianError as err:
            return self._fail(err)
        except asyncio.CancelledError:
            # The server is shutting down under this call: still account for it.
            self.rec.status, self.rec.error_type = 499, "cancelled"
            self._finish(Usage())
            raise
        except Exception:
            log.exception("internal error", extra={"request_id": self.rec.request_id})
            return self._fail(ApiError(f"internal error (request id {self.rec.request_id})"))

    # -- helpers -------------------------------------------------------------------------

    def _request(self, body: Mapping[str, Any], route: Route) -> Request:
        if self._parsed is None:
            self._parsed = self.dialect.parse(body)
        return route.prepare(self._parsed)

    def _served_by(self, route: Route, path: str) -> None:
        self.rec.provider, self.rec.upstream_model, self.rec.path = (
            route.provider_name,
            route.model,
            path,
        )

    def _fail(self, err: MeridianError) -> HttpResponse:
        status, payload = self.dialect.error(err, self.rec.request_id)
        self.rec.status, self.rec.error_type = status, err.kind
        self._finish(Usage())
        return HttpResponse(
            orjson.dumps(payload),
            status,
            {**self.headers, **err.headers()},
            media_type="application/json",
        )

    def _finish(self, usage: Usage) -> None:
        """Account for the call, exactly once however it ended."""
        if self._finished:
            return
        self._finished = True
        if self.gw.metrics is not None:
            self.gw.metrics.in_flight_dec(self.dialect.wire)
        if usage.cost_usd is None and self.gw.prices is not None:
            usage = replace(usage, cost_usd=self.gw.prices.estimate(self.rec.upstream_model, usage))
        self.rec.usage = usage
        self.rec.latency_ms = (time.perf_counter() - self.t0) * 1000
        if self.principal is not None and self.gw.admission is not None:
            self.gw.admission.settle(self.principal, usage)
        for observer in self.gw.observers:
            try:
                observer.record(self.rec)
            except Exception:
                log.exception("observer failed", extra={"request_id": self.rec.request_id})

    # -- non-streaming ---------------------------------------------------------------------

    async def _complete(
        self, routes: tuple[Route, ...], body: dict[str, Any], ctx: CallContext
    ) -> HttpResponse:
        async def attempt(route: Route) -> Relay | Response:
            if route.provider.native_wire == self.dialect.wire:
                self._served_by(route, "relay")
                return await route.provider.relay(route.prepare_body(body, self.dialect.wire), ctx)
            self._served_by(route, "translate")
            collector = Collector()
            async with aclosing(route.provider.stream(self._request(body, route), ctx)) as events:
                async for event in events:
                    collector.feed(event)
            return collector.response()

        try:
            async with asyncio.timeout(self.gw.request_timeout_s):
                route, result = await self.gw.router.first_success(routes, attempt)
        except TimeoutError:
            raise Timeout(f"no answer within {self.gw.request_timeout_s:g} s") from None
        if isinstance(result, Relay):
            assert result.body is not None
            self._finish(result.usage)
            return HttpResponse(
                result.body, 200, {**result.headers, **self.headers}, media_type=result.content_type
            )
        self._finish(result.usage)
        payload = orjson.dumps(self.dialect.render(result, self.rec.alias or route.alias))
        return HttpResponse(payload, 200, self.headers, media_type="application/json")

    # -- streaming -------------------------------------------------------------------------

    async def _stream(
        self, routes: tuple[Route, ...], body: dict[str, Any], ctx: CallContext
    ) -> HttpResponse:
        keepalive = self.gw.keepalive_s

        async def attempt(route: Route) -> tuple[Pump[Any], Relay | Event]:
            if route.provider.native_wire == self.dialect.wire:
                self._served_by(route, "relay")
                relay = await route.provider.relay(route.prepare_body(body, self.dialect.wire), ctx)
                assert relay.chunks is not None
                return Pump(relay.chunks, keepalive), relay
            self._served_by(route, "translate")
            pump: Pump[Event] = Pump(
                route.provider.stream(self._request(body, route), ctx), keepalive
            )
            try:
                # Wait for the first event before answering, so an error that comes before
                # it still gets its HTTP status (and the router can fall back).
                while (first := await pump.get()) is IDLE:
                    pass
            except BaseException:
                await pump.aclose()
                raise
            if first is None:
                await pump.aclose()
                raise ApiError(
                    f"{route.provider_name}: the upstream sent an empty stream", status=502
                )
            assert not isinstance(first, Idle)
            return pump, first

        _, (pump, head) = await self.gw.router.first_success(routes, attempt)
        if isinstance(head, Relay):
            relay = head
            return SSEResponse(
                self._relay_body(pump, relay),
                {**relay.headers, **self.headers},
                on_close=lambda: self._stream_done(pump, relay.usage),
            )
        return SSEResponse(
            self._translate_body(pump, head, body),
            self.headers,
            on_close=lambda: self._stream_done(pump, Usage()),
        )

    async def _relay_body(self, pump: Pump[bytes], relay: Relay) -> AsyncIterator[bytes]:
        try:
            while (chunk := await pump.get()) is not None:
                if chunk is IDLE:
                    yield self.dialect.keepalive
                    continue
                assert isinstance(chunk, bytes)
                if self.rec.ttft_ms is None and relay.first_token:
                    self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000
                yield chunk
        except MeridianError as err:
            yield self._stream_failed(err)
        except Exception:
            log.exception("relay failed", extra={"request_id": self.rec.request_id})
            yield self._stream_failed(
                ApiError(f"internal error (request id {self.rec.request_id})")
            )
        finally:
            await self._stream_done(pump, relay.usage)

    async def _translate_body(
        self, pump: Pump[Event], first: Event, body: Mapping[str, Any]
    ) -> AsyncIterator[bytes]:
        encoder = self.dialect.encoder(self.rec.alias or "", body)
        usage = Usage()
        event: Event | Idle | None = first
        try:
            while event is not None:
                if isinstance(event, Idle):
                    yield self.dialect.keepalive
                else:
                    if isinstance(event, MessageStart | MessageDelta):
                        usage = usage.merge(event.usage)
                    elif isinstance(event, BlockDelta) and self.rec.ttft_ms is None:
                        self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000
                    out = encoder.feed(event)
                    if out:
                        yield out
                event = await pump.get()
        except MeridianError as err:
            yield self._stream_failed(err, encoder)
        except Exception:
            log.exception("stream failed", extra={"request_id": self.rec.request_id})
            yield self._stream_failed(
                ApiError(f"internal error (request id {self.rec.request_id})"), encoder
            )
        finally:
            await self._stream_done(pump, usage)

    def _stream_failed(self, err: MeridianError, encoder: Any = None) -> bytes:
        self.rec.status, self.rec.error_type = err.status, err.kind
        enc = encoder or self.dialect.encoder(self.rec.alias or "", {})
        return self.dialect.stream_error(enc, err, self.rec.request_id)

    async def _stream_done(self, pump: Pump[Any], usage: Usage) -> None:
        """Close the source and account for the call. Runs from the body's ``finally``, or,
        if the client left before the body started, from the response's ``on_close``."""
        if self._finished:
            return
        finished = pump.finished
        await pump.aclose()
        if not finished and self.rec.error_type is None:
            # The client went away mid-stream (nginx's 499: client closed request).
            self.rec.status, self.rec.error_type = 499, "client_disconnected"
        self._finish(usage)
