"""The ASGI app: routes for both API families on every listener, and a lifespan that owns
the providers, the store and the observers (started once, closed on shutdown, in order)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from meridian import catalog, dialects
from meridian.auth import presented_key
from meridian.calls import Gateway, new_request_id
from meridian.dialects import Endpoint
from meridian.errors import InvalidRequest as BadRequest
from meridian.errors import MeridianError, NotFound
from meridian.http import api
from meridian.records import CallRecord
from meridian.runtime import Runtime
from meridian.wire import anthropic as anthropic_wire
from meridian.wire import openai_chat as openai_wire
from meridian.wire.models import ModelInfo

# /v1/models shows one creation time for every alias: when this process started.
_STARTED = int(time.time())


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status, dict(headers or {}), media_type="application/json"
    )


def _error(request: Request, err: MeridianError) -> Response:
    request_id = new_request_id()
    status, payload = dialects.for_request(request.url.path, request.headers).error(err, request_id)
    return _json(payload, status, {"x-request-id": request_id, **err.headers()})


def create_app(runtime: Runtime, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    gw: Gateway = runtime.gateway

    def endpoint(ep: Endpoint) -> Any:
        async def handler(request: Request) -> Response:
            return await api.handle(gw, ep, request)

        return handler

    async def list_models(request: Request) -> Response:
        gen = gw.current
        try:
            principal = await gen.authenticator.authenticate(request.headers)
        except MeridianError as err:
            return _error(request, err)
        models = [_model_info(gw, a) for a in gen.router.aliases if principal.may_use(a)]
        if dialects.for_headers(request.headers) is dialects.ANTHROPIC:
            q = request.query_params
            try:
                limit = min(max(int(q.get("limit", "20")), 1), 1000)
            except ValueError:
                return _error(request, BadRequest("`limit` must be an integer", param="limit"))
            page = anthropic_wire.models_page(
                models, limit=limit, after_id=q.get("after_id"), before_id=q.get("before_id")
            )
            return _json(page)
        return _json(openai_wire.models_list(models))

    async def get_model(request: Request) -> Response:
        gen = gw.current
        try:
            principal = await gen.authenticator.authenticate(request.headers)
            alias = request.path_params["model"]
            if alias not in gen.router.aliases or not principal.may_use(alias):
                raise NotFound(
                    f"model {alias!r} does not exist", param="model", code="model_not_found"
                )
        except MeridianError as err:
            return _error(request, err)
        info = _model_info(gw, alias)
        if dialects.for_headers(request.headers) is dialects.ANTHROPIC:
            return _json(anthropic_wire.model_object(info))
        return _json(openai_wire.model_object(info))

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(request: Request) -> Response:
        ok, details = await runtime.readiness()
        status = 200 if ok else 503
        if not gw.current.authenticator.is_master(presented_key(request.headers)):
            # Without the master key: the verdict only. Provider reasons, deployments and
            # the ledger's error are for the operator.
            return _json({"status": details["status"]}, status)
        return _json(details, status)

    async def root(request: Request) -> Response:
        if any(getattr(r, "path", None) == "/ui" for r in extra_routes):
            # A relative location, never one built from the Host header.
            return Response(status_code=307, headers={"location": "/ui"})
        return _json({"service": "meridian", "health": "/health", "ready": "/ready"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 405:
            err: MeridianError = BadRequest(
                f"method {request.method} is not allowed on {path}", status=405
            )
            response = _error(request, err)
            allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
            response.headers["allow"] = allowed
        else:
            served = "; meridian serves: " + ", ".join(SERVED) if path.startswith("/v1/") else ""
            response = _error(
                request, NotFound(f"no such endpoint: {request.method} {path}{served}")
            )
        _count(gw, request, response.status_code)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if runtime.store is not None:
                runtime.store.open()
                stack.callback(runtime.store.close)
            for closer in runtime.closers:
                stack.push_async_callback(closer)
            for starter in runtime.starters:
                await starter()
            # Observers close after providers (LIFO): in-flight calls finish recording first.
            for observer in gw.observers:
                await observer.start()
                stack.push_async_callback(observer.aclose)
            await gw.current.start()
            stack.push_async_callback(gw.generations.aclose)
            for hook in runtime.after_start:
                await hook()
            yield

    openai_endpoints = (
        ("/chat/completions", dialects.CHAT),
        ("/responses", dialects.RESPONSES_ENDPOINT),
        ("/embeddings", dialects.EMBEDDINGS),
        ("/completions", dialects.COMPLETIONS),
    )
    # The busiest first: Starlette tries them in order.
    routes: list[BaseRoute] = [
        Route("/v1/chat/completions", endpoint(dialects.CHAT), methods=["POST"]),
        Route("/v1/messages", endpoint(dialects.MESSAGES), methods=["POST"]),
        Route("/v1/messages/count_tokens", endpoint(dialects.COUNT_TOKENS), methods=["POST"]),
        *(Route("/v1" + path, endpoint(ep), methods=["POST"]) for path, ep in openai_endpoints[1:]),
        # For clients configured without /v1 in their base URL.
        *(Route(path, endpoint(ep), methods=["POST"]) for path, ep in openai_endpoints),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/", root, methods=["GET"]),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    # Starlette would answer "/v1/messages/" with a redirect built from the Host header (an
    # open redirect for whoever sets it); the HTTP layer drops the slash instead.
    app.router.redirect_slashes = False
    return app


# What the 404 of an unknown /v1/ path lists.
SERVED = (
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/chat/completions",
    "POST /v1/responses",
    "POST /v1/embeddings",
    "POST /v1/completions",
    "GET /v1/models",
)


def _count(gw: Gateway, request: Request, status: int) -> None:
    """A request no route took: one log line and a count in /metrics like any other (not a
    ledger row: it reached no model, and a scanner must not fill the ledger)."""
    rec = CallRecord(
        request_id=new_request_id(),
        started_at=time.time(),
        surface=dialects.for_request(request.url.path, request.headers).family,
        endpoint=request.url.path[:200],
        status=status,
        error_type="not_found" if status == 404 else "method_not_allowed",
    )
    for observer in gw.unrouted:
        observer.record(rec)


def _model_info(gw: Gateway, alias: str) -> ModelInfo:
    """What /v1/models says of an alias: its first deployment's model as meridian's catalog
    knows it, what the provider serving it can carry, and the config's overrides."""
    gen = gw.current
    route = gen.router.routes_for(alias)[0]
    deployment = gen.settings.deployments(alias)[0]
    lim = catalog.limits(route.model)
    caps = route.provider.capabilities
    own = deployment.capabilities

    def said(override: bool | None, known: bool) -> bool:
        return known if override is None else override

    return ModelInfo(
        id=alias,
        display_name=catalog.display_name(alias),
        created=_STARTED,
        max_input_tokens=deployment.max_input_tokens or lim.context,
        max_tokens=route.max_output_tokens,
        owned_by=route.provider_name,
        vision=said(own.image_input, lim.vision and caps.vision),
        pdf=said(own.pdf_input, lim.pdf and caps.documents),
        thinking=said(own.thinking, lim.thinking and caps.thinking),
        effort=said(own.effort, lim.effort and caps.thinking),
        structured_output=said(
            own.structured_outputs, lim.structured_output and caps.structured_output
        ),
    )
