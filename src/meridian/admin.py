"""The admin API, for the master key only.

    GET    /admin/keys                 {"data": [key, ...]}
    POST   /admin/keys                 201 {"secret": "mk-...", ...key}   (the secret, once)
    GET    /admin/keys/{name}          key
    DELETE /admin/keys/{name}          key (revoked)
    POST   /admin/keys/{name}/rotate   {"secret": "mk-...", ...key}
    POST   /admin/reload               {"generation": n, "models": [...], "needs_restart": [...]}

A key is `KeyInfo.as_dict`. The POST body takes the fields of ``meridian keys create``:
``name``, ``models`` (a list, or "a,b"), ``rpm``, ``tpm``, ``max_parallel``,
``budget_tokens_month``, ``budget_usd_month``, ``expires`` ("90d", "12h", "2027-01-01").
No key or a wrong one is a 401, a client key a 403. Every error, whatever went wrong (an
invalid body, a value out of bounds, a failed reload, even a bug), is
``{"error": {"type", "message"}}`` with its status: never a traceback or plain text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meridian.auth import Authenticator
from meridian.errors import (
    ApiError,
    ClientClosed,
    InvalidRequest,
    MeridianError,
    PermissionDenied,
)
from meridian.http.body import parse_object, read_body
from meridian.keys import KeyStore, parse_expires
from meridian.runtime import ReloadError, Runtime

log = logging.getLogger("meridian.admin")

MAX_BODY = 64 * 1024
MAX_DEPTH = 8  # a key is a flat object with one list in it
_FIELDS = (
    "name",
    "models",
    "rpm",
    "tpm",
    "max_parallel",
    "budget_tokens_month",
    "budget_usd_month",
    "expires",
)

Handler = Callable[[Request], Awaitable[Response]]


def _error_type(exc: MeridianError) -> str:
    return exc.kind if exc.kind in ("api_error", "request_too_large") else f"{exc.kind}_error"


def error_response(exc: MeridianError) -> JSONResponse:
    body = {"error": {"type": _error_type(exc), "message": exc.message}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers())


async def _read_json(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request.stream(), MAX_BODY, request.headers.get("content-length"))
    except ClientDisconnect:
        raise ClientClosed("the client went away") from None
    body = parse_object(raw or b"{}", MAX_DEPTH)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}; expected: {', '.join(_FIELDS)}"
        )
    return body


def _create_args(body: dict[str, Any], now: float) -> dict[str, Any]:
    if "name" not in body:
        raise InvalidRequest("name: required", param="name")
    models = body.get("models")
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    expires = body.get("expires")
    if expires is not None and not isinstance(expires, str):
        raise InvalidRequest(
            f"expires: expected a string such as 90d or 2027-01-01, got {expires!r}",
            param="expires",
        )
    return {
        "name": body["name"],
        "models": models,
        "rpm": body.get("rpm"),
        "tpm": body.get("tpm"),
        "max_parallel": body.get("max_parallel"),
        "budget_tokens_month": body.get("budget_tokens_month"),
        "budget_usd_month": body.get("budget_usd_month"),
        "expires_at": None if expires is None else parse_expires(expires, now),
    }


def routes(
    authenticator: Callable[[], Authenticator], keys: KeyStore, runtime: Runtime | None = None
) -> list[Route]:
    """The admin routes; ``authenticator()`` is the current one (a reload may change the
    master key)."""

    def master_only(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                principal = await authenticator().authenticate(request.headers)
                if not principal.is_master:
                    raise PermissionDenied(
                        f"key {principal.name!r} is a client key: the admin API takes the "
                        "master key"
                    )
                return await handler(request)
            except MeridianError as exc:
                return error_response(exc)
            except Exception:
                log.exception("admin request failed", extra={"path": request.url.path})
                return error_response(ApiError("internal error; see meridian's log"))

        return guarded

    async def list_keys(request: Request) -> Response:
        infos = await asyncio.to_thread(keys.list)
        now = keys.clock()
        return JSONResponse({"data": [info.as_dict(now) for info in infos]})

    async def create_key(request: Request) -> Response:
        body = await _read_json(request)
        args = _create_args(body, keys.clock())
        name = args.pop("name")
        secret, info = await asyncio.to_thread(lambda: keys.create(name, **args))
        return JSONResponse({"secret": secret, **info.as_dict(keys.clock())}, status_code=201)

    async def get_key(request: Request) -> Response:
        info = await asyncio.to_thread(keys.get, request.path_params["name"])
        return JSONResponse(info.as_dict(keys.clock()))

    async def revoke_key(request: Request) -> Response:
        info = await asyncio.to_thread(keys.revoke, request.path_params["name"])
        return JSONResponse(info.as_dict(keys.clock()))

    async def rotate_key(request: Request) -> Response:
        name = request.path_params["name"]
        secret = await asyncio.to_thread(keys.rotate, name)
        info = await asyncio.to_thread(keys.get, name)
        return JSONResponse({"secret": secret, **info.as_dict(keys.clock())})

    async def reload(request: Request) -> Response:
        if runtime is None:
            raise InvalidRequest("reload is not available in this process")
        try:
            gen, pending = await runtime.reload()
        except ReloadError as exc:
            raise InvalidRequest(f"the configuration was not reloaded: {exc}") from None
        if runtime.on_admin_reload is not None:
            runtime.on_admin_reload()
        return JSONResponse(
            {
                "generation": gen.number,
                "source": gen.settings.source,
                "models": gen.router.aliases,
                "needs_restart": pending,
            }
        )

    return [
        Route("/admin/keys", master_only(list_keys), methods=["GET"]),
        Route("/admin/keys", master_only(create_key), methods=["POST"]),
        Route("/admin/keys/{name}", master_only(get_key), methods=["GET"]),
        Route("/admin/keys/{name}", master_only(revoke_key), methods=["DELETE"]),
        Route("/admin/keys/{name}/rotate", master_only(rotate_key), methods=["POST"]),
        Route("/admin/reload", master_only(reload), methods=["POST"]),
    ]
