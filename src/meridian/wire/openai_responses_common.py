"""Pieces of the OpenAI Responses format shared by its translators: usage, status, errors,
and the ``response`` object with its echo of the request. Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meridian.errors import MeridianError, from_upstream_status
from meridian.model import StopReason, Usage
from meridian.wire.openai_common import error_from_payload
from meridian.wire.openai_responses_items import OutputItem, Status

# provider_metadata key for what only a Responses upstream understands (see render_request).
RESPONSES = "openai_responses"

# ---------------------------------------------------------------------------- usage


def usage_json(usage: Usage) -> dict[str, Any]:
    """Responses usage: ``input_tokens`` counts ALL input tokens, cache reads and writes
    included; ``output_tokens`` includes reasoning tokens."""
    total_in = usage.total_input_tokens
    return {
        "input_tokens": total_in,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_creation_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": total_in + usage.output_tokens,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_json(usage: Any) -> Usage:
    """A Responses ``usage`` object -> canonical `Usage` (whose ``input_tokens`` excludes
    cache reads and writes)."""
    if not isinstance(usage, Mapping):
        return Usage()
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cached, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
    out_details = usage.get("output_tokens_details")
    reasoning = _int(out_details.get("reasoning_tokens")) if isinstance(out_details, Mapping) else 0
    return Usage(
        input_tokens=max(_int(usage.get("input_tokens")) - cached - written, 0),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=cached,
        cache_creation_tokens=written,
        reasoning_tokens=reasoning,
    )


# ---------------------------------------------------------------------------- status

_INCOMPLETE: dict[str, str] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}
_STOPS: dict[str, StopReason] = {
    "max_output_tokens": "max_tokens",
    "content_filter": "refusal",
}


def status_of(stop: StopReason | None) -> tuple[Status, dict[str, str] | None]:
    """(``status``, ``incomplete_details``) for a canonical stop reason."""
    reason = _INCOMPLETE.get(stop or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def stop_reason_of(
    status: Any, incomplete_details: Any, *, saw_tool_calls: bool, refused: bool = False
) -> StopReason:
    """The canonical stop reason for a finished Responses answer."""
    if status == "incomplete":
        reason = (
            incomplete_details.get("reason") if isinstance(incomplete_details, Mapping) else None
        )
        return _STOPS.get(str(reason), "max_tokens")
    if refused:
        return "refusal"
    return "tool_use" if saw_tool_calls else "end_turn"


# ---------------------------------------------------------------------------- errors

# ResponseError.code is a closed set in the API; meridian's kinds map onto three of them.
_FAILED_CODES: dict[str, str] = {
    "rate_limit": "rate_limit_exceeded",
    "billing": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
    "request_too_large": "invalid_prompt",
}


def failed_error(err: MeridianError, type_: str) -> dict[str, Any]:
    """The ``error`` of a ``failed`` response object (``type_`` is the OpenAI error type)."""
    code = _FAILED_CODES.get(err.kind, "server_error")
    return {"code": code, "message": err.message, "param": err.param, "type": type_}


# The codes of a failed response's `error` (a closed set in the API) -> their HTTP status.
# Every one not listed is about the request (a bad image, a policy): 400.
_FAILED_STATUS: dict[str, int] = {
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "vector_store_timeout": 504,
}
_FAILED_BAD_REQUEST = frozenset(
    {
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def failure(payload: Mapping[str, Any], *, provider: str) -> MeridianError:
    """The error of an ``error`` event or of a ``failed`` response object.

    ``error`` events carry ``code``/``message`` at the top level (as documented), or an
    ``error`` object (as the API also sends), with Chat Completions codes and types; a
    failed response carries ``error`` ``{code, message}`` whose codes are the API's closed
    set.
    """
    inner = payload.get("error")
    if isinstance(inner, Mapping):
        payload = inner
    message = payload.get("message")
    code, type_ = payload.get("code"), payload.get("type")
    if code in _FAILED_STATUS or code in _FAILED_BAD_REQUEST:
        status = _FAILED_STATUS.get(str(code), 400)
        text = message if isinstance(message, str) and message else str(code)
        return from_upstream_status(status, text, provider=provider)
    return error_from_payload(
        {"error": {"message": message, "code": code, "type": type_}}, provider=provider
    )


# ---------------------------------------------------------------------------- the object

# What a response object repeats of its request, with the API's defaults when absent.
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}


def _echo_tool(tool: Any) -> Any:
    # A function tool's `parameters` and `strict` are required (nullable) in the response
    # object; the request may leave them out.
    if isinstance(tool, Mapping) and tool.get("type") == "function":
        return {"parameters": None, "strict": None, **tool}
    return tool


def request_echo(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters a response object repeats (``instructions``, ``tools``,
    ``tool_choice``, ``text``, ``metadata``, ...), from the client's request body.

    ``store`` is always echoed as false: meridian keeps nothing, whatever was asked.
    ``truncation`` is echoed as ``disabled``: meridian never drops input items itself.
    """
    echo = dict(_ECHO_DEFAULTS)
    for key in _ECHO_DEFAULTS:
        value = body.get(key)
        if value is not None and key != "truncation":
            echo[key] = value
    instructions = echo["instructions"]
    if instructions is not None and not isinstance(instructions, str | list):
        echo["instructions"] = None
    if isinstance(echo["tools"], list):
        echo["tools"] = [_echo_tool(t) for t in echo["tools"]]
    else:
        echo["tools"] = []
    reasoning = echo["reasoning"]
    if isinstance(reasoning, Mapping):
        echo["reasoning"] = {"effort": None, "summary": None, **reasoning}
    text = echo["text"]
    if isinstance(text, Mapping) and "format" not in text:
        echo["text"] = {"format": {"type": "text"}, **text}
    return echo


def response_object(
    *,
    id: str,
    model: str,
    created_at: int,
    status: Status,
    output: Sequence[OutputItem],
    usage: Usage | None,
    echo: Mapping[str, Any],
    incomplete_details: Mapping[str, str] | None = None,
    error: Mapping[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A ``response`` object, in the API's field order."""
    body: dict[str, Any] = {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
    }
    if status == "completed":
        body["completed_at"] = created_at if completed_at is None else completed_at
    body.update(echo)
    body["model"] = model
    body["output"] = list(output)
    body["store"] = False
    body["usage"] = None if usage is None else usage_json(usage)
    return body
