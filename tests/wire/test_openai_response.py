"""Non-streaming responses, usage, errors and /v1/models in the OpenAI shape.

What meridian renders is read back through the official openai SDK (over an in-process
MockTransport) so the test fails if a real client could not use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
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
from meridian.model import Response, StopReason, TextBlock, ThinkingBlock, ToolUseBlock, Usage
from meridian.wire.models import ModelInfo
from meridian.wire.openai_chat import (
    model_object,
    models_list,
    parse_error_body,
    parse_response,
    render_error,
    render_response,
    usage_from_body,
)


def completion(
    message: dict[str, Any], finish: str | None = "stop", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        **extra,
    }


USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 30,
    "total_tokens": 130,
    "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 12},
}

PARSE: list[tuple[str, dict[str, Any], tuple[Any, ...], StopReason | None]] = [
    ("text", completion({"content": "Hello", "refusal": None}), (TextBlock("Hello"),), "end_turn"),
    (
        "tool calls only",
        completion(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "g", "arguments": ""},
                    },
                ],
            },
            "tool_calls",
        ),
        (ToolUseBlock("call_1", "f", {"a": 1}), ToolUseBlock("call_2", "g", {})),
        "tool_use",
    ),
    (
        "reasoning_content first (vLLM, DeepSeek)",
        completion({"content": "42", "reasoning_content": "think"}),
        (ThinkingBlock("think"), TextBlock("42")),
        "end_turn",
    ),
    (
        "reasoning (OpenRouter)",
        completion({"content": "42", "reasoning": "think"}),
        (ThinkingBlock("think"), TextBlock("42")),
        "end_turn",
    ),
    ("length", completion({"content": "cut"}, "length"), (TextBlock("cut"),), "max_tokens"),
    ("content_filter", completion({"content": ""}, "content_filter"), (), "refusal"),
    (
        "tool calls with finish stop (older Ollama)",
        completion(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "x",
                        "type": "function",
                        "function": {"name": "f", "arguments": {"k": "v"}},
                    }
                ],
            },
            "stop",
        ),
        (ToolUseBlock("x", "f", {"k": "v"}),),
        "tool_use",
    ),
    (
        "unparseable arguments are kept, not dropped",
        completion(
            {"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{bad"}}]},
            "tool_calls",
        ),
        (ToolUseBlock("x", "f", {"INVALID_JSON": "{bad"}),),
        "tool_use",
    ),
    (
        "refusal",
        completion({"content": None, "refusal": "I can't"}, "stop"),
        (TextBlock("I can't"),),
        "refusal",
    ),
    ("no finish_reason", completion({"content": "x"}, None), (TextBlock("x"),), None),
]


@pytest.mark.parametrize(
    ("raw", "content", "stop"), [p[1:] for p in PARSE], ids=[p[0] for p in PARSE]
)
def test_parse_response(
    raw: dict[str, Any], content: tuple[Any, ...], stop: StopReason | None
) -> None:
    response = parse_response(raw)
    assert response.content == content
    assert response.stop_reason == stop
    assert (response.id, response.model) == ("chatcmpl-abc", "gpt-4o-2024-08-06")


def test_parse_response_usage() -> None:
    usage = parse_response(completion({"content": "x"}, usage=USAGE)).usage
    assert usage == Usage(
        input_tokens=40, output_tokens=30, cache_read_tokens=60, reasoning_tokens=12
    )
    assert usage.total_input_tokens == 100


@pytest.mark.parametrize(
    ("raw", "error", "status"),
    [
        (
            {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            RateLimited,
            429,
        ),
        ({"error": {"message": "over", "code": 429}}, RateLimited, 429),  # OpenRouter: numeric code
        (
            {
                "error": {
                    "message": "quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            RateLimited,
            429,
        ),
        ({"error": {"message": "bad", "type": "invalid_request_error"}}, InvalidRequest, 400),
        ({"error": "model 'x' not found"}, ApiError, 502),  # Ollama: a bare string
        ({"choices": []}, ApiError, 502),
    ],
)
def test_parse_response_errors(
    raw: dict[str, Any], error: type[MeridianError], status: int
) -> None:
    with pytest.raises(error) as info:
        parse_response(raw, provider="up")
    assert type(info.value) is error
    assert info.value.status == status
    assert info.value.message.startswith("up: ")


def test_quota_error_is_not_retryable() -> None:
    with pytest.raises(RateLimited) as info:
        parse_response({"error": {"message": "quota", "code": "insufficient_quota"}})
    assert info.value.should_retry is False
    assert info.value.code == "insufficient_quota"


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        ({}, Usage()),
        ({"usage": None}, Usage()),
        (
            {"usage": {"prompt_tokens": 5, "completion_tokens": 2}},
            Usage(input_tokens=5, output_tokens=2),
        ),
        (
            {"usage": USAGE},
            Usage(input_tokens=40, output_tokens=30, cache_read_tokens=60, reasoning_tokens=12),
        ),
        (
            {"usage": {"prompt_tokens": 5, "completion_tokens": 2, "cost": 0.0012}},
            Usage(input_tokens=5, output_tokens=2, cost_usd=0.0012),
        ),
        ({"usage": {"prompt_tokens": "5", "completion_tokens_details": None}}, Usage()),
    ],
)
def test_usage_from_body(raw: dict[str, Any], usage: Usage) -> None:
    assert usage_from_body(raw) == usage


# ---------------------------------------------------------------------------- through the SDK


@pytest.fixture
def serve() -> Iterator[Callable[[int, dict[str, Any]], openai.OpenAI]]:
    """A client whose every request is answered with (status, body)."""
    clients: list[openai.OpenAI] = []

    def make(status: int, answer: dict[str, Any]) -> openai.OpenAI:
        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(status, json=answer)

        http = httpx2.Client(transport=httpx2.MockTransport(handler), timeout=5)
        client = openai.OpenAI(
            api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _ask(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model="alias", messages=[{"role": "user", "content": "hi"}]
    )


def test_render_response_text_through_the_sdk(
    serve: Callable[[int, dict[str, Any]], openai.OpenAI],
) -> None:
    response = Response(
        "msg_01",
        "claude-x",
        (ThinkingBlock("hmm", "sig"), TextBlock("Hello "), TextBlock("world")),
        "end_turn",
        Usage(
            input_tokens=10,
            output_tokens=5,
            cache_read_tokens=100,
            cache_creation_tokens=20,
            reasoning_tokens=3,
        ),
    )
    body = render_response(response, model="alias", created=1234)
    got = _ask(serve(200, body))
    assert got.id == "chatcmpl-msg_01"
    assert (got.object, got.created, got.model) == ("chat.completion", 1234, "alias")
    choice = got.choices[0]
    assert choice.message.content == "Hello world"
    assert choice.message.tool_calls is None
    assert choice.message.model_extra == {"reasoning_content": "hmm"}
    assert choice.finish_reason == "stop"
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (
        130,
        5,
        135,
    )
    assert got.usage.prompt_tokens_details is not None
    assert got.usage.prompt_tokens_details.cached_tokens == 100
    assert got.usage.completion_tokens_details is not None
    assert got.usage.completion_tokens_details.reasoning_tokens == 3


def test_render_response_tool_calls_through_the_sdk(
    serve: Callable[[int, dict[str, Any]], openai.OpenAI],
) -> None:
    response = Response(
        "chatcmpl-keep",
        "m",
        (
            ToolUseBlock("toolu_1", "light", {"room": "kitchen", "on": True}),
            ToolUseBlock("toolu_2", "noop", {}),
        ),
        "tool_use",
        Usage(),
    )
    got = _ask(serve(200, render_response(response, model="alias", created=1)))
    assert got.id == "chatcmpl-keep"
    message = got.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    calls = [
        (c.id, c.type, c.function.name, json.loads(c.function.arguments))
        for c in message.tool_calls
    ]
    assert calls == [
        ("toolu_1", "function", "light", {"room": "kitchen", "on": True}),
        ("toolu_2", "function", "noop", {}),
    ]
    assert got.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop: StopReason | None, finish: str) -> None:
    body = render_response(Response("r", "m", (), stop, Usage()), model="a", created=1)
    assert body["choices"][0]["finish_reason"] == finish
    assert body["choices"][0]["message"]["content"] == ""  # never null without tool calls


def test_parse_render_round_trip() -> None:
    raw = completion(
        {
            "content": "Sure",
            "reasoning_content": "plan",
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"q":"x"}'},
                }
            ],
        },
        "tool_calls",
        usage=USAGE,
    )
    again = render_response(parse_response(raw), model="gpt-4o-2024-08-06", created=1700000000)
    assert (
        again["choices"][0]["message"]["tool_calls"] == raw["choices"][0]["message"]["tool_calls"]
    )
    assert again["choices"][0]["message"]["content"] == "Sure"
    assert again["choices"][0]["message"]["reasoning_content"] == "plan"
    assert again["usage"]["prompt_tokens"] == 100
    assert again["usage"]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert parse_response(again) == parse_response(raw)


# ---------------------------------------------------------------------------- errors

ERRORS: list[tuple[MeridianError, int, str, str | None]] = [
    (InvalidRequest("bad", param="messages"), 400, "invalid_request_error", None),
    (AuthenticationFailed("no key"), 401, "authentication_error", "invalid_api_key"),
    (PermissionDenied("no"), 403, "permission_error", None),
    (
        NotFound("The model 'x' does not exist", param="model"),
        404,
        "invalid_request_error",
        "model_not_found",
    ),
    (NotFound("no such route"), 404, "invalid_request_error", None),
    (RequestTooLarge("big"), 413, "invalid_request_error", None),
    (RateLimited("slow", retry_after=3), 429, "rate_limit_error", "rate_limit_exceeded"),
    (
        RateLimited("window used up", should_retry=False, code="insufficient_quota"),
        429,
        "insufficient_quota",
        "insufficient_quota",
    ),
    (BillingError("pay"), 429, "insufficient_quota", "insufficient_quota"),
    (Overloaded("busy"), 503, "server_error", None),
    (Timeout("slow upstream"), 504, "timeout_error", None),
    (ApiError("boom"), 500, "server_error", None),
    (ApiError("bad gateway", status=502), 502, "server_error", None),
]


@pytest.mark.parametrize(
    ("err", "status", "type_", "code"), ERRORS, ids=[type(e[0]).__name__ for e in ERRORS]
)
def test_render_error(err: MeridianError, status: int, type_: str, code: str | None) -> None:
    got_status, body = render_error(err)
    assert got_status == status
    assert body == {
        "error": {"message": err.message, "type": type_, "param": err.param, "code": code}
    }


@pytest.mark.parametrize(
    ("err", "sdk_error"),
    [
        (InvalidRequest("bad", param="model"), openai.BadRequestError),
        (AuthenticationFailed("no key"), openai.AuthenticationError),
        (NotFound("model x"), openai.NotFoundError),
        (RateLimited("slow"), openai.RateLimitError),
        (Overloaded("busy"), openai.InternalServerError),
    ],
)
def test_errors_through_the_sdk(
    serve: Callable[[int, dict[str, Any]], openai.OpenAI],
    err: MeridianError,
    sdk_error: type[openai.APIStatusError],
) -> None:
    status, body = render_error(err)
    with pytest.raises(sdk_error) as info:
        _ask(serve(status, body))
    assert info.value.message.endswith(err.message)
    assert info.value.code == render_error(err)[1]["error"]["code"]
    assert info.value.param == err.param


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (400, b'{"error":{"message":"bad thing","type":"invalid_request_error"}}', "bad thing"),
        (
            404,
            b'{"error":"model \\"x\\" not found, try pulling it first"}',
            'model "x" not found, try pulling it first',
        ),
        (
            429,
            # Gemini's OpenAI endpoint answers errors as a one-element list.
            b'[{"error":{"code":429,"message":"Resource exhausted",'
            b'"status":"RESOURCE_EXHAUSTED"}}]',
            "Resource exhausted",
        ),
        (
            422,
            b'{"detail":[{"loc":["body"],"msg":"field required"}]}',
            '[{"loc":["body"],"msg":"field required"}]',
        ),
        (502, b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (500, b"", "HTTP 500"),
        (500, b"   ", "HTTP 500"),
        (500, b"{}", "{}"),
    ],
)
def test_parse_error_body(status: int, raw: bytes, message: str) -> None:
    assert parse_error_body(status, raw) == message


def test_parse_error_body_is_bounded() -> None:
    assert len(parse_error_body(500, b"x" * 10_000)) == 500


# ---------------------------------------------------------------------------- models


def test_models_through_the_sdk(serve: Callable[[int, dict[str, Any]], openai.OpenAI]) -> None:
    models = [
        ModelInfo("gpt-4o", "GPT-4o", 1715367049, owned_by="openai"),
        ModelInfo("claude-sonnet", "Claude Sonnet", 1740000000),
    ]
    page = serve(200, models_list(models)).models.list()
    got = [(m.id, m.object, m.created, m.owned_by) for m in page.data]
    assert got == [
        ("gpt-4o", "model", 1715367049, "openai"),
        ("claude-sonnet", "model", 1740000000, "meridian"),
    ]
    one = serve(200, model_object(models[1])).models.retrieve("claude-sonnet")
    assert (one.id, one.owned_by) == ("claude-sonnet", "meridian")
