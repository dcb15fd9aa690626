"""The operator's dashboard: ``/ui`` and its JSON under ``/ui/api/``.

The page and its assets (``meridian/static/``: one HTML file, one script, one stylesheet,
no build step, charts drawn as SVG by the script) are public: they hold no data. Every
``/ui/api/`` call needs the master key as ``x-api-key`` (or ``Authorization: Bearer``). The
page asks for it in a login form (or takes it from the URL fragment, ``/ui#key=...``, which
never reaches the server or its logs) and keeps it in ``sessionStorage``: no cookie, so no
other site can make the browser send it.

``GET /ui/api/overview?window=24h`` returns one consistent snapshot: totals, providers and
their state, requests and tokens over time per alias and per key, latency percentiles,
usage per key, recent errors. Queries run in a worker thread (sqlite3 is synchronous).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from meridian.auth import presented_key
from meridian.ledger import (
    SummaryRow,
    latency_percentiles,
    recent_errors,
    usage_series,
    usage_summary,
)
from meridian.metrics import Metrics
from meridian.runtime import Runtime
from meridian.storage import Store

# window -> (seconds, bucket seconds): 48-96 buckets per chart.
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (86_400, 900),
    "7d": (7 * 86_400, 7200),
    "30d": (30 * 86_400, 43_200),
}
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
_NO_STORE = {"cache-control": "no-store"}


def _asset(name: str) -> bytes:
    return resources.files("meridian").joinpath("static", name).read_bytes()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload),
        status,
        {**_NO_STORE, "x-content-type-options": "nosniff"},
        media_type="application/json",
    )


def routes(
    store: Store,
    runtime: Runtime,
    metrics: Metrics | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> list[BaseRoute]:
    """``/ui``, ``/ui/static/{name}`` and ``/ui/api/overview``; add them to the app. What it
    shows of providers and deployments is the current generation's."""
    page = _asset("index.html")
    assets = {name: (_asset(name), media) for name, media in _ASSETS.items()}

    async def index(request: Request) -> Response:
        return Response(page, headers={**_SECURITY_HEADERS, **_NO_STORE}, media_type="text/html")

    async def static(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return Response(b"not found", 404, media_type="text/plain")
        body, media = found
        # Short cache: assets change with the installed version, and the URLs carry none.
        return Response(body, headers={"cache-control": "max-age=300"}, media_type=media)

    async def overview(request: Request) -> Response:
        if not runtime.current.authenticator.is_master(presented_key(request.headers)):
            return _json({"error": "the master key is required"}, 401)
        window = request.query_params.get("window", "24h")
        if window not in WINDOWS:
            return _json({"error": f"window must be one of {', '.join(WINDOWS)}"}, 400)
        span, step = WINDOWS[window]
        now = clock()
        until = math.ceil(now / step) * step
        since = until - span
        states, data = await asyncio.gather(
            runtime.provider_states(), asyncio.to_thread(_query, store, since, until, step)
        )
        providers = runtime.current.providers
        health = runtime.gateway.health
        data.update(
            now=now,
            window=window,
            generation=runtime.current.number,
            deployments=[st.as_dict(clock()) for st in health.states()] if health else [],
            providers=[
                {
                    "name": s.name,
                    "type": type(providers[s.name]).__name__ if s.name in providers else "",
                    "ready": s.ready,
                    "reason": s.reason,
                    "queue_depth": s.queue_depth,
                    "in_flight": s.in_flight,
                    "limited_until": s.limited_until,
                    "status": s.status,
                }
                for s in states
                if s.name in providers
            ],
            in_flight=metrics.in_flight_now() if metrics is not None else {},
        )
        return _json(data)

    return [
        Route("/ui", index, methods=["GET"], name="ui"),
        Route("/ui/static/{name}", static, methods=["GET"], name="ui-static"),
        Route("/ui/api/overview", overview, methods=["GET"], name="ui-overview"),
    ]


def _query(store: Store, since: float, until: float, step: float) -> dict[str, Any]:
    by_key = usage_summary(store, since, "key", until)
    by_model = usage_summary(store, since, "model", until)
    requests = sum(r.requests for r in by_key)
    return {
        "since": since,
        "until": until,
        "totals": {
            "requests": requests,
            "errors": sum(r.errors for r in by_key),
            "input_tokens": sum(r.input_tokens for r in by_key),
            "output_tokens": sum(r.output_tokens for r in by_key),
            "cache_read_tokens": sum(r.cache_read_tokens for r in by_key),
            "cache_creation_tokens": sum(r.cache_creation_tokens for r in by_key),
            "cost_usd": sum(r.cost_usd for r in by_key),
        },
        "series": {
            "alias": usage_series(store, since, until, step, by="alias").as_dict(),
            "key": usage_series(store, since, until, step, by="key").as_dict(),
        },
        "latency": [
            {
                "alias": r.group,
                "count": r.count,
                "p50_ms": r.p50_ms,
                "p90_ms": r.p90_ms,
                "p99_ms": r.p99_ms,
                "ttft_p50_ms": r.ttft_p50_ms,
                "ttft_p90_ms": r.ttft_p90_ms,
            }
            for r in latency_percentiles(store, since, until)
        ],
        "keys": [_summary(r) | {"key": r.group[0]} for r in by_key],
        "models": [
            _summary(r)
            | {"alias": r.group[0], "provider": r.group[1], "upstream_model": r.group[2]}
            for r in by_model
        ],
        "errors": recent_errors(store, limit=25, since=since),
    }


def _summary(r: SummaryRow) -> dict[str, Any]:
    return {
        "requests": r.requests,
        "errors": r.errors,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cache_read_tokens": r.cache_read_tokens,
        "cache_creation_tokens": r.cache_creation_tokens,
        "cost_usd": r.cost_usd,
        "unpriced": r.unpriced,
        "avg_latency_ms": r.avg_latency_ms,
    }
