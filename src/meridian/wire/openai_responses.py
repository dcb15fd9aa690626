"""The OpenAI Responses API (``POST /v1/responses``) <-> the canonical model. Sans-IO.

This module is the one to import. It holds the response side and re-exports the rest,
which lives in smaller modules:

- `openai_responses_request`: `parse_request`, `check_request`, `require_stateless`,
  `stateless_headers`, `builtin_tools` (client side); `openai_responses_input`: the
  ``input`` items;
- `openai_responses_render`: `render_request` (upstream side);
- `openai_responses_encoder`: `StreamEncoder` (events -> client SSE);
- `openai_responses_stream`: `StreamDecoder` (upstream SSE -> events);
  `openai_responses_sniffer`: `UsageSniffer` (for the pass-through relay);
- `openai_responses_items`: output items <-> blocks; `openai_responses_common`: usage,
  status, errors, the response object and `request_echo`.

Errors before the first byte use the OpenAI envelope of Chat Completions (`render_error`,
the same function); after it, `StreamEncoder.error`.

meridian keeps no state: on the translated path ``previous_response_id``, ``conversation``,
stored prompts and background mode are a 400 that says to send the full input, ``store``
is answered ``false``, and OpenAI's built-in tools are a 400 naming the tool. The
pass-through path forwards all of them to an upstream that serves Responses natively.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meridian.errors import ApiError
from meridian.model import Block, Response, ToolUseBlock, Usage
from meridian.wire.openai_common import parse_error_body, render_error
from meridian.wire.openai_responses_common import (
    RESPONSES,
    failure,
    request_echo,
    response_object,
    status_of,
    stop_reason_of,
    usage_from_json,
    usage_json,
)
from meridian.wire.openai_responses_encoder import StreamEncoder
from meridian.wire.openai_responses_items import (
    REDACTED_PREFIX,
    item_blocks,
    output_items,
    response_id,
)
from meridian.wire.openai_responses_render import render_request
from meridian.wire.openai_responses_request import (
    STATELESS_HEADER,
    builtin_tools,
    check_request,
    parse_request,
    require_stateless,
    stateless_headers,
)
from meridian.wire.openai_responses_sniffer import UsageSniffer
from meridian.wire.openai_responses_stream import StreamDecoder

__all__ = [
    "REDACTED_PREFIX",
    "RESPONSES",
    "STATELESS_HEADER",
    "StreamDecoder",
    "StreamEncoder",
    "UsageSniffer",
    "builtin_tools",
    "check_request",
    "parse_error_body",
    "parse_request",
    "parse_response",
    "render_error",
    "render_request",
    "render_response",
    "request_echo",
    "require_stateless",
    "stateless_headers",
    "usage_from_body",
    "usage_json",
]


def render_response(
    response: Response,
    *,
    model: str,
    created_at: int,
    echo: Mapping[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """Canonical `Response` -> the ``response`` object a client gets.

    ``model`` is the name the client asked for; ``echo`` is `request_echo` of its request
    body. A stop at ``max_tokens`` is ``status: "incomplete"`` with ``incomplete_details``
    ``{"reason": "max_output_tokens"}``, a refusal ``{"reason": "content_filter"}``.
    """
    rid = response_id(response.id)
    status, details = status_of(response.stop_reason)
    return response_object(
        id=rid,
        model=model,
        created_at=created_at,
        status=status,
        output=output_items(response.content, rid, status),
        usage=response.usage,
        echo=request_echo({}) if echo is None else echo,
        incomplete_details=details,
        completed_at=completed_at,
    )


def usage_from_body(body: Mapping[str, Any]) -> Usage:
    """Canonical usage from a ``response`` object (the pass-through ledger reads this)."""
    return usage_from_json(body.get("usage"))


def parse_response(body: Mapping[str, Any], *, provider: str = "upstream") -> Response:
    """An upstream's non-streaming ``response`` object -> canonical `Response`.

    Items of built-in tools (web search calls and the like) have no canonical form and are
    skipped; the text the model wrote about them is in its message items.
    """
    status = body.get("status")
    error = body.get("error")
    if status == "failed" or isinstance(error, Mapping):
        raise failure(error if isinstance(error, Mapping) else {}, provider=provider)
    if status not in ("completed", "incomplete", None):
        raise ApiError(
            f"{provider}: the upstream answered with a response still {status!r}", status=502
        )
    content: list[Block] = []
    refused = False
    output = body.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, Mapping):
            blocks, refusal = item_blocks(item)
            content.extend(blocks)
            refused = refused or refusal
    stop = stop_reason_of(
        status,
        body.get("incomplete_details"),
        saw_tool_calls=any(isinstance(b, ToolUseBlock) for b in content),
        refused=refused,
    )
    return Response(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        content=tuple(content),
        stop_reason=stop,
        usage=usage_from_json(body.get("usage")),
    )
