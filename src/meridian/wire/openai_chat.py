"""The OpenAI Chat Completions wire format <-> the canonical model. Sans-IO: no HTTP here.

This module is the one to import. It holds the response side and ``/v1/models`` and
re-exports the rest, which lives in smaller modules:

- `openai_request`: `parse_request`; `openai_render`: `render_request`;
- `openai_stream`: `StreamDecoder` (upstream chunks -> events), `UsageSniffer` (for the
  pass-through relay); `openai_encoder`: `StreamEncoder` (events -> client chunks);
- `openai_common`: `usage_from_body`, `render_error`, `parse_error_body`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from meridian.errors import ApiError
from meridian.model import (
    Block,
    Response,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    parse_tool_input,
)
from meridian.wire.models import ModelInfo
from meridian.wire.openai_common import (
    dumps_args,
    error_from_payload,
    finish_reason,
    parse_error_body,
    render_error,
    render_usage,
    stop_reason,
    usage_from_body,
)
from meridian.wire.openai_encoder import StreamEncoder
from meridian.wire.openai_render import render_request
from meridian.wire.openai_request import parse_request
from meridian.wire.openai_stream import StreamDecoder, UsageSniffer, completion_id

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "UsageSniffer",
    "model_object",
    "models_list",
    "parse_error_body",
    "parse_request",
    "parse_response",
    "render_error",
    "render_request",
    "render_response",
    "usage_from_body",
]


def _text(value: Any) -> str:
    """Message content as text: a string, or (some compatible servers) a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            p["text"] for p in value if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    return ""


def parse_response(body: Mapping[str, Any], *, provider: str = "upstream") -> Response:
    """An upstream's non-streaming ``chat.completion`` JSON -> canonical `Response`."""
    if body.get("error"):
        raise error_from_payload(body, provider=provider)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ApiError(f"{provider}: the response has no choices", status=502)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        message = {}
    content: list[Block] = []
    thinking = _text(message.get("reasoning_content")) or _text(message.get("reasoning"))
    if thinking:
        content.append(ThinkingBlock(thinking))
    text = _text(message.get("content")) or _text(message.get("refusal"))
    if text:
        content.append(TextBlock(text))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            continue
        args = fn.get("arguments")
        content.append(
            ToolUseBlock(
                id=str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                name=str(fn.get("name", "")),
                input=args if isinstance(args, Mapping) else parse_tool_input(str(args or "")),
            )
        )
    reason = choice.get("finish_reason")
    saw_calls = any(isinstance(b, ToolUseBlock) for b in content)
    stop = (
        stop_reason(reason, saw_tool_calls=saw_calls)
        if isinstance(reason, str)
        else ("tool_use" if saw_calls else None)
    )
    if (
        isinstance(message.get("refusal"), str)
        and message["refusal"]
        and not message.get("content")
    ):
        stop = "refusal"
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        content=tuple(content),
        stop_reason=stop,
        usage=usage_from_body(body),
    )


def render_response(response: Response, *, model: str, created: int) -> dict[str, Any]:
    """Canonical `Response` -> the ``chat.completion`` JSON a client gets.

    ``model`` is the alias the client asked for. The answer text is always in ``content``
    (clients like paperless-ai read nothing else); ``content`` is null only when the answer
    is tool calls alone, as OpenAI does.
    """
    text = "".join(b.text for b in response.content if isinstance(b, TextBlock))
    thinking = "".join(b.thinking for b in response.content if isinstance(b, ThinkingBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": dumps_args(b.input)},
        }
        for b in response.content
        if isinstance(b, ToolUseBlock)
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = thinking
    return {
        "id": completion_id(response.id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(response.stop_reason),
            }
        ],
        "usage": render_usage(response.usage),
    }


def model_object(model: ModelInfo) -> dict[str, Any]:
    """One entry of ``GET /v1/models`` (and the body of ``GET /v1/models/{id}``)."""
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def models_list(models: Sequence[ModelInfo]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in models]}
