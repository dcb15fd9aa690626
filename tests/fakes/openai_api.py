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
    """``POST <prefix>/chat/completions``, ``/responses``, ``/embeddings``, ``/completions``
    and ``GET <prefix>/models`` under any prefix (``/v1``, Gemini's ``/v1beta/openai``).
    ``url`` is ``origin + "/v1"``. Each answers in its own shape, as OpenAI documents it."""

    default_models = ("gpt-4o-mini", "o3-mini", "gpt-5")

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/{prefix:.*}/chat/completions", self._answer)
        app.router.add_post("/{prefix:.*}/responses", self._answer)
        app.router.add_post("/{prefix:.*}/embeddings", self._answer)
        app.router.add_post("/{prefix:.*}/completions", self._answer)
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

    def _body(self, n: int, reply: Reply, model: str, path: str = "") -> dict[str, Any]:
        if path.endswith("/responses"):
            return responses_body(n, reply, model, self._call_id)
        if path.endswith("/embeddings"):
            return embeddings_body(reply, model)
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return completion_body(n, reply, model)
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

    def _events(
        self, n: int, reply: Reply, model: str, request: dict[str, Any], path: str = ""
    ) -> list[bytes]:
        if path.endswith("/responses"):
            return responses_events(n, reply, model, self._call_id)
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return completion_events(n, reply, model, request)
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


# ---------------------------------------------------------------------------- the other shapes


def _responses_usage(reply: Reply) -> dict[str, Any]:
    assert reply.input_tokens is not None and reply.output_tokens is not None
    total_in = reply.input_tokens + reply.cache_read_tokens
    return {
        "input_tokens": total_in,
        "input_tokens_details": {"cached_tokens": reply.cache_read_tokens},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": total_in + reply.output_tokens,
    }


def _responses_output(n: int, reply: Reply, call_id: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if reply.text:
        out.append(
            {
                "type": "message",
                "id": f"msg_fake{n:06d}",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
                ],
            }
        )
    for i, call in enumerate(reply.tool_calls):
        out.append(
            {
                "type": "function_call",
                "id": f"fc_fake{n:06d}{i:02d}",
                "call_id": call_id(n, i, call),
                "name": call.name,
                "arguments": call.arguments_json(),
                "status": "completed",
            }
        )
    return out


def _response(n: int, model: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": f"resp_fake{n:06d}",
        "object": "response",
        "created_at": 1_700_000_000 + n,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def responses_body(n: int, reply: Reply, model: str, call_id: Any) -> dict[str, Any]:
    return _response(
        n, model, "completed", _responses_output(n, reply, call_id), _responses_usage(reply)
    )


def responses_events(n: int, reply: Reply, model: str, call_id: Any) -> list[bytes]:
    seq = iter(range(10_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    out = [
        ev("response.created", response=_response(n, model, "in_progress", [], None)),
        ev("response.in_progress", response=_response(n, model, "in_progress", [], None)),
    ]
    items = _responses_output(n, reply, call_id)
    for index, item in enumerate(items):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            opened = {**item, "status": "in_progress", "content": []}
            out.append(ev("response.output_item.added", output_index=index, item=opened))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                ev("response.content_part.added", item_id=item["id"], output_index=index,
                   content_index=0, part=part)
            )  # fmt: skip
            for piece in pieces(text, reply.piece_size):
                out.append(
                    ev("response.output_text.delta", item_id=item["id"], output_index=index,
                       content_index=0, delta=piece, logprobs=[])
                )  # fmt: skip
            out.append(
                ev("response.output_text.done", item_id=item["id"], output_index=index,
                   content_index=0, text=text, logprobs=[])
            )  # fmt: skip
            out.append(
                ev("response.content_part.done", item_id=item["id"], output_index=index,
                   content_index=0, part={**part, "text": text})
            )  # fmt: skip
        else:
            opened = {**item, "status": "in_progress", "arguments": ""}
            out.append(ev("response.output_item.added", output_index=index, item=opened))
            for piece in pieces(item["arguments"], reply.piece_size):
                out.append(
                    ev("response.function_call_arguments.delta", item_id=item["id"],
                       output_index=index, delta=piece)
                )  # fmt: skip
            out.append(
                ev("response.function_call_arguments.done", item_id=item["id"],
                   output_index=index, arguments=item["arguments"], name=item["name"])
            )  # fmt: skip
        out.append(ev("response.output_item.done", output_index=index, item=item))
    done = responses_body(n, reply, model, call_id)
    out.append(ev("response.completed", response=done))
    return out


def embeddings_body(reply: Reply, model: str) -> dict[str, Any]:
    assert reply.input_tokens is not None
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
        "model": model,
        "usage": {"prompt_tokens": reply.input_tokens, "total_tokens": reply.input_tokens},
    }


def completion_body(n: int, reply: Reply, model: str) -> dict[str, Any]:
    assert reply.input_tokens is not None and reply.output_tokens is not None
    return {
        "id": f"cmpl-fake{n:06d}",
        "object": "text_completion",
        "created": 1_700_000_000 + n,
        "model": model,
        "choices": [{"text": reply.text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def completion_events(n: int, reply: Reply, model: str, request: dict[str, Any]) -> list[bytes]:
    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base = {"id": f"cmpl-fake{n:06d}", "object": "text_completion",
            "created": 1_700_000_000 + n, "model": model}  # fmt: skip
    out = []
    chunks = pieces(reply.text or "", reply.piece_size)
    for i, piece in enumerate(chunks):
        finish = "stop" if i == len(chunks) - 1 else None
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
        out.append(sse(None, {**base, "choices": [choice]}))
    if include_usage:
        usage = completion_body(n, reply, model)["usage"]
        out.append(sse(None, {**base, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out
