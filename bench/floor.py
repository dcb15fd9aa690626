"""The Python floor: the least a Starlette + uvicorn + aiohttp pass-through can do. Never
shipped; the bench reads every meridian figure against it, measured in the same run.

    python bench/floor.py --port 9400 --upstream http://127.0.0.1:9100

It forwards ``POST /v1/chat/completions`` and ``/v1/messages`` bodies to the upstream as
they are (no auth check, no parsing beyond what routing needs, no ledger, no metrics) and
relays the answer, streamed as it comes when the request asks for a stream: what any proxy
on this stack must pay, and nothing meridian adds.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def app(upstream: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        yield
        await session.close()

    async def forward(request: Request) -> Response:
        assert session is not None
        body = await request.body()
        headers = {"content-type": "application/json"}
        for name in ("authorization", "x-api-key", "anthropic-version"):
            if name in request.headers:
                headers[name] = request.headers[name]
        resp = await session.post(upstream + request.url.path, data=body, headers=headers)
        if b'"stream":true' in body or b'"stream": true' in body:

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            return StreamingResponse(chunks(), media_type="text/event-stream")
        data = await resp.read()
        return Response(data, resp.status, media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", forward, methods=["POST"]),
            Route("/v1/messages", forward, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:9100")
    args = ap.parse_args()
    uvicorn.run(
        app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
