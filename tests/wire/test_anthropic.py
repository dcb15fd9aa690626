"""Anthropic responses, error envelopes and the /v1/models listing, checked against the
official SDK as the client that parses them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest

from meridian.errors import (
    ApiError,
    AuthenticationFailed,
    BillingError,
    InvalidRequest,
    MeridianError,
    NotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    RequestTooLarge,
    Timeout,
)
from meridian.model import (
    RedactedThinkingBlock,
    Response,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from meridian.wire.anthropic import (
    ModelInfo,
    model_object,
    models_page,
    parse_error_body,
    parse_response,
    render_error,
    render_response,
    usage_from_body,
)

UPSTREAM_BODY: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Let me look.", "signature": "EqQBCgIYAh=="},
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "web_search",
            "input": {"query": "q"},
        },
        {"type": "text", "text": "Switching it on.", "citations": None},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "light_on",
            "input": {"room": "hall"},
            "caller": {"type": "direct"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 410,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1800,
        "output_tokens": 57,
        "service_tier": "standard",
    },
}
PARSED = Response(
    id="msg_01Aq9w938a90dw8q",
    model="claude-sonnet-4-5-20250929",
    content=(
        ThinkingBlock("Let me look.", "EqQBCgIYAh=="),
        RedactedThinkingBlock("EmwKAhgB"),
        TextBlock("Switching it on."),
        ToolUseBlock("toolu_01", "light_on", {"room": "hall"}),
    ),
    stop_reason="tool_use",
    usage=Usage(input_tokens=410, output_tokens=57, cache_read_tokens=1800),
)


def sdk(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://meridian.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def test_parse_response() -> None:
    assert parse_response(UPSTREAM_BODY) == PARSED
    assert usage_from_body(UPSTREAM_BODY) == PARSED.usage


def test_parse_response_error_body_raises() -> None:
    with pytest.raises(RateLimited, match="slow down"):
        parse_response(
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
        )


def test_unknown_stop_reason_is_an_end_turn() -> None:
    assert parse_response({**UPSTREAM_BODY, "stop_reason": "new_reason"}).stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("given", "expected"), [("msg_abc", "msg_abc"), ("chatcmpl-9", "msg_chatcmpl-9")]
)
def test_render_response_ids(given: str, expected: str) -> None:
    assert render_response(Response(given, "m", (), "end_turn", Usage()))["id"] == expected


def test_render_response_round_trips_and_the_sdk_parses_it() -> None:
    response = PARSED
    body = render_response(response)
    assert body == {
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "EqQBCgIYAh=="},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Switching it on."},
            {"type": "tool_use", "id": "toolu_01", "name": "light_on", "input": {"room": "hall"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 410,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1800,
            "output_tokens": 57,
        },
    }
    assert parse_response(body) == response
    with sdk(lambda request: httpx2.Response(200, json=body)) as client:
        message = client.messages.create(
            model="alias", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert message.model_dump(exclude_none=True) == _without_none(body)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


# ---------------------------------------------------------------------------- errors

ERRORS: list[tuple[MeridianError, int, str, type[anthropic.APIStatusError]]] = [
    (InvalidRequest("messages: required"), 400, "invalid_request_error", anthropic.BadRequestError),
    (AuthenticationFailed("bad key"), 401, "authentication_error", anthropic.AuthenticationError),
    (BillingError("no credit"), 402, "billing_error", anthropic.PaymentRequiredError),
    (PermissionDenied("not yours"), 403, "permission_error", anthropic.PermissionDeniedError),
    (NotFound("no such model"), 404, "not_found_error", anthropic.NotFoundError),
    (RequestTooLarge("too big"), 413, "request_too_large", anthropic.ContentTooLargeError),
    (RateLimited("slow down", retry_after=3), 429, "rate_limit_error", anthropic.RateLimitError),
    (Overloaded("busy"), 529, "overloaded_error", anthropic.OverloadedError),
    (Overloaded("busy", status=503), 529, "overloaded_error", anthropic.OverloadedError),
    (Timeout("upstream slow"), 504, "timeout_error", anthropic.GatewayTimeoutError),
    (ApiError("broke"), 500, "api_error", anthropic.InternalServerError),
    (ApiError("bad gateway", status=502), 502, "api_error", anthropic.InternalServerError),
]


@pytest.mark.parametrize(
    ("err", "status", "kind", "sdk_error"), ERRORS, ids=lambda v: getattr(v, "kind", None)
)
def test_render_error(
    err: MeridianError, status: int, kind: str, sdk_error: type[anthropic.APIStatusError]
) -> None:
    got_status, body = render_error(err, "req_7")
    assert got_status == status
    assert body == {
        "type": "error",
        "error": {"type": kind, "message": err.message},
        "request_id": "req_7",
    }
    with (
        sdk(lambda request: httpx2.Response(status, json=body)) as client,
        pytest.raises(sdk_error) as info,
    ):
        client.messages.create(
            model="alias", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == status
    assert info.value.body == body


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests"}}',
            "Number of requests",
        ),
        (
            400,
            b'{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model"}}',
            "Invalid model",
        ),
        (404, b'{"error":"model not found"}', "model not found"),
        (422, b'{"detail":"validation failed"}', "validation failed"),
        (500, b'{"message":"internal"}', "internal"),
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
            "502 Bad Gateway",
        ),
        (503, b"  upstream connect error  ", "upstream connect error"),
        (500, b"", "upstream returned HTTP 500"),
        (500, b"<html><body>no title</body></html>", "upstream returned HTTP 500"),
        (500, b"\xff\xfe oops", "\ufffd\ufffd oops"),
    ],
)
def test_parse_error_body(status: int, body: bytes, expected: str) -> None:
    assert parse_error_body(status, body) == expected


def test_parse_error_body_truncates() -> None:
    message = parse_error_body(500, b"x" * 5000)
    assert len(message) <= 501 and message.endswith("…")


# ---------------------------------------------------------------------------- models

MODELS = [
    ModelInfo(f"model-{i}", f"Model {i}", 1_740_000_000 + i, 200_000, 64_000, thinking=i % 2 == 0)
    for i in range(7)
]


def test_model_object() -> None:
    obj = model_object(
        ModelInfo("sonnet", "Claude Sonnet", 1_739_923_200, 200_000, 64_000, thinking=True)
    )
    assert obj["type"] == "model"
    assert obj["created_at"] == "2025-02-19T00:00:00Z"
    assert datetime.fromisoformat(obj["created_at"]) == datetime.fromtimestamp(1_739_923_200, UTC)
    assert (obj["max_input_tokens"], obj["max_tokens"]) == (200_000, 64_000)
    assert obj["capabilities"]["thinking"]["supported"] is True
    assert obj["capabilities"]["image_input"] == {"supported": True}
    custom = ModelInfo("x", "X", 0, capabilities={"batch": {"supported": True}})
    assert model_object(custom)["capabilities"] == {"batch": {"supported": True}}


@pytest.mark.parametrize(
    ("limit", "after", "before", "ids", "has_more"),
    [
        (20, None, None, [0, 1, 2, 3, 4, 5, 6], False),
        (3, None, None, [0, 1, 2], True),
        (3, "model-2", None, [3, 4, 5], True),
        (3, "model-3", None, [4, 5, 6], False),
        (3, "model-6", None, [], False),
        (3, "gone", None, [], False),
        (3, None, "model-6", [3, 4, 5], True),
        (3, None, "model-3", [0, 1, 2], False),
        (3, None, "model-1", [0], False),
        (3, None, "model-0", [], False),
        (1000, None, None, [0, 1, 2, 3, 4, 5, 6], False),
    ],
)
def test_models_page(
    limit: int, after: str | None, before: str | None, ids: list[int], has_more: bool
) -> None:
    page = models_page(MODELS, limit=limit, after_id=after, before_id=before)
    assert [m["id"] for m in page["data"]] == [f"model-{i}" for i in ids]
    assert page["has_more"] is has_more
    assert page["first_id"] == (f"model-{ids[0]}" if ids else None)
    assert page["last_id"] == (f"model-{ids[-1]}" if ids else None)


@pytest.mark.parametrize(
    ("limit", "after", "before", "param"),
    [(0, None, None, "limit"), (1001, None, None, "limit"), (5, "a", "b", "before_id")],
)
def test_models_page_rejects(limit: int, after: str | None, before: str | None, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        models_page(MODELS, limit=limit, after_id=after, before_id=before)
    assert info.value.param == param


def test_the_sdk_pages_through_the_listing() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        q = request.url.params
        if request.url.path.endswith("/v1/models"):
            page = models_page(
                MODELS,
                limit=int(q.get("limit", 20)),
                after_id=q.get("after_id"),
                before_id=q.get("before_id"),
            )
            return httpx2.Response(200, json=page)
        model_id = request.url.path.rsplit("/", 1)[1]
        return httpx2.Response(200, json=model_object(next(m for m in MODELS if m.id == model_id)))

    with sdk(handler) as client:
        listed = list(client.models.list(limit=3))
        one = client.models.retrieve("model-4")
    assert [m.id for m in listed] == [m.id for m in MODELS]
    assert listed[2].display_name == "Model 2"
    assert listed[2].created_at == datetime.fromtimestamp(1_740_000_002, UTC)
    assert listed[2].capabilities is not None and listed[2].capabilities.thinking.supported is True
    assert (one.id, one.max_tokens, one.max_input_tokens) == ("model-4", 64_000, 200_000)
