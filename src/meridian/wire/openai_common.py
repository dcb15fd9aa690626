"""Pieces of the OpenAI Chat Completions format shared by the request, response and stream
translators: finish reasons, usage, error envelopes, JSON encoding.

Public names are re-exported from `meridian.wire.openai_chat`; import them from there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from meridian.errors import MeridianError, from_upstream_status
from meridian.model import StopReason, Usage

# OpenAI finish_reason -> canonical stop reason. Unknown values (some servers invent their
# own, e.g. "eos") fall back to end_turn: the answer did finish.
STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason(finish_reason: str, *, saw_tool_calls: bool) -> StopReason:
    """The canonical stop reason for an upstream ``finish_reason``.

    Some OpenAI-compatible servers (older Ollama, some vLLM parsers) answer tool calls with
    ``finish_reason: "stop"``; clients such as Pulse only run tools after ``tool_calls``.
    """
    reason = STOP_REASONS.get(finish_reason, "end_turn")
    if saw_tool_calls and reason == "end_turn":
        return "tool_use"
    return reason


def finish_reason(reason: StopReason | None) -> str:
    return FINISH_REASONS.get(reason or "end_turn", "stop")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_body(body: Mapping[str, Any]) -> Usage:
    """Canonical usage from a chat.completion (or chunk) body's ``usage``.

    OpenAI's ``prompt_tokens`` includes cached tokens; canonical ``input_tokens`` does not.
    OpenRouter adds ``usage.cost`` in dollars, which the ledger can use as is.
    """
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return Usage()
    prompt = _int(usage.get("prompt_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    completion_details = usage.get("completion_tokens_details")
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, Mapping)
        else 0
    )
    cost = usage.get("cost")
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        cost = None
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
        cost_usd=None if cost is None else float(cost),
    )


def render_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI usage: ``prompt_tokens`` counts ALL input tokens, cache reads and writes included."""
    prompt = usage.total_input_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# ---------------------------------------------------------------------------- errors

# kind -> (HTTP status, OpenAI error type). Overloaded is 503 here, never Anthropic's 529:
# the openai SDK retries 503 and some OpenAI clients treat unknown 5xx codes as fatal.
_ERROR_TYPES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit": (429, "rate_limit_error"),
    "billing": (429, "insufficient_quota"),
    "overloaded": (503, "server_error"),
    "timeout": (504, "timeout_error"),
}


USER_MAX = 64


def end_user(value: str) -> str:
    """The caller's end-user id as OpenAI takes it (``user``: at most 64 characters). A
    longer one (Claude Code's ``metadata.user_id`` is a ~150-character JSON string) is sent
    as its sha256, hex: the same user always maps to the same id, and no content leaks."""
    if len(value) <= USER_MAX:
        return value
    return hashlib.sha256(value.encode()).hexdigest()


def render_error(err: MeridianError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, ``{"error": {"message", "type", "param", "code"}}``) for a client."""
    status, type_ = _ERROR_TYPES.get(err.kind, (err.status, "server_error"))
    if err.kind == "invalid_request":
        status = err.status  # 400, or a 405 / 409 / 422 that says more
    code = err.code
    if err.kind == "authentication":
        code = code or "invalid_api_key"
    elif err.kind == "not_found" and code is None:
        if err.param == "model" or "model" in err.message.lower():
            code = "model_not_found"
    elif err.kind == "rate_limit":
        code = code or "rate_limit_exceeded"
        # An exhausted quota is not a transient limit: OpenAI says so with this type, and
        # clients (and the SDK with x-should-retry: false) stop retrying.
        if code == "insufficient_quota" and err.should_retry is False:
            type_ = "insufficient_quota"
    elif err.kind == "billing":
        code = code or "insufficient_quota"
    return status, {
        "error": {"message": err.message, "type": type_, "param": err.param, "code": code}
    }


# Upstream error type/code strings -> the HTTP status they stand for (when the body of a
# mid-stream error or a 200 answer carries no status of its own).
_UPSTREAM_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "overloaded": 503,
    "overloaded_error": 529,
    "server_error": 500,
    "api_error": 500,
    "timeout_error": 504,
}


def error_from_payload(
    payload: Mapping[str, Any], *, provider: str, status: int | None = None
) -> MeridianError:
    """The `MeridianError` for an upstream ``{"error": ...}`` body seen after a 200.

    OpenRouter puts the HTTP status in ``error.code`` as an integer; OpenAI and vLLM put a
    string code and a ``type``.
    """
    err = payload.get("error")
    if not isinstance(err, Mapping):
        text = err if isinstance(err, str) else "upstream reported an error"
        return from_upstream_status(status or 502, text, provider=provider)
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = "upstream reported an error"
    code, type_ = err.get("code"), err.get("type")
    quota = "insufficient_quota" in (code, type_)
    if status is None:
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            status = code
        else:
            status = _UPSTREAM_STATUS.get(str(code), 0) or _UPSTREAM_STATUS.get(str(type_), 502)
    return from_upstream_status(status, message, provider=provider, quota_exhausted=quota)


def parse_error_body(status: int, body: bytes) -> str:
    """A short human message from an upstream's error body, whatever its shape.

    Shapes seen: OpenAI/vLLM ``{"error": {"message"}}``, Ollama ``{"error": "text"}``,
    Gemini's OpenAI endpoint ``[{"error": {...}}]``, FastAPI ``{"detail": ...}``, plain text.
    """
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] if text else f"HTTP {status}"
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, str) and err:
            return err[:500]
        if isinstance(err, Mapping):
            for key in ("message", "detail", "msg"):
                value = err.get(key)
                if isinstance(value, str) and value:
                    return value[:500]
                if value:
                    return dumps(value).decode()[:500]
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else f"HTTP {status}"


# ---------------------------------------------------------------------------- JSON

# provider_metadata["openai"] keys starting with "_" are meridian's own notes, never sent
# upstream. This one remembers each tool's `strict` flag (canonical `Tool` has no field).
STRICT_TOOLS = "_strict_tools"


def _default(value: Any) -> Any:
    # Canonical values hold Mappings (possibly read-only proxies) that orjson does not know.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def dumps_args(value: Mapping[str, Any]) -> str:
    """Tool input -> the ``arguments`` JSON string (compact, as OpenAI writes it)."""
    return dumps(value).decode() if value else "{}"
