"""One API call, for any operation and either family: the core, without HTTP.

    admit: shed if too many calls are in flight → authenticate
    answer(body): check → scope → the deployments that can serve it → reserve the estimated
      cost against the key's limits → the router's attempts, under the call's deadline:
        ├─ the operation is one the upstream serves itself: relay (`meridian.prepare.body`,
        │  the caller's JSON, bytes relayed as they come)
        └─ a generative operation it does not: parse → canonical Request
           (`meridian.prepare.request`) → provider.stream() → encode for the client
    → one CallRecord (with its failed attempts) to every observer, the reservation settled

`meridian.http.api` is the HTTP adapter (reads the body, renders the answer, hears the
client leave); ``meridian check --live`` and tests drive this core directly. Errors before
the answer begins are raised (the adapter renders them in the caller's envelope with
`Call.fail`); after it, a stream ends with an error event in the caller's format. A stream
commits to its deployment at its first real event, so an upstream that answers 200 and then
an error is fallen back from like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from meridian import estimate, prepare
from meridian.auth import Principal
from meridian.calls import streams
from meridian.calls.gateway import Gateway, new_request_id
from meridian.calls.streams import Answer, Streamed
from meridian.dialects import Endpoint
from meridian.errors import ClientClosed, InvalidRequest, MeridianError, Overloaded
from meridian.generation import Generation
from meridian.http.protocol import Watch
from meridian.model import (
    DocumentBlock,
    Event,
    ImageBlock,
    Request,
    Response,
    Usage,
)
from meridian.providers.base import GENERATIVE, CallContext, RelayedBody, RelayedStream
from meridian.records import AttemptRecord, CallRecord
from meridian.router import Attempt, Route
from meridian.streaming import Pump

log = logging.getLogger("meridian.calls")

_FORWARDED = ("anthropic-version", "anthropic-beta")
# A client shed for load is asked to come back after this many seconds.
SHED_RETRY_AFTER_S = 1.0
SHUTTING_DOWN = "meridian is shutting down; retry"


@dataclass(frozen=True, slots=True)
class Served:
    """How one deployment serves this call's operation."""

    route: Route
    relay: bool  # the upstream's own endpoint, bytes relayed; else the canonical model


