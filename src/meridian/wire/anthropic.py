"""The Anthropic Messages API <-> the canonical model: the one import the surfaces and
providers use. No I/O; no HTTP library.

The work is split by noun: `anthropic_request` (request bodies), `anthropic_response`
(responses, usage, error envelopes) and `anthropic_stream` (SSE streams); the ``/v1/models``
listing lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from meridian.errors import InvalidRequest
from meridian.wire.anthropic_render import DEFAULT_MAX_TOKENS, render_request
from meridian.wire.anthropic_request import parse_request
from meridian.wire.anthropic_response import (
    parse_error_body,
    parse_response,
    render_error,
    render_response,
    usage_from_body,
)
from meridian.wire.anthropic_stream import StreamDecoder, StreamEncoder, UsageSniffer
from meridian.wire.models import ModelInfo

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ModelInfo",
    "StreamDecoder",
    "StreamEncoder",
    "UsageSniffer",
    "model_object",
    "models_page",
    "parse_error_body",
    "parse_request",
    "parse_response",
    "render_error",
    "render_request",
    "render_response",
    "usage_from_body",
]


def _flag(supported: bool) -> dict[str, bool]:
    return {"supported": supported}


def _capabilities(model: ModelInfo) -> dict[str, Any]:
    # What the model and the provider serving it can do (meridian's catalog, the provider's
    # declared capabilities, the config's overrides); what meridian itself does not offer
    # (batches, server tools, ...) is off. The shape is the SDK's ModelCapabilities.
    off = _flag(False)
    effort = _flag(model.effort)
    return {
        "batch": off,
        "citations": off,
        "code_execution": off,
        "context_management": off,
        "effort": {
            "supported": model.effort,
            "low": effort,
            "medium": effort,
            "high": effort,
            "max": effort,
        },
        "image_input": _flag(model.vision),
        "pdf_input": _flag(model.pdf),
        "server_tools": {"supported": False, "code_execution": off, "web_search": off},
        "structured_outputs": _flag(model.structured_output),
        "thinking": {
            "supported": model.thinking,
            "types": {
                "enabled": _flag(model.thinking),
                "disabled": _flag(True),
                "adaptive": off,
                "between_tools": off,
            },
        },
    }


def model_object(model: ModelInfo) -> dict[str, Any]:
    """One model in Anthropic's shape (``GET /v1/models/{id}`` and each listing entry)."""
    created = datetime.fromtimestamp(model.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": created,
        "lifecycle": "active",
        "max_input_tokens": model.max_input_tokens,
        "max_tokens": model.max_tokens,
        "capabilities": dict(model.capabilities)
        if model.capabilities is not None
        else _capabilities(model),
    }


def models_page(
    models: Sequence[ModelInfo],
    *,
    limit: int,
    after_id: str | None,
    before_id: str | None,
) -> dict[str, Any]:
    """A ``GET /v1/models`` page in the order given. An unknown cursor id (a model removed
    between pages) gives an empty last page rather than an error."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest(f"limit: must be between 1 and 1000, got {limit}", param="limit")
    if after_id is not None and before_id is not None:
        raise InvalidRequest("after_id and before_id cannot be used together", param="before_id")
    ids = [m.id for m in models]
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(0, end - limit)
        page, has_more = models[start:end], start > 0
    else:
        start = ids.index(after_id) + 1 if after_id in ids else 0
        if after_id is not None and after_id not in ids:
            start = len(ids)
        page, has_more = models[start : start + limit], start + limit < len(ids)
    return {
        "data": [model_object(m) for m in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }
