"""`FakeAnthropic`: the Anthropic Messages API, byte for byte as the real service streams it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from fakes.server import FakeUpstream, Reply, ToolCall, pieces, sse

_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "model: not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class FakeAnthropic(FakeUpstream):
    """``POST /v1/messages`` (any query, e.g. ``?beta=true``), ``/v1/messages/count_tokens``,
    ``GET /v1/models``. ``url`` is the origin (Anthropic base URLs carry no ``/v1``)."""

    default_models = ("claude-sonnet-4-5", "claude-haiku-4-5")

    def __enter__(self) -> FakeAnthropic:
        self.start()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._answer)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)

    def reply_overloaded(self, **kw: Any) -> Reply:
        return self.reply_error(529, **kw)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        rec, _ = await self._record(request)
        return web.json_response({"input_tokens": max(1, len(rec.body) // 8)})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m.replace("-", " ").title(),
                "created_at": "2025-10-01T00:00:00Z",
            }
            for m in self.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _id_headers(self, n: int) -> dict[str, str]:
        return {"request-id": f"req_fake{n:06d}"}

    def _usage(self, reply: Reply, output_tokens: int | None) -> dict[str, Any]:
        return {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_creation_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    @staticmethod
    def _tool_id(n: int, i: int, call: ToolCall) -> str:
        return call.id or f"toolu_fake{n:06d}{i:02d}"

    def _body(self, n: int, reply: Reply, model: str, path: str = "") -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.thinking is not None:
            content.append(
                {"type": "thinking", "thinking": reply.thinking, "signature": reply.signature}
            )
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for i, call in enumerate(reply.tool_calls):
            content.append(
                {
                    "type": "tool_use",
                    "id": self._tool_id(n, i, call),
                    "name": call.name,
                    "input": call.arguments_object(),
                }
            )
        return {
            "id": f"msg_fake{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.final_stop_reason,
            "stop_sequence": None,
            "usage": self._usage(reply, reply.output_tokens),
        }

    def _events(
        self, n: int, reply: Reply, model: str, request: dict[str, Any], path: str = ""
    ) -> list[bytes]:
        message = self._body(n, reply, model)
        message.update(content=[], stop_reason=None, usage=self._usage(reply, 1))
        out = [sse("message_start", {"type": "message_start", "message": message})]
        index = 0

        def block(start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
            nonlocal index
            out.append(
                sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            if index == 0:
                # Where the real API sends its first ping.
                out.append(b'event: ping\ndata: {"type": "ping"}\n\n')
            for delta in deltas:
                out.append(
                    sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1

        size = reply.piece_size
        if reply.thinking is not None:
            block(
                {"type": "thinking", "thinking": "", "signature": ""},
                [{"type": "thinking_delta", "thinking": p} for p in pieces(reply.thinking, size)]
                + [{"type": "signature_delta", "signature": reply.signature}],
            )
        if reply.text:
            block(
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in pieces(reply.text, size)],
            )
        for i, call in enumerate(reply.tool_calls):
            args = call.arguments_json()
            block(
                {
                    "type": "tool_use",
                    "id": self._tool_id(n, i, call),
                    "name": call.name,
                    "input": {},
                },
                # The real API's first input_json_delta is empty.
                [
                    {"type": "input_json_delta", "partial_json": p}
                    for p in ["", *pieces(args, size)]
                ],
            )
        out.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.final_stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out

    def _error_body(self, n: int, reply: Reply) -> dict[str, Any]:
        default_type, default_message = _ANTHROPIC_ERRORS.get(
            reply.status, ("api_error", "Internal server error")
        )
        return {
            "type": "error",
            "error": {
                "type": reply.error_type or default_type,
                "message": reply.error_message or default_message,
            },
            "request_id": f"req_fake{n:06d}",
        }

    def _stream_error(self, n: int, reply: Reply) -> bytes:
        error = replace(reply, status=reply.status if reply.status >= 400 else 529)
        return sse("error", self._error_body(n, error))
