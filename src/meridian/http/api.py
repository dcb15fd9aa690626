"""The HTTP adapter of an API call: request bytes in, response bytes out, around the core
(`meridian.calls.Call`, which knows nothing of HTTP).

It reads the body within its size and depth limits (a client that leaves during the upload
is a 499, one whose body stalls a 408 answered by the protocol), hands the core the HTTP
layer's disconnect watch, and turns what the core returns into a Starlette response: an
error envelope (with ``connection: close`` when the body was not read, so that a caller
with no key cannot keep the connection busy uploading), a plain answer, or an SSE stream.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from meridian.calls import Answer, Call, Gateway
from meridian.calls.call import SHUTTING_DOWN
from meridian.dialects import Endpoint
from meridian.errors import ApiError, ClientClosed, MeridianError, Overloaded
from meridian.http.body import parse_object, read_body
from meridian.http.protocol import watch_of
from meridian.streaming import SSEResponse

log = logging.getLogger("meridian.calls")


async def handle(gw: Gateway, endpoint: Endpoint, request: Request) -> Response:
    call = Call(
        gw,
        endpoint,
        path=request.scope["path"],
        headers=request.headers,
        watch=watch_of(request.scope),
    )
    call.task = asyncio.current_task()
    body_read = False
    try:
        await call.admit()
        try:
            raw = await read_body(
                request.stream(),
                call.gen.max_body_bytes,
                request.headers.get("content-length"),
            )
        except ClientDisconnect:
            raise ClientClosed("the client went away while sending its request") from None
        body_read = True
        answer = await call.answer(parse_object(raw, call.gen.max_json_depth))
    except MeridianError as err:
        return _failed(call, err, body_read)
    except asyncio.CancelledError:
        task = call.task
        if (call.client_gone or call.shutting_down) and task is not None:
            # Our own cancellation (the client left, or shutdown): the call ends here.
            task.uncancel()
            if call.client_gone:
                call.gone()
                return Response(status_code=call.rec.status)  # nobody will read it
            return _failed(call, Overloaded(SHUTTING_DOWN, retry_after=1), body_read)
        call.rec.status, call.rec.error_type = 499, "cancelled"
        call.finish(call.usage)
        raise
    except Exception:
        log.exception("internal error", extra={"request_id": call.rec.request_id})
        internal = ApiError(f"internal error (request id {call.rec.request_id})")
        return _failed(call, internal, body_read)
    if isinstance(answer, Answer):
        return Response(answer.body, 200, answer.headers, media_type=answer.media_type)
    return SSEResponse(answer.body, answer.headers, on_close=answer.close)


def _failed(call: Call, err: MeridianError, body_read: bool) -> Response:
    status, payload, headers = call.fail(err)
    if isinstance(err, ClientClosed):
        return Response(status_code=status)
    if not body_read:
        # The rest of the body is still on its way: reading it only to drop it would let a
        # caller with no key keep the connection (and this process) busy.
        headers["connection"] = "close"
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")
