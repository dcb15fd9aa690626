"""Canonical `Request` -> an upstream's Responses body, checked against the openai SDK's own
request types, and parse -> render -> parse round trips."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types.responses import response_create_params

from meridian.errors import InvalidRequest
from meridian.model import (
    DocumentBlock,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_responses import REDACTED_PREFIX, parse_request, render_request

CREATE_PARAMS = pydantic.TypeAdapter(response_create_params.ResponseCreateParamsNonStreaming)

HI = (Message("user", (TextBlock("hi"),)),)
OBJECT = {"type": "object", "properties": {}}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "input": "hi", **fields}


def request(**fields: Any) -> Request:
    return Request(model="alias", messages=HI, **fields)


CONVERSATION = Request(
    model="gpt-5-mini",
    system=(TextBlock("Be terse."), TextBlock("Use metric.")),
    messages=(
        Message("user", (TextBlock("weather?"), ImageBlock(media_type="image/png", data="iVBO"))),
        Message(
            "assistant",
            (
                ThinkingBlock("unsigned chat reasoning"),
                TextBlock("Checking."),
                ToolUseBlock("call_a", "get_weather", {"city": "Paris"}),
                ToolUseBlock("call_b", "get_weather", {}),
            ),
        ),
        Message(
            "user",
            (
                ToolResultBlock("call_a", (TextBlock("24"), TextBlock("C"))),
                ToolResultBlock("call_b", (TextBlock("boom"),), is_error=True),
                ToolResultBlock("call_c", (ImageBlock(url="https://x.test/c.png"),)),
                DocumentBlock(
                    {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}, "a.pdf"
                ),
                DocumentBlock({"type": "url", "url": "https://x.test/b.pdf"}),
                DocumentBlock({"type": "text", "media_type": "text/plain", "data": "plain"}),
            ),
        ),
    ),
    max_tokens=300,
    temperature=0.5,
    top_p=0.9,
    top_k=40,
    stop=("END",),
    tools=(Tool("get_weather", "Weather", WEATHER),),
    tool_choice=ToolChoice("any", disable_parallel_tool_use=True),
    thinking=Thinking(budget_tokens=4000),
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": WEATHER, "strict": True},
    },
    user="u-1",
    stream=True,
    provider_metadata={"openai": {"metadata": {"k": "v"}, "verbosity": "low", "seed": 3}},
)


def test_render_request() -> None:
    rendered = render_request(CONVERSATION)
    assert rendered == {
        "model": "gpt-5-mini",
        "instructions": "Be terse.\n\nUse metric.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "weather?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBO",
                        "detail": "auto",
                    },
                ],
            },
            # The unsigned thinking block is left out: an OpenAI model cannot take it back.
            {"type": "message", "role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_a",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {
                "type": "function_call",
                "call_id": "call_b",
                "name": "get_weather",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_a", "output": "24\nC"},
            {"type": "function_call_output", "call_id": "call_b", "output": "Error: boom"},
            {
                "type": "function_call_output",
                "call_id": "call_c",
                "output": [
                    {"type": "input_image", "image_url": "https://x.test/c.png", "detail": "auto"}
                ],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,JVBE",
                    },
                    {"type": "input_file", "file_url": "https://x.test/b.pdf"},
                    {"type": "input_text", "text": "plain"},
                ],
            },
        ],
        "metadata": {"k": "v"},
        "max_output_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u-1",
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather",
                "parameters": WEATHER,
                "strict": False,
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "text": {
            "format": {"type": "json_schema", "name": "w", "schema": WEATHER, "strict": True},
            "verbosity": "low",
        },
        "reasoning": {"effort": "medium"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
        "stream": True,
    }
    # What the openai SDK itself would accept as a request body.
    CREATE_PARAMS.validate_python({k: v for k, v in rendered.items() if k != "stream"}, strict=True)


def test_render_request_reasoning_items_have_no_id() -> None:
    """Signed thinking goes back as a stateless reasoning item (no id: it would name an item in
    OpenAI's store, as Codex also leaves it out); redacted thinking keeps its marker."""
    req = Request(
        model="m",
        messages=(
            *HI,
            Message(
                "assistant",
                (ThinkingBlock("why", "gAAA=="), RedactedThinkingBlock("ZA=="), TextBlock("ok")),
            ),
        ),
    )
    items = render_request(req)["input"]
    assert items[1:3] == [
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "why"}],
            "encrypted_content": "gAAA==",
        },
        {"type": "reasoning", "summary": [], "encrypted_content": REDACTED_PREFIX + "ZA=="},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice("auto"), "auto"),
        (ToolChoice("none"), "none"),
        (ToolChoice("tool", "f"), {"type": "function", "name": "f"}),
    ],
)
def test_render_tool_choice(choice: ToolChoice, expected: Any) -> None:
    rendered = render_request(request(tools=(Tool("f"),), tool_choice=choice))
    assert rendered["tool_choice"] == expected
    assert "parallel_tool_calls" not in rendered


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        (Thinking(effort="low"), "low"),
        (Thinking(enabled=False, effort="none"), "none"),
        (Thinking(enabled=False), None),
        (Thinking(), None),  # adaptive: the model's default
        (Thinking(budget_tokens=1024), "low"),
        (Thinking(budget_tokens=20000), "high"),
    ],
)
def test_render_effort(thinking: Thinking, effort: str | None) -> None:
    rendered = render_request(request(thinking=thinking))
    assert rendered.get("reasoning", {}).get("effort") == effort


def test_render_request_minimal_and_json_object() -> None:
    rendered = render_request(request(response_format={"type": "json_object"}))
    assert rendered == {
        "model": "alias",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
        "text": {"format": {"type": "json_object"}},
        "store": False,
    }
    CREATE_PARAMS.validate_python(rendered, strict=True)


def test_render_rejects_unsendable_documents() -> None:
    document = DocumentBlock({"type": "file", "file_id": "f"})
    req = Request(model="alias", messages=(Message("user", (document,)),))
    with pytest.raises(InvalidRequest, match="source type 'file' cannot be sent"):
        render_request(req)


def test_a_parsed_request_renders_back_to_what_the_client_sent() -> None:
    sent = body(
        instructions="Be terse.",
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "t"}],
                "encrypted_content": "gA==",
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
        ],
        tools=[
            {
                "type": "function",
                "name": "f",
                "description": "d",
                "parameters": OBJECT,
                "strict": True,
            }
        ],
        tool_choice="auto",
        max_output_tokens=99,
        text={"format": {"type": "json_schema", "name": "n", "schema": OBJECT, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
        metadata={"a": "b"},
        store=False,
    )
    rendered = render_request(parse_request(sent))
    assert rendered == {
        **sent,
        "include": ["reasoning.encrypted_content"],
        "input": [sent["input"][0], {"type": "reasoning", **sent["input"][1]}, *sent["input"][2:]],
    }
    assert parse_request(rendered) == parse_request(sent)
