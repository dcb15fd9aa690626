"""Anthropic request bodies <-> canonical `Request`: good bodies, bad bodies, round trips."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest

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
from meridian.wire.anthropic import DEFAULT_MAX_TOKENS, parse_request, render_request

EPHEMERAL = {"type": "ephemeral"}
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+/Sf0Yhd8G6Fhaf9rWXlJqYI9gq=="
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}

# A Home Assistant-style multi-turn tool conversation with every block type.
FULL: dict[str, Any] = {
    "model": "house-assistant",
    "max_tokens": 2048,
    "system": [
        {"type": "text", "text": "You control a house.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Be brief."},
    ],
    "messages": [
        {"role": "user", "content": "Turn on the kitchen light and tell me the weather."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two tools needed.", "signature": SIGNATURE},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "text", "text": "On it."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "light_on",
                    "input": {"room": "kitchen"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "cache_control": EPHEMERAL,
                    "content": [
                        {"type": "text", "text": "timeout"},
                        {"type": "image", "source": {"type": "url", "url": "https://e.x/r.png"}},
                    ],
                },
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                    "cache_control": EPHEMERAL,
                },
                {
                    "type": "document",
                    "title": "manual",
                    "source": {
                        "type": "text",
                        "media_type": "text/plain",
                        "data": "Press the button.",
                    },
                },
                {"type": "text", "text": "Thanks", "cache_control": EPHEMERAL},
            ],
        },
    ],
    "tools": [
        {"name": "light_on", "description": "Switch on", "input_schema": {"type": "object"}},
        {
            "name": "get_weather",
            "input_schema": WEATHER_SCHEMA,
            "cache_control": EPHEMERAL,
            "strict": True,
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 1,
    "top_k": 40,
    "top_p": 0.9,
    "stream": True,
    "metadata": {"user_id": "conversation-42"},
    "output_config": {"effort": "medium"},
    "service_tier": "auto",
    "cache_control": EPHEMERAL,
    "some_future_field": {"ignored": True},
}


def test_full_body() -> None:
    req = parse_request(FULL)
    assert req.model == "house-assistant"
    assert req.max_tokens == 2048
    assert req.system == (
        TextBlock("You control a house.", cache_control=EPHEMERAL),
        TextBlock("Be brief."),
    )
    assert req.messages[0] == Message("user", (TextBlock(FULL["messages"][0]["content"]),))
    assert req.messages[1] == Message(
        "assistant",
        (
            ThinkingBlock("Two tools needed.", SIGNATURE),
            RedactedThinkingBlock("EmwKAhgBEgy3va3pzix"),
            TextBlock("On it."),
            ToolUseBlock("toolu_1", "light_on", {"room": "kitchen"}),
            ToolUseBlock("toolu_2", "get_weather", {"city": "Paris"}),
        ),
    )
    assert req.messages[2] == Message(
        "user",
        (
            ToolResultBlock("toolu_1", (TextBlock("ok"),)),
            ToolResultBlock(
                "toolu_2",
                (TextBlock("timeout"), ImageBlock(url="https://e.x/r.png")),
                is_error=True,
                cache_control=EPHEMERAL,
            ),
            ImageBlock(media_type="image/png", data="iVBORw0KGgo=", cache_control=EPHEMERAL),
            DocumentBlock(
                {"type": "text", "media_type": "text/plain", "data": "Press the button."},
                title="manual",
            ),
            TextBlock("Thanks", cache_control=EPHEMERAL),
        ),
    )
    assert req.tools == (
        Tool("light_on", "Switch on", {"type": "object"}),
        Tool("get_weather", None, WEATHER_SCHEMA, cache_control=EPHEMERAL),
    )
    assert req.tool_choice == ToolChoice("auto", disable_parallel_tool_use=True)
    assert req.thinking == Thinking(enabled=True, budget_tokens=1024)
    assert req.stop == ("\n\nHuman:",)
    assert (req.temperature, req.top_p, req.top_k) == (1.0, 0.9, 40)
    assert req.stream is True
    assert req.user == "conversation-42"
    meta = req.provider_metadata["anthropic"]
    assert meta["metadata"] == {"user_id": "conversation-42"}
    assert meta["output_config"] == {"effort": "medium"}
    assert meta["service_tier"] == "auto"
    assert meta["server_tools"] == [FULL["tools"][2]]
    assert meta["tool_extras"] == {"get_weather": {"strict": True}}
    assert "some_future_field" not in meta


@pytest.mark.parametrize(
    ("patch", "field", "expected"),
    [
        ({}, "max_tokens", None),
        ({}, "stream", False),
        ({}, "thinking", None),
        ({}, "tool_choice", None),
        ({"system": "Be nice."}, "system", (TextBlock("Be nice."),)),
        ({"system": ""}, "system", ()),
        ({"thinking": {"type": "disabled"}}, "thinking", Thinking(enabled=False)),
        ({"thinking": {"type": "adaptive"}}, "thinking", Thinking(enabled=True)),
        ({"tool_choice": {"type": "any"}}, "tool_choice", ToolChoice("any")),
        ({"tool_choice": {"type": "none"}}, "tool_choice", ToolChoice("none")),
        ({"tool_choice": {"type": "tool", "name": "f"}}, "tool_choice", ToolChoice("tool", "f")),
        ({"metadata": {}}, "user", None),
        ({"metadata": {"user_id": None}}, "user", None),
        ({"temperature": 0}, "temperature", 0.0),
        ({"stop_sequences": []}, "stop", ()),
        ({"max_tokens": None}, "max_tokens", None),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "citations": None}]}
                ]
            },
            "messages",
            (Message("user", (TextBlock("x"),)),),
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "messages", (Message("user", ()),)),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}]}
                ]
            },
            "messages",
            (Message("assistant", (ThinkingBlock("t", ""),)),),
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
                ]
            },
            "messages",
            (Message("user", (ToolResultBlock("t"),)),),
        ),
    ],
)
def test_good_bodies(patch: dict[str, Any], field: str, expected: object) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    assert getattr(parse_request(body), field) == expected


def _with_block(block: object) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": [block]}]}


BAD: list[tuple[object, str | None, str]] = [
    ([], None, "JSON object"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model", "required"),
    ({"model": 3, "messages": []}, "model", "expected a string, got a number"),
    ({"model": "", "messages": []}, "model", "must not be empty"),
    ({"model": "m"}, "messages", "required"),
    ({"model": "m", "messages": []}, "messages", "at least one message"),
    ({"model": "m", "messages": {"role": "user"}}, "messages", "expected an array, got an object"),
    ({"model": "m", "messages": ["hi"]}, "messages.0", "expected an object, got a string"),
    # Anthropic's own wording: Claude Code falls back to its compatible mode on exactly this.
    (
        {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
        "messages.0.role",
        "messages.0.role: Input should be 'user' or 'assistant'",
    ),
    (
        {
            "model": "m",
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}
                    ],
                }
            ],
        },
        "messages.0.content",
        "holds text blocks only",
    ),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages.0.content", "required"),
    (
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        "messages.0.content",
        "expected an array",
    ),
    (
        _with_block({"type": "audio"}),
        "messages.0.content.0.type",
        "unknown content block type 'audio'",
    ),
    (
        _with_block({"text": "no type"}),
        "messages.0.content.0.type",
        "unknown content block type None",
    ),
    (_with_block({"type": "text"}), "messages.0.content.0.text", "expected a string, got null"),
    (
        _with_block({"type": "text", "text": "x", "cache_control": "yes"}),
        "messages.0.content.0.cache_control",
        "object",
    ),
    (
        _with_block({"type": "image", "source": {"type": "file", "file_id": "f"}}),
        "messages.0.content.0.source.type",
        "unsupported image source 'file'",
    ),
    (_with_block({"type": "image"}), "messages.0.content.0.source", "expected an object, got null"),
    (
        _with_block({"type": "image", "source": {"type": "base64", "data": "x"}}),
        "messages.0.content.0.source.media_type",
        "string",
    ),
    (
        _with_block({"type": "image", "source": {"type": "url"}}),
        "messages.0.content.0.source.url",
        "string",
    ),
    (_with_block({"type": "document", "source": {}}), "messages.0.content.0.source.type", "string"),
    (
        _with_block({"type": "tool_use", "id": "t", "name": "f", "input": "{}"}),
        "messages.0.content.0.input",
        "expected an object, got a string",
    ),
    (
        _with_block({"type": "tool_use", "name": "f", "input": {}}),
        "messages.0.content.0.id",
        "string",
    ),
    (
        _with_block({"type": "tool_result", "content": "x"}),
        "messages.0.content.0.tool_use_id",
        "string",
    ),
    (
        _with_block({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
        "messages.0.content.0.is_error",
        "true or false",
    ),
    (
        _with_block(
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
            }
        ),
        "messages.0.content.0.content.0.type",
        "only text, image, document",
    ),
    (
        _with_block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "bogus"}]}),
        "messages.0.content.0.content.0.type",
        "unknown content block type",
    ),
    (
        _with_block({"type": "thinking", "thinking": "t", "signature": 5}),
        "messages.0.content.0.signature",
        "string",
    ),
    (_with_block({"type": "redacted_thinking"}), "messages.0.content.0.data", "string"),
]
BAD_TOP: list[tuple[dict[str, Any], str, str]] = [
    ({"system": 5}, "system", "expected an array"),
    ({"system": [{"type": "image"}]}, "system.0.type", "text blocks"),
    ({"max_tokens": "100"}, "max_tokens", "expected an integer, got a string"),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_tokens": True}, "max_tokens", "got a boolean"),
    ({"max_tokens": 1.5}, "max_tokens", "expected an integer"),
    ({"temperature": "hot"}, "temperature", "expected a number"),
    ({"top_k": -1}, "top_k", "at least 0"),
    ({"stream": "true"}, "stream", "true or false"),
    ({"stop_sequences": "stop"}, "stop_sequences", "expected an array"),
    ({"stop_sequences": ["a", 1]}, "stop_sequences.1", "string"),
    ({"tools": {}}, "tools", "expected an array"),
    ({"tools": [{"input_schema": {}}]}, "tools.0.name", "string"),
    ({"tools": [{"name": ""}]}, "tools.0.name", "must not be empty"),
    ({"tools": [{"name": "f"}]}, "tools.0.input_schema", "required"),
    ({"tools": [{"name": "f", "input_schema": []}]}, "tools.0.input_schema", "object"),
    ({"tool_choice": "auto"}, "tool_choice", "expected an object"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type", "'required'"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name", "required"),
    (
        {"tool_choice": {"type": "auto", "disable_parallel_tool_use": 1}},
        "tool_choice.disable_parallel_tool_use",
        "true or false",
    ),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", "required"),
    ({"thinking": {"type": "on"}}, "thinking.type", '"enabled", "disabled" or "adaptive"'),
    (
        {"thinking": {"type": "enabled", "budget_tokens": "lots"}},
        "thinking.budget_tokens",
        "integer",
    ),
    ({"metadata": "x"}, "metadata", "expected an object"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id", "string"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD)
def test_bad_bodies(body: object, param: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body)  # type: ignore[arg-type]
    assert info.value.param == param
    assert message in info.value.message
    assert info.value.status == 400
    if param:
        assert info.value.message.startswith(param + ": ")


@pytest.mark.parametrize(("patch", "param", "message"), BAD_TOP)
def test_bad_top_level_fields(patch: dict[str, Any], param: str, message: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(InvalidRequest) as info:
        parse_request(body)
    assert (info.value.param, message in info.value.message) == (param, True), info.value.message


# ---------------------------------------------------------------------------- round trips

ROUND_TRIP = [
    FULL,
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    {
        "model": "m",
        "max_tokens": 50,
        "system": "plain",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "a",
                        "citations": [
                            {
                                "type": "char_location",
                                "cited_text": "x",
                                "document_index": 0,
                                "start_char_index": 0,
                                "end_char_index": 1,
                            }
                        ],
                    }
                ],
            },
            {"role": "assistant", "content": "b"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "r", "cache_control": EPHEMERAL}],
                    }
                ],
            },
        ],
        "thinking": {"type": "adaptive", "display": "summarized"},
        "tool_choice": {"type": "tool", "name": "f"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    },
    {
        "model": "m",
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "disabled"},
        "tool_choice": {"type": "none"},
        "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "ex"}],
        "container": "container_1",
        "context_management": {"edits": []},
    },
]


@pytest.mark.parametrize("body", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_round_trip_preserves_semantics(body: dict[str, Any]) -> None:
    once = parse_request(body)
    rendered = render_request(once)
    assert parse_request(rendered) == once
    # and the rendered JSON is the client's body, less what the model has no slot for
    expected = {k: v for k, v in body.items() if k != "some_future_field"}
    assert _normal(rendered) == _normal(expected)


def _normal(body: dict[str, Any]) -> dict[str, Any]:
    """String content -> a text block list, as `render_request` always sends lists."""
    out: dict[str, Any] = json.loads(json.dumps(body))
    for message in out["messages"]:
        if isinstance(message["content"], str):
            message["content"] = [{"type": "text", "text": message["content"]}]
        for block in message["content"]:
            if block.get("type") == "tool_result" and block.get("content") == [
                {"type": "text", "text": "ok"}
            ]:
                block["content"] = "ok"
    return out


def test_render_preserves_cache_control_and_signatures() -> None:
    rendered = render_request(parse_request(FULL))
    assert rendered["system"][0]["cache_control"] == EPHEMERAL
    assistant, user = rendered["messages"][1]["content"], rendered["messages"][2]["content"]
    assert assistant[0] == {
        "type": "thinking",
        "thinking": "Two tools needed.",
        "signature": SIGNATURE,
    }
    assert assistant[3] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "light_on",
        "input": {"room": "kitchen"},
    }
    assert user[1]["cache_control"] == EPHEMERAL and user[1]["is_error"] is True
    assert user[4] == {"type": "text", "text": "Thanks", "cache_control": EPHEMERAL}
    assert rendered["tools"][1] == {
        "name": "get_weather",
        "input_schema": WEATHER_SCHEMA,
        "cache_control": EPHEMERAL,
        "strict": True,
    }
    assert rendered["tools"][2] == FULL["tools"][2]


def test_render_defaults_and_openai_shaped_input() -> None:
    # What an OpenAI client's request looks like once translated to canonical.
    req = Request(
        model="claude-haiku-4-5",
        messages=(
            Message("user", (TextBlock("look"), ImageBlock(url="data:image/jpeg;base64,/9j/4AAQ"))),
            Message("user", (TextBlock(""),)),  # empty: dropped, then the turns merge
            Message(
                "assistant", (ThinkingBlock("unsigned reasoning"), ToolUseBlock("c1", "f", {}))
            ),
            Message("user", (ToolResultBlock("c1", (TextBlock("42"),)),)),
            Message("user", (TextBlock("and?"),)),
            Message("assistant", ()),
        ),
        user="alice",
        thinking=Thinking(effort="high"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": WEATHER_SCHEMA},
        },
    )
    body = render_request(req)
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["metadata"] == {"user_id": "alice"}
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    # budget below max_tokens, as Anthropic requires
    assert body["thinking"] == {"type": "enabled", "budget_tokens": DEFAULT_MAX_TOKENS - 1}
    # Structured output is Anthropic's own, enforced by the API: never a prompt instruction.
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}
    assert "system" not in body
    assert "stream" not in body and "tool_choice" not in body and "tools" not in body


def test_tool_results_move_before_text_in_a_merged_user_turn() -> None:
    req = Request(
        model="m",
        messages=(
            Message("assistant", (ToolUseBlock("a", "f", {}),)),
            Message("user", (TextBlock("note"),)),
            Message("user", (ToolResultBlock("a", (TextBlock("r"),)),)),
        ),
    )
    [_, user] = render_request(req)["messages"]
    assert [b["type"] for b in user["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "expected"),
    [
        (Thinking(budget_tokens=5000), 8000, {"type": "enabled", "budget_tokens": 5000}),
        (Thinking(effort="low"), 8000, {"type": "enabled", "budget_tokens": 2048}),
        (Thinking(effort="medium"), 100_000, {"type": "enabled", "budget_tokens": 8192}),
        (Thinking(effort="minimal"), 500, None),  # no room for Anthropic's 1024 minimum
        (Thinking(), 8000, {"type": "adaptive"}),
        (Thinking(enabled=False), 8000, {"type": "disabled"}),
    ],
)
def test_render_thinking(thinking: Thinking, max_tokens: int, expected: object) -> None:
    req = Request(
        model="m",
        messages=(Message("user", (TextBlock("x"),)),),
        max_tokens=max_tokens,
        thinking=thinking,
    )
    assert render_request(req).get("thinking") == expected


def test_json_object_format_and_system_list() -> None:
    req = Request(
        model="m",
        messages=(Message("user", (TextBlock("x"),)),),
        system=(TextBlock("A", cache_control=EPHEMERAL),),
        response_format={"type": "json_object"},
    )
    body = render_request(req)
    assert body["system"] == [{"type": "text", "text": "A", "cache_control": EPHEMERAL}]
    output = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert body["output_config"] == output


def test_system_messages_inside_messages() -> None:
    """Claude Code sends them for a model name it does not know: accepted, kept in place in
    the canonical model, folded into the one system prompt when rendered for Anthropic."""
    req = parse_request(
        {
            "model": "gpt-4o-mini",
            "max_tokens": 50,
            "system": "You are helpful.",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "env: linux"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "and?"},
            ],
        }
    )
    assert [m.role for m in req.messages] == ["user", "system", "assistant", "system", "user"]
    assert req.messages[1].content == (TextBlock("env: linux"),)
    body = render_request(req)
    assert body["system"] == [
        {"type": "text", "text": "You are helpful."},
        {"type": "text", "text": "env: linux"},
        {"type": "text", "text": "be brief"},
    ]
    assert [t["role"] for t in body["messages"]] == ["user", "assistant", "user"]


def test_the_sdk_sends_a_rendered_body_unchanged() -> None:
    """Every key `render_request` produces is a real `messages.create` parameter."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        return httpx2.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )

    body = render_request(parse_request({k: v for k, v in FULL.items() if k != "stream"}))
    # This SDK no longer lists the sampling parameters; the API still takes them.
    sampling = {k: body.pop(k) for k in ("temperature", "top_p", "top_k")}
    with anthropic.Anthropic(
        api_key="k",
        base_url="http://upstream.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    ) as client:
        client.messages.create(**body, extra_body=sampling)
    assert seen == [{**body, **sampling}]
