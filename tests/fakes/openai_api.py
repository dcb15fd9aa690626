"""`FakeOpenAI`: OpenAI Chat Completions, byte for byte as the real service streams it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from fakes.server import FakeUpstream, Reply, ToolCall, pieces, sse

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fake."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}


class FakeOpenAI(FakeUpstream):
    """``POST <prefix>/chat/completions`` and ``GET <prefix>/models`` under any prefix
    (``/v1``, Gemini's ``/v1beta/openai``). ``url`` is ``origin + "/v1"``."""

    default_models = ("gpt-4o-mini", "o3-mini", "gpt-5")

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{prefix:.*}/chat/completions", self._answer)
        app.router.add_get("/{prefix:.*}/models", self._models)

    def reply_overloaded(self, **kw: Any) -> Reply:
        return self.reply_error(503, **kw)

    def reply_quota_exhausted(self, **kw: Any) -> Reply:
        """OpenAI's 429 for an account out of credit: retrying cannot help."""
        return self.reply_error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
            **kw,
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
                    for m in self.models
                ],
            }
        )

    def _id_headers(self, n: int) -> dict[str, str]:
        return {"x-request-id": f"req_fake{n:06d}", "openai-processing-ms": "1"}

    def _usage(self, reply: Reply) -> dict[str, Any]:
        assert reply.input_tokens is not None and reply.output_tokens is not None
        prompt = reply.input_tokens + reply.cache_read_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": reply.output_tokens,
            "total_tokens": prompt + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _call_id(n: int, i: int, call: ToolCall) -> str:
        return call.id or f"call_fake{n:06d}{i:02d}"

    def _body(self, n: int, reply: Reply, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or (None if reply.tool_calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if reply.thinking is not None:
            message["reasoning_content"] = reply.thinking
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(n, i, c),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for i, c in enumerate(reply.tool_calls)
            ]
        return {
            "id": f"chatcmpl-fake{n:06d}",
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(reply.final_stop_reason, reply.final_stop_reason),
                }
            ],
            "usage": self._usage(reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _events(self, n: int, reply: Reply, model: str, request: dict[str, Any]) -> list[bytes]:
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base = {
            "id": f"chatcmpl-fake{n:06d}",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000 + n,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            body = {**base, "choices": [choice]}
            if include_usage:
                body["usage"] = None
            return sse(None, body)

        size = reply.piece_size
        out: list[bytes] = []
        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if reply.text or reply.thinking is not None or not reply.tool_calls:
            out.append(chunk(first))
            first = {}
        for p in pieces(reply.thinking or "", size):
            out.append(chunk({"content": None, "reasoning_content": p}))
        for p in pieces(reply.text or "", size):
            out.append(chunk({"content": p}))
        for i, call in enumerate(reply.tool_calls):
            head = {
                "index": i,
                "id": self._call_id(n, i, call),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if first:
                out.append(chunk({**first, "content": None, "tool_calls": [head]}))
                first = {}
            else:
                out.append(chunk({"tool_calls": [head]}))
            for p in pieces(call.arguments_json(), size):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}))
        finish = _FINISH.get(reply.final_stop_reason, reply.final_stop_reason)
        out.append(chunk({}, finish))
        if include_usage:
            out.append(sse(None, {**base, "choices": [], "usage": self._usage(reply)}))
        out.append(b"data: [DONE]\n\n")
        return out

    def _error_body(self, n: int, reply: Reply) -> dict[str, Any]:
        default_type, default_code, default_message = _OPENAI_ERRORS.get(
            reply.status, ("server_error", None, "The server had an error.")
        )
        return {
            "error": {
                "message": reply.error_message or default_message,
                "type": reply.error_type or default_type,
                "param": None,
                "code": reply.error_code if reply.error_type or reply.error_code else default_code,
            }
        }

    def _stream_error(self, n: int, reply: Reply) -> bytes:
        error = replace(reply, status=reply.status if reply.status >= 400 else 500)
        return sse(None, self._error_body(n, error))
