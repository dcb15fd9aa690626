"""OpenAI chat request bodies <-> canonical Request: tables, round trips, SDK-built bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from meridian.errors import InvalidRequest
from meridian.model import (
    DocumentBlock,
    ImageBlock,
    Message,
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_chat import parse_request, render_request

USER = {"role": "user", "content": "hi"}
CALLS = [
    {"id": "call_a", "type": "function", "function": {"name": "light", "arguments": '{"on":true}'}},
    {"id": "call_b", "type": "function", "function": {"name": "temp", "arguments": ""}},
]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [USER], **fields}


GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "plain",
        body(),
        {"model": "gpt-4o", "messages": (Message("user", (TextBlock("hi"),)),), "stream": False},
    ),
    (
        "leading developer/system messages are the system prompt; later ones stay in place",
        body(
            messages=[
                {"role": "developer", "content": "be brief"},
                USER,
                {"role": "system", "content": [{"type": "text", "text": "be kind"}]},
            ]
        ),
        {
            "system": (TextBlock("be brief"),),
            "messages": (
                Message("user", (TextBlock("hi"),)),
                Message("system", (TextBlock("be kind"),)),
            ),
        },
    ),
    (
        "max_completion_tokens wins",
        body(max_tokens=10, max_completion_tokens=20),
        {"max_tokens": 20},
    ),
    ("max_tokens alone", body(max_tokens=10), {"max_tokens": 10}),
    (
        "consecutive tool messages are one user turn, merged with the next user message",
        body(
            messages=[
                USER,
                {"role": "assistant", "content": None, "tool_calls": CALLS},
                {"role": "tool", "tool_call_id": "call_a", "content": "done"},
                {
                    "role": "tool",
                    "tool_call_id": "call_b",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"role": "user", "content": "thanks"},
            ]
        ),
        {
            "messages": (
                Message("user", (TextBlock("hi"),)),
                Message(
                    "assistant",
                    (
                        ToolUseBlock("call_a", "light", {"on": True}),
                        ToolUseBlock("call_b", "temp", {}),
                    ),
                ),
                Message(
                    "user",
                    (
                        ToolResultBlock("call_a", (TextBlock("done"),)),
                        ToolResultBlock("call_b", (TextBlock("21C"),)),
                        TextBlock("thanks"),
                    ),
                ),
            )
        },
    ),
    (
        "assistant reasoning_content becomes a thinking block first; empty content dropped",
        body(
            messages=[
                USER,
                {
                    "role": "assistant",
                    "content": "",
                    "reasoning_content": "think",
                    "tool_calls": CALLS[:1],
                },
            ]
        ),
        {
            "messages": (
                Message("user", (TextBlock("hi"),)),
                Message(
                    "assistant",
                    (ThinkingBlock("think"), ToolUseBlock("call_a", "light", {"on": True})),
                ),
            )
        },
    ),
    (
        "data: and http images",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0K"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/a.jpg", "detail": "low"},
                        },
                    ],
                }
            ]
        ),
        {
            "messages": (
                Message(
                    "user",
                    (
                        TextBlock("what is this"),
                        ImageBlock(media_type="image/png", data="iVBORw0K"),
                        ImageBlock(url="https://x.test/a.jpg"),
                    ),
                ),
            )
        },
    ),
    (
        "inline file part -> document",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBE",
                            },
                        }
                    ],
                }
            ]
        ),
        {
            "messages": (
                Message(
                    "user",
                    (
                        DocumentBlock(
                            {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                            title="a.pdf",
                        ),
                    ),
                ),
            )
        },
    ),
    (
        "tools, required, serial",
        body(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "light",
                        "description": "switch",
                        "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}},
                        "strict": True,
                    },
                },
                {"type": "function", "function": {"name": "bare"}},
            ],
            tool_choice="required",
            parallel_tool_calls=False,
        ),
        {
            "tools": (
                Tool(
                    "light", "switch", {"type": "object", "properties": {"on": {"type": "boolean"}}}
                ),
                Tool("bare"),
            ),
            "tool_choice": ToolChoice("any", disable_parallel_tool_use=True),
        },
    ),
    (
        "named tool choice",
        body(tool_choice={"type": "function", "function": {"name": "light"}}),
        {"tool_choice": ToolChoice("tool", name="light")},
    ),
    ("tool_choice none", body(tool_choice="none"), {"tool_choice": ToolChoice("none")}),
    ("tool_choice auto", body(tool_choice="auto"), {"tool_choice": ToolChoice("auto")}),
    ("no tool_choice", body(), {"tool_choice": None}),
    (
        "parallel_tool_calls false alone",
        body(parallel_tool_calls=False),
        {"tool_choice": ToolChoice("auto", disable_parallel_tool_use=True)},
    ),
    ("reasoning_effort", body(reasoning_effort="high"), {"thinking": Thinking(effort="high")}),
    (
        "reasoning_effort none",
        body(reasoning_effort="none"),
        {"thinking": Thinking(enabled=False, effort="none")},
    ),
    ("stop string", body(stop="END"), {"stop": ("END",)}),
    ("stop list", body(stop=["a", "b"]), {"stop": ("a", "b")}),
    ("sampling", body(temperature=0, top_p=0.5), {"temperature": 0.0, "top_p": 0.5}),
    (
        "response_format kept as sent",
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
    ),
    ("user and stream", body(user="conv-1", stream=True), {"user": "conv-1", "stream": True}),
    ("n=1 is fine", body(n=1), {"model": "gpt-4o"}),
    (
        "forwardable unknowns kept, others ignored",
        body(
            seed=7,
            logit_bias={"1": 2},
            store=False,
            stream_options={"include_usage": True},
            bogus=1,
        ),
        {
            "provider_metadata": {
                "openai": {
                    "seed": 7,
                    "logit_bias": {"1": 2},
                    "store": False,
                    "stream_options": {"include_usage": True},
                }
            }
        },
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_parse_request_good(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    request = parse_request(raw)
    for key, value in expected.items():
        assert getattr(request, key) == value, key


BAD: list[tuple[str, Any, str | None, str]] = [
    ("not an object", [1], None, "JSON object"),
    ("no model", {"messages": [USER]}, "model", "model"),
    ("model not a string", body(model=3), "model", "must be a string"),
    ("no messages", {"model": "m"}, "messages", "required"),
    ("empty messages", body(messages=[]), "messages", "non-empty"),
    ("messages not a list", body(messages={"role": "user"}), "messages", "non-empty array"),
    ("message not an object", body(messages=["hi"]), "messages[0]", "must be an object"),
    (
        "unknown role",
        body(messages=[{"role": "robot", "content": "x"}]),
        "messages[0].role",
        "robot",
    ),
    (
        "user content missing",
        body(messages=[{"role": "user"}]),
        "messages[0].content",
        "string or an array",
    ),
    (
        "unknown part type",
        body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
        "messages[0].content[0].type",
        "input_audio",
    ),
    (
        "image in system message",
        body(
            messages=[
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
        "messages[0].content[0].type",
        "not supported",
    ),
    (
        "text part without text",
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        "messages[0].content[0].text",
        "must be a string",
    ),
    (
        "image url with a bad scheme",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                }
            ]
        ),
        "messages[0].content[0].image_url.url",
        "http(s)",
    ),
    (
        "data URL not base64",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}],
                }
            ]
        ),
        "messages[0].content[0].image_url.url",
        "base64",
    ),
    (
        "tool call arguments not JSON",
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        "not valid JSON",
    ),
    (
        "tool call arguments not an object",
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        "JSON object",
    ),
    (
        "tool call without id",
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].id",
        "must be a string",
    ),
    (
        "tool message without tool_call_id",
        body(messages=[{"role": "tool", "content": "x"}]),
        "messages[0].tool_call_id",
        "must be a string",
    ),
    ("n > 1", body(n=2), "n", "not supported"),
    ("n = 0", body(n=0), "n", "positive integer"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens", "positive integer"),
    (
        "max_completion_tokens text",
        body(max_completion_tokens="9"),
        "max_completion_tokens",
        "positive",
    ),
    ("temperature text", body(temperature="hot"), "temperature", "must be a number"),
    ("temperature bool", body(temperature=True), "temperature", "must be a number"),
    ("stop numbers", body(stop=[1]), "stop", "string or an array"),
    ("stream text", body(stream="yes"), "stream", "boolean"),
    ("stream_options list", body(stream_options=[1]), "stream_options", "object"),
    ("tools not a list", body(tools={}), "tools", "array"),
    (
        "non-function tool",
        body(tools=[{"type": "custom", "custom": {}}]),
        "tools[0].type",
        "function",
    ),
    (
        "tool without name",
        body(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        "string",
    ),
    (
        "tool parameters not a schema",
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
        "tools[0].function.parameters",
        "JSON schema",
    ),
    ("tool_choice bogus", body(tool_choice="always"), "tool_choice", "'required'"),
    (
        "named tool_choice without a name",
        body(tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "string",
    ),
    ("parallel_tool_calls text", body(parallel_tool_calls="no"), "parallel_tool_calls", "boolean"),
    ("reasoning_effort number", body(reasoning_effort=3), "reasoning_effort", "string"),
    ("response_format string", body(response_format="json"), "response_format", "object"),
    ("user number", body(user=5), "user", "string"),
]


@pytest.mark.parametrize(("raw", "param", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_parse_request_bad(raw: Any, param: str | None, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.param == param
    assert words in info.value.message
    assert info.value.status == 400


def test_n_above_one_has_the_unsupported_parameter_code() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body(n=3))
    assert info.value.code == "unsupported_parameter"


# ---------------------------------------------------------------------------- render


def req(*messages: Message, **fields: Any) -> Request:
    return Request(
        model="up-model", messages=messages or (Message("user", (TextBlock("hi"),)),), **fields
    )


RENDER: list[tuple[str, Request, dict[str, Any]]] = [
    (
        "system blocks -> one system message first",
        req(system=(TextBlock("a"), TextBlock("b"))),
        {
            "messages": [
                {"role": "system", "content": "a\n\nb"},
                {"role": "user", "content": "hi"},
            ]
        },
    ),
    (
        "tool results -> tool messages, then the rest of the user turn",
        req(
            Message(
                "assistant",
                (ThinkingBlock("hmm", "sig"), TextBlock("ok"), ToolUseBlock("c1", "f", {"x": 1})),
            ),
            Message(
                "user",
                (ToolResultBlock("c1", (TextBlock("r1"), TextBlock("r2"))), TextBlock("more")),
            ),
        ),
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "ok",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r1\nr2"},
                {"role": "user", "content": "more"},
            ]
        },
    ),
    (
        "assistant with only tool calls has null content; empty input -> '{}'",
        req(Message("assistant", (ToolUseBlock("c1", "f", {}),))),
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            ]
        },
    ),
    (
        "images in a tool result: a note, then a user message with the images",
        req(
            Message(
                "user",
                (ToolResultBlock("c1", (TextBlock("shot"), ImageBlock("image/png", "AAA"))),),
            )
        ),
        {
            "messages": [
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": "shot\n"
                    "[1 image(s) from this result follow in the next user message]",
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Images returned by tool call c1:"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                    ],
                },
            ]
        },
    ),
    (
        "images and documents -> parts",
        req(
            Message(
                "user",
                (
                    ImageBlock(url="https://x.test/a.png"),
                    DocumentBlock(
                        {"type": "base64", "media_type": "application/pdf", "data": "JV"},
                        title="t.pdf",
                    ),
                    DocumentBlock({"type": "text", "media_type": "text/plain", "data": "plain"}),
                ),
            )
        ),
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JV",
                                "filename": "t.pdf",
                            },
                        },
                        {"type": "text", "text": "plain"},
                    ],
                }
            ]
        },
    ),
    ("max_tokens stays max_tokens", req(max_tokens=100), {"max_tokens": 100}),
    ("effort", req(thinking=Thinking(effort="low")), {"reasoning_effort": "low"}),
    ("budget 1024 -> low", req(thinking=Thinking(budget_tokens=1024)), {"reasoning_effort": "low"}),
    ("budget 2048 -> low", req(thinking=Thinking(budget_tokens=2048)), {"reasoning_effort": "low"}),
    (
        "budget 8192 -> medium",
        req(thinking=Thinking(budget_tokens=8192)),
        {"reasoning_effort": "medium"},
    ),
    (
        "budget 8193 -> high",
        req(thinking=Thinking(budget_tokens=8193)),
        {"reasoning_effort": "high"},
    ),
    (
        "thinking off",
        req(thinking=Thinking(enabled=False, budget_tokens=5000)),
        {"reasoning_effort": None},
    ),
    (
        "stream always asks for usage",
        req(
            stream=True,
            provider_metadata={"openai": {"stream_options": {"include_usage": False, "x": 1}}},
        ),
        {"stream": True, "stream_options": {"include_usage": True, "x": 1}},
    ),
    (
        "no stream_options without stream",
        req(provider_metadata={"openai": {"stream_options": {"include_usage": True}, "seed": 1}}),
        {"stream": None, "stream_options": None, "seed": 1},
    ),
    (
        "tool choice dropped without tools",
        req(tool_choice=ToolChoice("any", disable_parallel_tool_use=True)),
        {"tool_choice": None, "parallel_tool_calls": None},
    ),
    (
        "named tool choice, serial",
        req(
            tools=(Tool("f"),),
            tool_choice=ToolChoice("tool", name="f", disable_parallel_tool_use=True),
        ),
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
        },
    ),
    ("stop list", req(stop=("x",)), {"stop": ["x"]}),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [r[1:] for r in RENDER], ids=[r[0] for r in RENDER]
)
def test_render_request(request_: Request, expected: dict[str, Any]) -> None:
    rendered = render_request(request_)
    json.dumps(rendered)  # plain JSON, no canonical objects left inside
    assert rendered["model"] == "up-model"
    for key, value in expected.items():
        assert rendered.get(key) == value, key
    assert not any(k.startswith("_") for k in rendered)


def test_render_rejects_what_openai_cannot_take() -> None:
    doc = DocumentBlock({"type": "url", "url": "https://x.test/a.pdf"})
    with pytest.raises(InvalidRequest, match="source type 'url'"):
        render_request(req(Message("user", (doc,))))


ROUND_TRIPS: list[dict[str, Any]] = [
    body(),
    body(
        messages=[
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                ],
            },
            {"role": "assistant", "content": "calling", "tool_calls": CALLS},
            {"role": "tool", "tool_call_id": "call_a", "content": "ok"},
            {"role": "tool", "tool_call_id": "call_b", "content": "20"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "bye"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "light",
                    "description": "d",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": "light"}},
        parallel_tool_calls=False,
        max_tokens=50,
        temperature=0.2,
        stop=["x"],
        seed=4,
        user="u",
        reasoning_effort="medium",
        response_format={"type": "json_object"},
        stream=True,
        stream_options={"include_usage": True},
    ),
]


def _normalise(b: dict[str, Any]) -> dict[str, Any]:
    """What a round trip may legitimately change: parsed JSON arguments, max_tokens naming."""
    out: dict[str, Any] = json.loads(json.dumps(b))
    for m in out["messages"]:
        for c in m.get("tool_calls", ()):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"] or "{}")
    return out


@pytest.mark.parametrize("raw", ROUND_TRIPS)
def test_round_trip(raw: dict[str, Any]) -> None:
    rendered = render_request(parse_request(raw))
    assert _normalise(rendered) == _normalise(raw)
    assert parse_request(rendered) == parse_request(raw)


# ---------------------------------------------------------------------------- bodies the SDK builds


@pytest.fixture
def sdk() -> Iterator[tuple[openai.OpenAI, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return httpx2.Response(200, json=answer)

    http = httpx2.Client(transport=httpx2.MockTransport(handler), timeout=5)
    client = openai.OpenAI(
        api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0
    )
    yield client, seen
    client.close()


def test_parses_what_the_sdk_sends(sdk: tuple[openai.OpenAI, list[dict[str, Any]]]) -> None:
    client, seen = sdk
    client.chat.completions.create(
        model="alias",
        messages=[
            {"role": "developer", "content": "dev"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/i.png"}}],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": [1, 2]}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="required",
        parallel_tool_calls=False,
        max_completion_tokens=64,
        reasoning_effort="low",
        stop="END",
        user="ha-conversation",
        seed=1,
    )
    request = parse_request(seen[0])
    assert request.model == "alias"
    assert request.system == (TextBlock("dev"),)
    assert request.messages == (
        Message("user", (ImageBlock(url="https://x.test/i.png"),)),
        Message("assistant", (ToolUseBlock("c1", "f", {"a": [1, 2]}), ToolUseBlock("c2", "g", {}))),
        Message(
            "user",
            (
                ToolResultBlock("c1", (TextBlock("one"),)),
                ToolResultBlock("c2", (TextBlock("two"),)),
            ),
        ),
    )
    assert request.tool_choice == ToolChoice("any", disable_parallel_tool_use=True)
    assert (request.max_tokens, request.thinking, request.stop, request.user) == (
        64,
        Thinking(effort="low"),
        ("END",),
        "ha-conversation",
    )
    assert request.provider_metadata == {"openai": {"seed": 1}}


def test_rendered_body_uses_only_fields_the_sdk_knows(
    sdk: tuple[openai.OpenAI, list[dict[str, Any]]],
) -> None:
    """The SDK's create() takes each field as a keyword: an unknown one is a TypeError."""
    client, seen = sdk
    rendered = render_request(parse_request(ROUND_TRIPS[1]))
    rendered["stream"] = False
    rendered.pop("stream_options")
    client.chat.completions.create(**rendered)
    assert seen[0] == json.loads(json.dumps(rendered))