class Call:
    def __init__(
        self,
        gw: Gateway,
        endpoint: Endpoint,
        *,
        path: str,
        headers: Mapping[str, str],
        watch: Watch | None = None,
    ) -> None:
        self.gw = gw
        self.endpoint = endpoint
        self.errors = endpoint.errors
        self.request_headers = headers
        self.t0 = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0
        self.rec = CallRecord(
            request_id=new_request_id(),
            started_at=time.time(),
            surface=endpoint.family,
            endpoint=path,
        )
        self.headers = {"x-request-id": self.rec.request_id, "request-id": self.rec.request_id}
        self.principal: Principal | None = None
        self.ticket: Any = None
        self.watch = watch
        self.task: asyncio.Task[Any] | None = None
        self.body: dict[str, Any] = {}
        self._parsed: Request | None = None
        # How each deployment serves this call: relayed (True) or translated (False).
        self.relayed: dict[Route, bool] = {}
        self.pump: Pump[Any] | None = None
        self.committed = False  # the answer began: the response is on its way
        self.client_gone = False
        self.shutting_down = False
        self.finished = False
        self.usage = Usage()  # of a stream, as it goes
        self.produced_chars = 0
        gw.calls.add(self)
        if gw.metrics is not None:
            gw.metrics.in_flight_inc(endpoint.family)
        self.gen: Generation = gw.generations.enter()
        if watch is not None:
            watch.on_disconnect = self.client_left

    # -------------------------------------------------------------------- the call

    async def admit(self) -> Principal:
        """Shed when too many calls are in flight or meridian is stopping; authenticate."""
        gen, gw = self.gen, self.gw
        if len(gw.calls) > gen.max_in_flight:
            raise Overloaded(
                f"meridian is answering {gen.max_in_flight} requests, its limit "
                "(server.http.max_in_flight); retry shortly",
                retry_after=SHED_RETRY_AFTER_S,
            )
        if gw.closing:
            raise Overloaded(SHUTTING_DOWN, retry_after=1)
        principal = await gen.authenticator.authenticate(self.request_headers)
        self.principal = principal
        self.rec.key_name, self.rec.key_id = principal.name, principal.key_id
        return principal

    async def answer(self, body: dict[str, Any]) -> Answer | Streamed:
        """The answer to ``body``, or a `MeridianError` raised before it began."""
        gw, gen, principal = self.gw, self.gen, self.principal
        assert principal is not None, "admit() first"
        self.body = body
        if gw.request_log is not None:
            gw.request_log.body(self.rec.request_id, "request", body)
        alias, stream = self.endpoint.check(body)
        self.rec.alias, self.rec.stream = alias, stream
        principal.check_model(alias)
        op = self.endpoint.op
        served = self._serving(gen.router.resolve(alias))
        policy = gen.router.policy(alias)
        self.deadline = self.loop.time() - (time.perf_counter() - self.t0) + policy.timeout_s
        if op == "count_tokens" and not served[0].relay:
            return self._estimated_count(served[0].route)
        if gw.admission is not None and principal.key_id is not None and op != "count_tokens":
            # The master key has no limits; counting tokens costs nothing.
            reserve = self._estimate(body, served) if principal.token_limited else {}
            self.ticket = await gw.admission.admit(principal, alias, **reserve)
        self.relayed = {s.route: s.relay for s in served}
        routes = tuple(s.route for s in served)
        if stream:
            route, (pump, head) = await gen.router.run(
                routes,
                self._open_stream,
                deadline=self.deadline,
                policy=policy,
                on_failure=self._attempt_failed,
                on_start=self._served_by,
            )
            return streams.streamed(self, route, pump, head)
        route, result = await gen.router.run(
            routes,
            self._complete,
            deadline=self.deadline,
            policy=policy,
            on_failure=self._attempt_failed,
            on_start=self._served_by,
        )
        return self._answered(route, result)

    def fail(self, err: MeridianError) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Account for a call that ended with ``err`` before its answer began: (status,
        the caller's error envelope, headers). A `ClientClosed` has no one to answer."""
        if isinstance(err, ClientClosed):
            self.gone()
            return self.rec.status, {}, {}
        status, payload = self.errors.error(err, self.rec.request_id)
        self.rec.status, self.rec.error_type = status, err.kind
        self.rec.upstream_error = err.upstream
        if err.detail:
            log.info(
                "call failed",
                extra={"request_id": self.rec.request_id, "error": err.kind, "detail": err.detail},
            )
        self.finish(Usage())
        return status, payload, {**self.headers, **err.headers()}

    def gone(self) -> None:
        """The client left (or its body timed out, answered 408 by the HTTP layer)."""
        if self.watch is not None and self.watch.timed_out:
            self.rec.status, self.rec.error_type = 408, "request_timeout"
        else:
            self.rec.status, self.rec.error_type = 499, "client_disconnected"
        self.finish(streams.usage_so_far(self))

    def client_left(self) -> None:
        """The client's connection is gone (called by the HTTP layer): stop at once."""
        self.client_gone = True
        if self.committed:
            if self.pump is not None:
                self.pump.stop()
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def stop_for_shutdown(self) -> None:
        if self.finished:
            return
        self.shutting_down = True
        if self.committed:
            if self.pump is not None:
                self.pump.stop(Overloaded(SHUTTING_DOWN, retry_after=1))
        elif self.task is not None and not self.task.done():
            self.task.cancel()

    def finish(self, usage: Usage) -> None:
        """Account for the call, exactly once however it ended."""
        if self.finished:
            return
        self.finished = True
        gw = self.gw
        gw.calls.discard(self)
        gw.generations.leave(self.gen)
        if self.watch is not None:
            self.watch.on_disconnect = None
        if gw.metrics is not None:
            gw.metrics.in_flight_dec(self.endpoint.family)
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

    # -------------------------------------------------------------------- which deployment

    def _serving(self, routes: tuple[Route, ...]) -> list[Served]:
        """The deployments that can serve this operation, in order, each with its path; a
        400 naming why when none can."""
        op = self.endpoint.op
        served: list[Served] = []
        why: str | None = None
        for route in routes:
            caps = route.provider.capabilities
            if op in caps.native:
                served.append(Served(route, relay=True))
            elif op in GENERATIVE and caps.generates:
                lacking = self._lacking(route)
                if lacking is None:
                    served.append(Served(route, relay=False))
                else:
                    why = why or lacking
            elif op == "count_tokens":
                served.append(Served(route, relay=False))  # estimated
            else:
                why = why or (
                    f"model {route.alias!r} is served by provider `{route.provider_name}`, which "
                    f"has no {op} endpoint"
                )
        if not served:
            raise InvalidRequest(why or f"nothing serves {op}", param="model")
        return served

    def _lacking(self, route: Route) -> str | None:
        """What this request needs that the deployment cannot do, in words; None if none."""
        request = self._canonical()
        caps = route.provider.capabilities
        name = f"provider `{route.provider_name}`"
        if request.tools and not caps.tools:
            return f"{name} cannot call tools"
        fmt = request.response_format
        structured = fmt is not None and fmt.get("type") in ("json_schema", "json_object")
        if structured and not caps.structured_output:
            return (
                f"{name} has no structured output (a JSON schema the upstream enforces): "
                "use a model served by OpenAI, Anthropic or an OpenAI-compatible server"
            )
        blocks = [b for m in request.messages for b in m.content]
        if not caps.vision and any(isinstance(b, ImageBlock) for b in blocks):
            return f"{name} cannot read images"
        if not caps.documents and any(isinstance(b, DocumentBlock) for b in blocks):
            return f"{name} cannot read documents"
        return None

    def _canonical(self) -> Request:
        if self._parsed is None:
            dialect = self.endpoint.dialect
            assert dialect is not None
            self._parsed = dialect.parse(self.body)
        return self._parsed

    def _estimate(self, body: Mapping[str, Any], served: list[Served]) -> dict[str, Any]:
        """The reservation a key with token limits makes: input (estimated) + the output
        bound every deployment would be sent (the largest)."""
        asked = prepare.output_asked(self.endpoint.op, body)
        output = max(prepare.max_tokens(asked, s.route) for s in served)
        tokens = estimate.input_tokens(body) + output
        usd = 0.0
        if self.gw.prices is not None:
            for s in served:
                cost = self.gw.prices.estimate(
                    s.route.model, Usage(input_tokens=tokens - output, output_tokens=output)
                )
                usd = max(usd, cost or 0.0)
        return {"tokens": tokens, "usd": usd}

    def _estimated_count(self, route: Route) -> Answer:
        """``count_tokens`` for an upstream with no counter of its own: the estimate."""
        self.rec.provider, self.rec.upstream_model = route.provider_name, route.model
        self.rec.path = "estimate"
        self.committed = True
        count = estimate.input_tokens(self.body)
        self.finish(Usage())
        headers = {**self.headers, "x-meridian-token-count": "estimate"}
        return Answer(orjson.dumps({"input_tokens": count}), headers)

    # -------------------------------------------------------------------- attempts

    def context(self, deadline: float) -> CallContext:
        headers = self.request_headers
        return CallContext(
            self.rec.request_id,
            forward_headers={h: v for h in _FORWARDED if (v := headers.get(h))},
            deadline=deadline,
            caller=self.principal.caller if self.principal is not None else None,
        )

    def request_for(self, route: Route) -> Request:
        """The canonical request as ``route`` gets it."""
        return prepare.request(self._canonical(), route)

    def relay_body(self, route: Route) -> dict[str, Any]:
        """The pass-through body as ``route`` gets it."""
        principal = self.principal
        # A key with token limits reserved an output bound for this call: send it for real.
        bound = principal is not None and principal.token_limited
        return prepare.body(self.endpoint.op, self.body, route, bound_output=bound)

    def _served_by(self, route: Route) -> None:
        self.rec.provider, self.rec.upstream_model = route.provider_name, route.model
        self.rec.path = "relay" if self.relayed[route] else "translate"

    def _attempt_failed(self, attempt: Attempt) -> None:
        err = attempt.error
        self.rec.attempts.append(
            AttemptRecord(
                provider=attempt.route.provider_name,
                upstream_model=attempt.route.model,
                status=self.errors.error(err, self.rec.request_id)[0],
                error_type=err.kind,
                latency_ms=attempt.latency_ms,
                started_at=attempt.started_at,
                upstream=err.upstream,
            )
        )

    async def _open_stream(
        self, route: Route, deadline: float
    ) -> tuple[Pump[Any], RelayedStream | list[Event]]:
        return await streams.open_stream(self, route, deadline)

    async def _complete(self, route: Route, deadline: float) -> RelayedBody | Response:
        ctx = self.context(deadline)
        if self.relayed[route]:
            result = await route.provider.relay(self.endpoint.op, self.relay_body(route), ctx)
            assert isinstance(result, RelayedBody)
            return result
        return await route.provider.complete(self.request_for(route), ctx)

    def _answered(self, route: Route, result: RelayedBody | Response) -> Answer:
        self.committed = True
        headers = {**self.headers, "x-meridian-deployment": route.deployment}
        if isinstance(result, RelayedBody):
            self.finish(result.usage)
            return Answer(result.body, {**result.headers, **headers}, result.content_type)
        self.finish(result.usage)
        dialect = self.endpoint.dialect
        assert dialect is not None
        # The model that answered, as the upstream named it: the same on every path.
        payload = dialect.render(result, result.model or route.model, self.body)
        return Answer(orjson.dumps(payload), {**headers, **streams.translated_headers(self)})
