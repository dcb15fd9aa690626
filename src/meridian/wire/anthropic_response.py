"""Anthropic Messages responses, usage and error envelopes <-> the canonical model. No I/O."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, get_args

from meridian.errors import (
    ApiError,
    BillingError,
    InvalidRequest,
    MeridianError,
    NotFound,
    Overloaded,
    RateLimited,
    RequestTooLarge,
    Timeout,
)
from meridian.model import (
    Block,
    RedactedThinkingBlock,
    Response,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from meridian.wire.anthropic_render import render_block

ERROR_TYPES: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "billing": "billing_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
    "api_error": "api_error",
}
_ERROR_CLASSES: dict[str, type[MeridianError]] = {
    "invalid_request_error": InvalidRequest,
    "not_found_error": NotFound,
    "request_too_large": RequestTooLarge,
    "rate_limit_error": RateLimited,
    "billing_error": BillingError,
    "overloaded_error": Overloaded,
    "timeout_error": Timeout,
    "api_error": ApiError,
}
_STOP_REASONS: frozenset[str] = frozenset(get_args(StopReason))


def message_id(id: str) -> str:
    """Anthropic ids start with ``msg_``; SDKs and logs expect it."""
    if id.startswith("msg_"):
        return id
    return "msg_" + (id or uuid.uuid4().hex)


# ---------------------------------------------------------------------------- usage


def usage_from_json(usage: object) -> Usage:
    """An Anthropic ``usage`` object (message, message_delta) -> canonical `Usage`."""
    if not isinstance(usage, Mapping):
        return Usage()

    def count(key: str, source: Mapping[str, Any] = usage) -> int:
        value = source.get(key)
        return value if isinstance(value, int) else 0

    details = usage.get("output_tokens_details")
    return Usage(
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cache_read_tokens=count("cache_read_input_tokens"),
        cache_creation_tokens=count("cache_creation_input_tokens"),
        reasoning_tokens=count("thinking_tokens", details) if isinstance(details, Mapping) else 0,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def usage_from_body(body: Mapping[str, Any]) -> Usage:
    """Usage of a non-streaming Anthropic response (the pass-through path)."""
    return usage_from_json(body.get("usage"))


# ---------------------------------------------------------------------------- response


def stop_reason(value: object) -> StopReason | None:
    # An unknown future stop reason is kept as the generic end of a turn rather than
    # failing an answer the client already paid for.
    if value is None:
        return None
    return value if value in _STOP_REASONS else "end_turn"  # type: ignore[return-value]


def block_from_json(block: Mapping[str, Any]) -> Block | None:
    """A response content block; types the canonical model lacks (server tools) are None."""
    kind = block.get("type")
    if kind == "text":
        citations = block.get("citations") or ()
        return TextBlock(str(block.get("text", "")), citations=tuple(citations))
    if kind == "tool_use":
        tool_input = block.get("input")
        return ToolUseBlock(
            str(block.get("id", "")),
            str(block.get("name", "")),
            tool_input if isinstance(tool_input, Mapping) else {},
        )
    if kind == "thinking":
        return ThinkingBlock(str(block.get("thinking", "")), str(block.get("signature", "")))
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(str(block.get("data", "")))
    return None


def parse_response(body: Mapping[str, Any]) -> Response:
    """An upstream's non-streaming JSON -> `Response` (an error body raises)."""
    if body.get("type") == "error":
        raise error_from_json(body.get("error"))
    blocks = (block_from_json(b) for b in body.get("content") or () if isinstance(b, Mapping))
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        content=tuple(b for b in blocks if b is not None),
        stop_reason=stop_reason(body.get("stop_reason")),
        usage=usage_from_json(body.get("usage")),
        stop_sequence=body.get("stop_sequence"),
    )


def render_response(response: Response) -> dict[str, Any]:
    """`Response` -> the JSON a client of ``/v1/messages`` gets."""
    return {
        "id": message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [render_block(b) for b in response.content],
        "stop_reason": response.stop_reason,
        "stop_sequence": response.stop_sequence,
        "usage": usage_json(response.usage),
    }


# ---------------------------------------------------------------------------- errors


def error_from_json(error: object, *, status: int | None = None) -> MeridianError:
    """The ``error`` object of an upstream's error body or ``error`` event -> our error.

    The upstream's authentication/permission errors mean meridian's own credentials are
    wrong: like `errors.from_upstream_status`, they become a 502 that does not make the
    caller re-authenticate."""
    fields = error if isinstance(error, Mapping) else {}
    kind = str(fields.get("type") or "api_error")
    message = str(fields.get("message") or kind)
    if kind in ("authentication_error", "permission_error"):
        return ApiError(
            f"{message} (the upstream rejected meridian's credentials: check its api_key)",
            status=502,
            should_retry=False,
        )
    return _ERROR_CLASSES.get(kind, ApiError)(message, status=status)


def render_error(err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` of an Anthropic error response (and of an ``error`` event)."""
    status = 529 if isinstance(err, Overloaded) else err.status
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(err.kind, "api_error"), "message": err.message},
        "request_id": request_id,
    }
    return status, body


def parse_error_body(status: int, body: bytes) -> str:
    """Best-effort human message from an upstream error body (JSON of either API family,
    a proxy's HTML page, plain text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text) if text else None
    except ValueError:
        value = None
    if isinstance(value, Mapping):
        for candidate in (value.get("error"), value):
            if isinstance(candidate, str) and candidate:
                return candidate
            if isinstance(candidate, Mapping):
                for key in ("message", "detail", "error"):
                    message = candidate.get(key)
                    if isinstance(message, str) and message:
                        return message
    if text.startswith("<"):
        lower = text.lower()
        start, end = lower.find("<title>"), lower.find("</title>")
        text = text[start + 7 : end].strip() if 0 <= start < end else ""
    if not text:
        return f"upstream returned HTTP {status}"
    return text if len(text) <= 500 else text[:500] + "…"
