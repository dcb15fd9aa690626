"""Non-streaming Responses answers: canonical -> the ``response`` object (validated strictly
with the openai SDK's model and read through ``client.responses.create``), upstream
``response`` objects -> canonical, usage, and the error envelope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses import Response as SdkResponse

from meridian.errors import (
    ApiError,
    AuthenticationFailed,
    InvalidRequest,
    MeridianError,
    NotFound,
    Overloaded,
    RateLimited,
    Timeout,
)
from meridian.model import (
    RedactedThinkingBlock,
    Response,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from meridian.wire.openai_responses import (
    REDACTED_PREFIX,
    parse_response,
    render_error,
    render_response,
    request_echo,
    usage_from_body,
)

CREATED = 1755427000

ANSWER = Response(
    "msg_01",
    "claude-x",
    (
        ThinkingBlock("Think.", "sig=="),
        RedactedThinkingBlock("cmVk"),
        TextBlock("One. "),
        TextBlock("Two."),
        ToolUseBlock("toolu_1", "lookup", {"q": "x"}),
        ToolUseBlock("toolu_2", "noop", {}),
    ),
    "tool_use",
    Usage(
        input_tokens=10,
        output_tokens=30,
        cache_read_tokens=100,
        cache_creation_tokens=5,
        reasoning_tokens=12,
    ),
)


def test_render_response() -> None:
    rendered = render_response(ANSWER, model="alias", created_at=CREATED)
    SdkResponse.model_validate(rendered, strict=True)
    assert {k: rendered[k] for k in ("id", "object", "created_at", "status", "model")} == {
        "id": "resp_msg_01",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": "alias",
    }
    assert (rendered["completed_at"], rendered["incomplete_details"], rendered["error"]) == (
        CREATED,
        None,
        None,
    )
    assert rendered["output"] == [
        {
            "id": "rs_msg_01_0",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Think."}],
            "encrypted_content": "sig==",
        },
        {
            "id": "rs_msg_01_1",
            "type": "reasoning",
            "summary": [],
            "encrypted_content": REDACTED_PREFIX + "cmVk",
        },
        {
            "id": "msg_msg_01_2",
            "type": "message",
            "status": "completed",
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": "One. "},
                {"type": "output_text", "annotations": [], "logprobs": [], "text": "Two."},
            ],
            "role": "assistant",
        },
        {
            "id": "fc_msg_01_3",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"q":"x"}',
            "call_id": "toolu_1",
            "name": "lookup",
        },
        {
            "id": "fc_msg_01_4",
            "type": "function_call",
            "status": "completed",
            "arguments": "{}",
            "call_id": "toolu_2",
            "name": "noop",
        },
    ]
    assert rendered["usage"] == {
        "input_tokens": 115,
        "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 145,
    }
    assert rendered["store"] is False


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        ("end_turn", "completed", None),
        ("stop_sequence", "completed", None),
        ("pause_turn", "completed", None),
        ("tool_use", "completed", None),
        (None, "completed", None),
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("model_context_window_exceeded", "incomplete", "max_output_tokens"),
        ("refusal", "incomplete", "content_filter"),
    ],
)
def test_status(stop: StopReason | None, status: str, reason: str | None) -> None:
    answer = Response("m", "m", (TextBlock("x"),), stop, Usage())
    rendered = render_response(answer, model="alias", created_at=CREATED)
    SdkResponse.model_validate(rendered, strict=True)
    assert rendered["status"] == status
    assert rendered["incomplete_details"] == (reason and {"reason": reason})
    assert rendered["output"][0]["status"] == ("incomplete" if reason else "completed")
    assert ("completed_at" in rendered) == (status == "completed")


def test_echo_of_the_request() -> None:
    body = {
        "model": "alias",
        "input": "hi",
        "instructions": "Be terse.",
        "tools": [
            {"type": "function", "name": "f", "description": "d"},
            {"type": "function", "name": "g", "parameters": {"type": "object"}, "strict": True},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "max_output_tokens": 64,
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "high"},
        "metadata": {"k": "v"},
        "temperature": 0.1,
        "top_p": 0.5,
        "user": "u",
        "safety_identifier": "s",
        "store": True,
        "truncation": "auto",
        "previous_response_id": None,
    }
    rendered = render_response(
        Response("m", "m", (), "end_turn", Usage()),
        model="alias",
        created_at=CREATED,
        echo=request_echo(body),
    )
    parsed = SdkResponse.model_validate(rendered, strict=True)
    assert parsed.instructions == "Be terse."
    assert [(t.name, t.parameters, t.strict) for t in parsed.tools] == [  # type: ignore[union-attr]
        ("f", None, None),
        ("g", {"type": "object"}, True),
    ]
    assert parsed.tool_choice.name == "f"  # type: ignore[union-attr]
    assert (parsed.parallel_tool_calls, parsed.max_output_tokens) == (False, 64)
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_object"
    assert parsed.reasoning is not None and parsed.reasoning.effort == "high"
    assert (parsed.metadata, parsed.temperature, parsed.top_p) == ({"k": "v"}, 0.1, 0.5)
    assert (parsed.user, parsed.safety_identifier) == ("u", "s")
    # Never stored and never truncated by meridian, whatever the client asked.
    assert (rendered["store"], parsed.truncation) == (False, "disabled")


def test_defaults_without_a_request() -> None:
    rendered = render_response(Response("", "m", (), "end_turn", Usage()), model="a", created_at=1)
    parsed = SdkResponse.model_validate(rendered, strict=True)
    assert rendered["id"].startswith("resp_") and len(rendered["id"]) > 10
    assert (parsed.tools, parsed.tool_choice, parsed.parallel_tool_calls) == ([], "auto", True)
    assert parsed.output == [] and parsed.output_text == ""


@pytest.fixture
def serve() -> Iterator[Callable[[int, dict[str, Any]], openai.OpenAI]]:
    """An openai client whose every request gets ``answer`` with ``status``."""
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


def test_through_the_sdk(serve: Callable[[int, dict[str, Any]], openai.OpenAI]) -> None:
    client = serve(200, render_response(ANSWER, model="alias", created_at=CREATED))
    got = client.responses.create(model="alias", input="hi")
    assert got.output_text == "One. Two."
    assert [o.type for o in got.output] == [
        "reasoning",
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    calls = [(o.call_id, o.name, o.arguments) for o in got.output if o.type == "function_call"]
    assert calls == [("toolu_1", "lookup", '{"q":"x"}'), ("toolu_2", "noop", "{}")]
    assert got.usage is not None
    assert got.usage.input_tokens_details.cached_tokens == 100
    assert got.usage.output_tokens_details.reasoning_tokens == 12


@pytest.mark.parametrize(
    ("err", "sdk_error", "status", "type_"),
    [
        (
            InvalidRequest("send the full input", param="previous_response_id"),
            openai.BadRequestError,
            400,
            "invalid_request_error",
        ),
        (AuthenticationFailed("no key"), openai.AuthenticationError, 401, "authentication_error"),
        (NotFound("model x"), openai.NotFoundError, 404, "invalid_request_error"),
        (RateLimited("slow"), openai.RateLimitError, 429, "rate_limit_error"),
        (Overloaded("busy"), openai.InternalServerError, 503, "server_error"),
        (Timeout("late"), openai.APIStatusError, 504, "timeout_error"),
    ],
)
def test_errors_through_the_sdk(
    serve: Callable[[int, dict[str, Any]], openai.OpenAI],
    err: MeridianError,
    sdk_error: type[openai.APIStatusError],
    status: int,
    type_: str,
) -> None:
    """Errors before the first byte: the OpenAI envelope, shared with Chat Completions."""
    code, payload = render_error(err)
    assert (code, payload["error"]["type"], payload["error"]["param"]) == (status, type_, err.param)
    client = serve(code, payload)
    with pytest.raises(sdk_error) as info:
        client.responses.create(model="alias", input="hi")
    assert info.value.status_code == status
    assert err.message in str(info.value)


# ---------------------------------------------------------------------------- parse (upstream)

UPSTREAM = {
    "id": "resp_68a1",
    "object": "response",
    "created_at": 1755427010,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-5-mini-2025-08-07",
    "output": [
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [
                {"type": "summary_text", "text": "A"},
                {"type": "summary_text", "text": "B"},
            ],
            "encrypted_content": "gAAAA==",
        },
        {
            "id": "ws_1",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search"},
        },
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hi", "annotations": [{"type": "url_citation"}]}
            ],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"a": [1]}',
        },
    ],
    "usage": {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 100},
        "output_tokens": 80,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 1280,
    },
    "store": False,
    "some_new_field": {"x": 1},
}


def test_parse_response() -> None:
    assert parse_response(UPSTREAM) == Response(
        "resp_68a1",
        "gpt-5-mini-2025-08-07",
        (
            ThinkingBlock("A\n\nB", "gAAAA=="),
            TextBlock("Hi"),
            ToolUseBlock("call_1", "f", {"a": [1]}),
        ),
        "tool_use",
        Usage(
            input_tokens=76,
            output_tokens=80,
            cache_read_tokens=1024,
            cache_creation_tokens=100,
            reasoning_tokens=64,
        ),
    )


@pytest.mark.parametrize(
    ("changes", "stop"),
    [
        ({"output": UPSTREAM["output"][2:3]}, "end_turn"),
        (
            {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
            "max_tokens",
        ),
        ({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}}, "refusal"),
        (
            {
                "output": [
                    {"type": "message", "content": [{"type": "refusal", "refusal": "I can't."}]}
                ]
            },
            "refusal",
        ),
    ],
)
def test_parse_stop_reasons(changes: dict[str, Any], stop: StopReason) -> None:
    assert parse_response({**UPSTREAM, **changes}).stop_reason == stop


def test_render_then_parse_is_the_same_answer() -> None:
    rendered = render_response(ANSWER, model="alias", created_at=CREATED)
    parsed = parse_response(rendered)
    assert parsed.content == ANSWER.content
    assert (parsed.stop_reason, parsed.usage) == (ANSWER.stop_reason, ANSWER.usage)


@pytest.mark.parametrize(
    ("body", "error", "status", "words"),
    [
        (
            {
                "status": "failed",
                "error": {"code": "server_error", "message": "The model crashed."},
            },
            ApiError,
            500,
            "The model crashed.",
        ),
        (
            {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "TPM"}},
            RateLimited,
            429,
            "TPM",
        ),
        (
            {"status": "failed", "error": {"code": "invalid_image_url", "message": "bad url"}},
            InvalidRequest,
            400,
            "bad url",
        ),
        (
            {"status": "failed", "error": {"code": "invalid_prompt", "message": "flagged"}},
            InvalidRequest,
            400,
            "flagged",
        ),
        ({"status": "failed", "error": None}, ApiError, 502, "upstream reported an error"),
        ({"status": "in_progress"}, ApiError, 502, "still 'in_progress'"),
    ],
)
def test_parse_failures(
    body: dict[str, Any], error: type[MeridianError], status: int, words: str
) -> None:
    with pytest.raises(error) as info:
        parse_response({**UPSTREAM, **body}, provider="up")
    assert (type(info.value), info.value.status) == (error, status)
    assert info.value.message.startswith("up: ") and words in info.value.message


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, Usage()),
        ("oops", Usage()),
        ({"input_tokens": 5, "output_tokens": 2}, Usage(5, 2)),
        (
            {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 1},
            Usage(input_tokens=10, output_tokens=1, cache_read_tokens=40),
        ),
    ],
)
def test_usage_from_body(usage: Any, expected: Usage) -> None:
    assert usage_from_body({"usage": usage}) == expected
