"""One API call, from request bytes to response bytes, for either wire family.

    shed if too many calls are in flight → authenticate → read the body (size, depth)
    → check → scope → reserve the estimated cost against the key's limits
    → the router's attempts, under the call's deadline, each one of:
        ├─ same family as the upstream: relay (pass-through, bytes relayed as they come)
        └─ otherwise: parse → canonical Request → provider.stream() → encode for the client
    → one CallRecord (with its failed attempts) to every observer, and the reservation settled

Errors before the first byte become an HTTP status in the caller's envelope; after it, an
error event in the caller's stream. A stream never ends silently: it ends with its terminal
event or with an error event. A stream commits to its deployment at its first real event,
so an upstream that answers 200 and then an error is fallen back from like any other.

The client may leave at any moment: the HTTP layer's watch calls `Call.client_left`, which
stops the upstream at once (cancelling the call's task before the answer has begun, ending
the stream after), and the call is recorded as 499 with the usage seen so far.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse

from meridian import estimate
from meridian.auth import Admission, Principal
from meridian.dialects import Dialect
from meridian.errors import ApiError, ClientClosed, MeridianError, Overloaded
from meridian.generation import Generation, Generations
from meridian.health import Health
from meridian.http.body import parse_object, read_body
from meridian.http.protocol import Watch
from meridian.logs import RequestLog
from meridian.metrics import Metrics
from meridian.model import (
    BlockDelta,
    Collector,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    Response,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from meridian.prices import PriceTable
from meridian.providers.base import CallContext, Relay
from meridian.records import AttemptRecord, CallRecord, Observer
from meridian.router import Attempt, Route
from meridian.streaming import IDLE, Idle, Pump, SSEResponse

log = logging.getLogger("meridian.calls")

_FORWARDED = ("anthropic-version", "anthropic-beta")
# A client shed for load is asked to come back after this many seconds.
SHED_RETRY_AFTER_S = 1.0
CHARS_PER_TOKEN = 4


@dataclass(eq=False)
class Gateway:
    """What outlives a config reload: built once at startup and kept in the app's state.
    The config's own parts (providers, router, master key) are the current generation's."""

    generations: Generations
    admission: Admission | None = None
    observers: list[Observer] = field(default_factory=list)
    # Prices calls whose upstream reports no cost, before limits settle and observers record.
    prices: PriceTable | None = None
    metrics: Metrics | None = None
    health: Health | None = None
    # Set only when server.log_bodies is on.
    request_log: RequestLog | None = None
    # Every API call in flight (shed beyond server.http.max_in_flight; stopped at shutdown).
    calls: set[Call] = field(default_factory=set)
    closing: bool = False

    @property
    def current(self) -> Generation:
        return self.generations.current

    def stop_calls(self) -> int:
        """Shutdown's grace is over: every call still running ends now, a stream with an
        error event in its client's format, a call not yet answered with 529/503."""
        calls = list(self.calls)
        for call in calls:
            call.stop_for_shutdown()
        return len(calls)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class Call:
    """The state of one API call; `run` answers it."""

    def __init__(self, gw: Gateway, dialect: Dialect, request: HttpRequest) -> None:
        self.gw = gw
        self.dialect = dialect
        self.http = request
        self.t0 = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0
        self.rec = CallRecord(
            request_id=new_request_id(),
            started_at=time.time(),
            surface=dialect.wire,
            endpoint=request.url.path,
        )
        self.gen: Generation | None = None
        self.principal: Principal | None = None
        self.ticket: Any = None
        self.headers = {"x-request-id": self.rec.request_id, "request-id": self.rec.request_id}
        extensions = request.scope.get("extensions")
        self.watch: Watch | None = extensions.get("meridian") if extensions else None
        self.task: asyncio.Task[Any] | None = None
        self.pump: Pump[Any] | None = None
        self.committed = False  # the answer began: the response is on its way
        self.client_gone = False
        self.shutting_down = False
        self.body_read = False
        self.body: dict[str, Any] = {}
        self.usage = Usage()  # of a stream, as it goes
        self.produced_chars = 0
        self._parsed: Request | None = None
        self._finished = False

    # -------------------------------------------------------------------- the call

    async def run(self) -> HttpResponse:
        gw = self.gw
        self.task = asyncio.current_task()
        gw.calls.add(self)
        if gw.metrics is not None:
            gw.metrics.in_flight_inc(self.dialect.wire)
        self.gen = gen = gw.generations.enter()
        if self.watch is not None:
            self.watch.on_disconnect = self.client_left
        try:
            limit = gen.max_in_flight
            if len(gw.calls) > limit:
                raise Overloaded(
                    f"meridian is answering {limit} requests, its limit "
                    "(server.http.max_in_flight); retry shortly",
                    retry_after=SHED_RETRY_AFTER_S,
                )
            if gw.closing:
                raise Overloaded("meridian is shutting down; retry", retry_after=1)
            self.principal = await gen.authenticator.authenticate(self.http.headers)
            self.rec.key_name, self.rec.key_id = self.principal.name, self.principal.key_id
            body = await self._read_body(gen)
            if gw.request_log is not None:
                gw.request_log.body(self.rec.request_id, "request", body)
            alias, stream = self.dialect.check(body)
            self.rec.alias, self.rec.stream = alias, stream
            self.principal.check_model(alias)
            routes = gen.router.resolve(alias)
            policy = gen.router.policy(alias)
            self.deadline = self.loop.time() - (time.perf_counter() - self.t0) + policy.timeout_s
            if gw.admission is not None and self.principal.key_id is not None:
                # The master key has no limits: nothing to reserve.
                reserve = self._estimate(body, routes) if self.principal.token_limited else {}
                self.ticket = await gw.admission.admit(self.principal, alias, **reserve)
            self.body = body
            run = gen.router.run
            if stream:
                route, (pump, head) = await run(
                    routes,
                    self._open_stream,
                    deadline=self.deadline,
                    policy=policy,
                    on_failure=self._attempt_failed,
                    on_start=self._served_by,
                )
                return self._stream_response(route, pump, head, body)
            route, result = await run(
                routes,
                self._complete,
                deadline=self.deadline,
                policy=policy,
                on_failure=self._attempt_failed,
                on_start=self._served_by,
            )
            return self._answer(route, result)
        except MeridianError as err:
            return self._fail(err)
        except asyncio.CancelledError:
            task = self.task
            if (self.client_gone or self.shutting_down) and task is not None:
                # Our own cancellation (client_left, stop_for_shutdown): the call ends here.
                task.uncancel()
                if self.client_gone:
                    return self._gone()
                return self._fail(Overloaded("meridian is shutting down; retry", retry_after=1))
            self.rec.status, self.rec.error_type = 499, "cancelled"
            self._finish(Usage())
            raise
        except Exception:
            log.exception("internal error", extra={"request_id": self.rec.request_id})
            return self._fail(ApiError(f"internal error (request id {self.rec.request_id})"))

    def client_left(self) -> None:
        """The client's connection is gone (called by the HTTP layer): stop at once."""
        self.client_gone = True
        if self.committed:
            if self.pump is not None:
                self.pump.stop()
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def stop_for_shutdown(self) -> None:
        if self._finished:
            return
        self.shutting_down = True
        err = Overloaded("meridian is shutting down; retry", retry_after=1)
        if self.committed:
            if self.pump is not None:
                self.pump.stop(err)
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    async def _read_body(self, gen: Generation) -> dict[str, Any]:
        try:
            raw = await read_body(
                self.http.stream(), gen.max_body_bytes, self.http.headers.get("content-length")
            )
        except ClientDisconnect:
            raise ClientClosed("the client went away while sending its request") from None
        self.body_read = True
        return parse_object(raw, gen.max_json_depth)

    def _estimate(self, body: Mapping[str, Any], routes: tuple[Route, ...]) -> dict[str, Any]:
        """The reservation a key with token limits makes: input (estimated) + max_tokens."""
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        output = max(route.max_tokens(asked) for route in routes)
        tokens = estimate.input_tokens(body) + output
        usd = 0.0
        if self.gw.prices is not None:
            for route in routes:
                cost = self.gw.prices.estimate(
                    route.model, Usage(input_tokens=tokens - output, output_tokens=output)
                )
                usd = max(usd, cost or 0.0)
        return {"tokens": tokens, "usd": usd}

    def _ctx(self, deadline: float) -> CallContext:
        return CallContext(
            self.rec.request_id,
            forward_headers={h: v for h in _FORWARDED if (v := self.http.headers.get(h))},
            deadline=deadline,
        )

    def _request(self, body: Mapping[str, Any], route: Route) -> Request:
        if self._parsed is None:
            self._parsed = self.dialect.parse(body)
        return route.prepare(self._parsed)

    def _body_for(self, route: Route, body: Mapping[str, Any]) -> dict[str, Any]:
        out = route.prepare_body(body, self.dialect.wire)
        if (
            self.principal is not None
            and self.principal.token_limited
            and "max_tokens" not in out
            and "max_completion_tokens" not in out
        ):
            # A key with token limits reserved max_tokens for this call: bound it for real.
            out["max_tokens"] = route.default_max_tokens
        return out

    def _served_by(self, route: Route) -> None:
        relay = route.provider.native_wire == self.dialect.wire
        self.rec.provider, self.rec.upstream_model = route.provider_name, route.model
        self.rec.path = "relay" if relay else "translate"

    def _attempt_failed(self, attempt: Attempt) -> None:
        err = attempt.error
        self.rec.attempts.append(
            AttemptRecord(
                provider=attempt.route.provider_name,
                upstream_model=attempt.route.model,
                status=self.dialect.error(err, self.rec.request_id)[0],
                error_type=err.kind,
                latency_ms=attempt.latency_ms,
                started_at=attempt.started_at,
                upstream=err.upstream,
            )
        )
        log.warning(
            "attempt failed",
            extra={
                "request_id": self.rec.request_id,
                "deployment": attempt.route.deployment,
                "error": err.kind,
                "detail": err.detail or err.message,
            },
        )

    # -------------------------------------------------------------------- endings

    def _fail(self, err: MeridianError) -> HttpResponse:
        if isinstance(err, ClientClosed):
            return self._gone()
        status, payload = self.dialect.error(err, self.rec.request_id)
        self.rec.status, self.rec.error_type = status, err.kind
        self.rec.upstream_error = err.upstream
        if err.detail:
            log.info(
                "call failed",
                extra={"request_id": self.rec.request_id, "error": err.kind, "detail": err.detail},
            )
        self._finish(Usage())
        headers = {**self.headers, **err.headers()}
        if not self.body_read:
            # The rest of the body is still on its way: reading it only to drop it would let
            # a caller with no key keep the connection (and this process) busy.
            headers["connection"] = "close"
        return HttpResponse(orjson.dumps(payload), status, headers, media_type="application/json")

    def _gone(self) -> HttpResponse:
        """The client left (or its body timed out, answered 408 by the HTTP layer)."""
        if self.watch is not None and self.watch.timed_out:
            self.rec.status, self.rec.error_type = 408, "request_timeout"
        else:
            self.rec.status, self.rec.error_type = 499, "client_disconnected"
        self._finish(self._usage_so_far())
        return HttpResponse(status_code=self.rec.status)  # nobody will read it

    def _usage_so_far(self) -> Usage:
        """A call cut short: what the upstream reported, and at least what was seen."""
        usage = self.usage
        seen = self.produced_chars // CHARS_PER_TOKEN
        if seen > usage.output_tokens:
            usage = replace(usage, output_tokens=seen)
        return usage

    def _finish(self, usage: Usage) -> None:
        """Account for the call, exactly once however it ended."""
        if self._finished:
            return
        self._finished = True
        gw = self.gw
        gw.calls.discard(self)
        if self.gen is not None:
            gw.generations.leave(self.gen)
        if self.watch is not None:
            self.watch.on_disconnect = None
        if gw.metrics is not None:
            gw.metrics.in_flight_dec(self.dialect.wire)
        if usage.cost_usd is None and gw.prices is not None:
            usage = replace(usage, cost_usd=gw.prices.estimate(self.rec.upstream_model, usage))
        self.rec.usage = usage
        self.rec.latency_ms = (time.perf_counter() - self.t0) * 1000
        if self.principal is not None and gw.admission is not None:
            gw.admission.settle(self.principal, self.ticket, usage)
        for observer in gw.observers:
            try:
                observer.record(self.rec)
            except Exception:
                log.exception("observer failed", extra={"request_id": self.rec.request_id})

    # -------------------------------------------------------------------- plain answers

    async def _complete(self, route: Route, deadline: float) -> Relay | Response:
        body = self.body
        ctx = self._ctx(deadline)
        if route.provider.native_wire == self.dialect.wire:
            return await route.provider.relay(self._body_for(route, body), ctx)
        collector = Collector()
        async with aclosing(route.provider.stream(self._request(body, route), ctx)) as events:
            async for event in events:
                collector.feed(event)
        return collector.response()

    def _answer(self, route: Route, result: Relay | Response) -> HttpResponse:
        self.committed = True
        headers = {**self.headers, "x-meridian-deployment": route.deployment}
        if isinstance(result, Relay):
            assert result.body is not None
            self._finish(result.usage)
            return HttpResponse(
                result.body, 200, {**result.headers, **headers}, media_type=result.content_type
            )
        self._finish(result.usage)
        payload = orjson.dumps(self.dialect.render(result, self.rec.alias or route.alias))
        return HttpResponse(payload, 200, headers, media_type="application/json")

    # -------------------------------------------------------------------- streams

    async def _open_stream(
        self, route: Route, deadline: float
    ) -> tuple[Pump[Any], Relay | list[Event]]:
        """Start a stream and wait for its first real event (the commit point): an error
        before it can still be fallen back from."""
        body = self.body
        ctx = self._ctx(deadline)
        keepalive = self.gen.keepalive_s if self.gen else 15.0
        name = f"provider `{route.provider_name}`"
        if route.provider.native_wire == self.dialect.wire:
            relay = await route.provider.relay(self._body_for(route, body), ctx)
            assert relay.chunks is not None
            pump: Pump[Any] = Pump(relay.chunks, name=name, keepalive_s=keepalive)
            self.pump = pump
            try:
                first = await self._first(pump)
            except BaseException:
                await pump.aclose()
                raise
            pump.push_front(first)
            return self._started(pump, route), relay
        source = route.provider.stream(self._request(body, route), ctx)
        pump = Pump(source, name=name, keepalive_s=keepalive)
        self.pump = pump
        head: list[Event] = []
        try:
            while True:
                event = await self._first(pump)
                head.append(event)
                if not isinstance(event, MessageStart):
                    break
        except BaseException:
            await pump.aclose()
            raise
        return self._started(pump, route), head

    async def _first(self, pump: Pump[Any]) -> Any:
        while (item := await pump.get()) is IDLE:
            pass
        if item is None:
            raise ApiError(
                f"{pump.name}: the upstream ended the stream without an answer", status=502
            )
        return item

    def _started(self, pump: Pump[Any], route: Route) -> Pump[Any]:
        pump.idle_s = route.timeouts.idle_s
        pump.deadline = self.deadline
        return pump

    def _stream_response(
        self, route: Route, pump: Pump[Any], head: Relay | list[Event], body: Mapping[str, Any]
    ) -> HttpResponse:
        self.committed = True
        headers = {**self.headers, "x-meridian-deployment": route.deployment}
        if isinstance(head, Relay):
            relay = head
            return SSEResponse(
                self._relay_body(pump, relay),
                {**relay.headers, **headers},
                on_close=lambda: self._stream_done(pump),
            )
        return SSEResponse(
            self._translate_body(pump, head, body),
            headers,
            on_close=lambda: self._stream_done(pump),
        )

    async def _relay_body(self, pump: Pump[bytes], relay: Relay) -> AsyncIterator[bytes]:
        try:
            while (chunk := await pump.get()) is not None:
                self.usage, self.produced_chars = relay.usage, relay.produced_chars
                if isinstance(chunk, Idle):
                    if not relay.finished:  # no keep-alive after the terminal event
                        yield self.dialect.keepalive
                    continue
                if self.rec.ttft_ms is None and relay.first_token:
                    self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000
                yield chunk
            self.usage, self.produced_chars = relay.usage, relay.produced_chars
        except MeridianError as err:
            self.usage, self.produced_chars = relay.usage, relay.produced_chars
            yield self._stream_failed(err)
        except Exception:
            log.exception("relay failed", extra={"request_id": self.rec.request_id})
            yield self._stream_failed(
                ApiError(f"internal error (request id {self.rec.request_id})")
            )
        finally:
            await self._stream_done(pump)

    async def _translate_body(
        self, pump: Pump[Event], head: list[Event], body: Mapping[str, Any]
    ) -> AsyncIterator[bytes]:
        encoder = self.dialect.encoder(self.rec.alias or "", body)
        ended = False
        try:
            for event in head:
                out = self._encode(encoder, event)
                if out:
                    yield out
            while (item := await pump.get()) is not None:
                if isinstance(item, Idle):
                    if not ended:
                        yield self.dialect.keepalive
                    continue
                ended = ended or isinstance(item, MessageStop)
                out = self._encode(encoder, item)
                if out:
                    yield out
        except MeridianError as err:
            yield self._stream_failed(err, encoder)
        except Exception:
            log.exception("stream failed", extra={"request_id": self.rec.request_id})
            yield self._stream_failed(
                ApiError(f"internal error (request id {self.rec.request_id})"), encoder
            )
        finally:
            await self._stream_done(pump)

    def _encode(self, encoder: Any, event: Event) -> bytes:
        if isinstance(event, MessageStart | MessageDelta):
            self.usage = self.usage.merge(event.usage)
        elif isinstance(event, BlockDelta):
            if self.rec.ttft_ms is None:
                self.rec.ttft_ms = (time.perf_counter() - self.t0) * 1000
            delta = event.delta
            if isinstance(delta, TextDelta):
                self.produced_chars += len(delta.text)
            elif isinstance(delta, ThinkingDelta):
                self.produced_chars += len(delta.thinking)
            elif isinstance(delta, JsonDelta):
                self.produced_chars += len(delta.partial_json)
        out: bytes = encoder.feed(event)
        return out

    def _stream_failed(self, err: MeridianError, encoder: Any = None) -> bytes:
        self.rec.status, self.rec.error_type = err.status, err.kind
        self.rec.upstream_error = err.upstream
        if err.detail:
            log.info(
                "stream failed",
                extra={"request_id": self.rec.request_id, "error": err.kind, "detail": err.detail},
            )
        enc = encoder or self.dialect.encoder(self.rec.alias or "", {})
        return self.dialect.stream_error(enc, err, self.rec.request_id)

    async def _stream_done(self, pump: Pump[Any]) -> None:
        """Close the source and account for the call. Runs from the body's ``finally``, or,
        if the client left before the body started, from the response's ``on_close``."""
        if self._finished:
            return
        finished = pump.finished
        await pump.aclose()
        if self.rec.error_type is None and (self.client_gone or not finished):
            # The client went away mid-stream (nginx's 499: client closed request).
            self.rec.status, self.rec.error_type = 499, "client_disconnected"
            self._finish(self._usage_so_far())
            return
        self._finish(self.usage)
