"""Responses request bodies -> canonical `Request` (tables), every `InvalidRequest` path,
the stateless checks, and canonical -> an upstream's Responses body (checked against the
openai SDK's own request types)."""

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
from meridian.wire.openai_responses import (
    REDACTED_PREFIX,
    STATELESS_HEADER,
    builtin_tools,
    check_request,
    parse_request,
    require_stateless,
    stateless_headers,
)

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
    return Request(**{"model": "alias", "messages": HI, **fields})


PARSED: list[tuple[str, dict[str, Any], Request]] = [
    ("string input", body(), request()),
    (
        "instructions and leading system/developer messages join the system prompt; later "
        "ones stay in place",
        body(
            instructions="Be terse.",
            input=[
                {"role": "developer", "content": "Use metric units."},
                {"type": "message", "role": "user", "content": "hi"},
                {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Late note."}],
                },
            ],
        ),
        request(
            system=(TextBlock("Be terse."), TextBlock("Use metric units.")),
            messages=(
                Message("user", (TextBlock("hi"),)),
                Message("system", (TextBlock("Late note."),)),
            ),
        ),
    ),
    (
        "content parts: text, images (data and https), files (data, raw base64, url)",
        body(
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {
                            "type": "input_image",
                            "image_url": "data:image/png;base64,iVBO",
                            "detail": "auto",
                        },
                        {"type": "input_image", "image_url": "https://x.test/a.jpg"},
                        {
                            "type": "input_file",
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBE",
                        },
                        {"type": "input_file", "file_data": "JVBF"},
                        {"type": "input_file", "file_url": "https://x.test/b.pdf"},
                    ],
                }
            ]
        ),
        Request(
            model="alias",
            messages=(
                Message(
                    "user",
                    (
                        TextBlock("look"),
                        ImageBlock(media_type="image/png", data="iVBO"),
                        ImageBlock(url="https://x.test/a.jpg"),
                        DocumentBlock(
                            {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                            title="a.pdf",
                        ),
                        DocumentBlock(
                            {"type": "base64", "media_type": "application/pdf", "data": "JVBF"}
                        ),
                        DocumentBlock({"type": "url", "url": "https://x.test/b.pdf"}),
                    ),
                ),
            ),
        ),
    ),
    (
        "a function-call round trip: one assistant turn, one turn of results, then the user",
        body(
            input=[
                {"role": "user", "content": "weather in Paris and Tokyo?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [
                        {"type": "summary_text", "text": "Two cities."},
                        {"type": "summary_text", "text": "Call twice."},
                    ],
                    "encrypted_content": "gAAAAB==",
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                    "id": "msg_1",
                    "status": "completed",
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_a",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_b",
                    "name": "get_weather",
                    "arguments": "",
                },
                {"type": "function_call_output", "call_id": "call_a", "output": "24 C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_b",
                    "output": [
                        {"type": "input_text", "text": "see chart"},
                        {"type": "input_image", "image_url": "https://x.test/c.png"},
                    ],
                },
                {"role": "user", "content": "and Rome?"},
            ]
        ),
        Request(
            model="alias",
            messages=(
                Message("user", (TextBlock("weather in Paris and Tokyo?"),)),
                Message(
                    "assistant",
                    (
                        ThinkingBlock("Two cities.\n\nCall twice.", "gAAAAB=="),
                        TextBlock("Checking."),
                        ToolUseBlock("call_a", "get_weather", {"city": "Paris"}),
                        ToolUseBlock("call_b", "get_weather", {}),
                    ),
                ),
                Message(
                    "user",
                    (
                        ToolResultBlock("call_a", (TextBlock("24 C"),)),
                        ToolResultBlock(
                            "call_b",
                            (TextBlock("see chart"), ImageBlock(url="https://x.test/c.png")),
                        ),
                        TextBlock("and Rome?"),
                    ),
                ),
            ),
        ),
    ),
    (
        "reasoning: raw reasoning text wins over the summary; the redacted marker; empty items",
        body(
            input=[
                {"role": "user", "content": "hi"},
                {
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": "short"}],
                    "content": [{"type": "reasoning_text", "text": "the full chain"}],
                },
                {
                    "type": "reasoning",
                    "summary": [],
                    "encrypted_content": REDACTED_PREFIX + "ZGF0YQ==",
                },
                {"type": "reasoning", "id": "rs_empty", "summary": []},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "Hello."},
            ]
        ),
        Request(
            model="alias",
            messages=(
                *HI,
                Message(
                    "assistant",
                    (
                        ThinkingBlock("the full chain"),
                        RedactedThinkingBlock("ZGF0YQ=="),
                        TextBlock("Hello."),
                    ),
                ),
            ),
        ),
    ),
    (
        "function tools (flat shape), strict kept aside, tool_choice and parallel_tool_calls",
        body(
            tools=[
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": WEATHER,
                    "strict": True,
                },
                {"type": "function", "name": "noop", "parameters": None, "strict": False},
            ],
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
        ),
        request(
            tools=(Tool("get_weather", "Weather", WEATHER), Tool("noop", None, OBJECT)),
            tool_choice=ToolChoice("tool", "get_weather", disable_parallel_tool_use=True),
            provider_metadata={"openai": {"_strict_tools": {"get_weather": True, "noop": False}}},
        ),
    ),
    (
        "allowed_tools narrows the tools",
        body(
            tools=[{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
            tool_choice={
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "b"}],
            },
        ),
        request(tools=(Tool("b"),), tool_choice=ToolChoice("any")),
    ),
    ("tool_choice none", body(tool_choice="none"), request(tool_choice=ToolChoice("none"))),
    ("tool_choice auto", body(tool_choice="auto"), request(tool_choice=ToolChoice("auto"))),
    ("tool_choice required", body(tool_choice="required"), request(tool_choice=ToolChoice("any"))),
    (
        "parallel_tool_calls false alone",
        body(parallel_tool_calls=False),
        request(tool_choice=ToolChoice("auto", disable_parallel_tool_use=True)),
    ),
    (
        "sampling, limits, reasoning, streaming",
        body(
            max_output_tokens=512,
            temperature=0.3,
            top_p=1,
            reasoning={"effort": "high", "summary": "auto"},
            stream=True,
        ),
        request(
            max_tokens=512,
            temperature=0.3,
            top_p=1.0,
            thinking=Thinking(effort="high"),
            stream=True,
            provider_metadata={"openai_responses": {"reasoning_summary": "auto"}},
        ),
    ),
    (
        "reasoning effort none switches thinking off",
        body(reasoning={"effort": "none"}),
        request(thinking=Thinking(enabled=False, effort="none")),
    ),
    (
        "text.format json_schema becomes the canonical response_format",
        body(
            text={
                "format": {
                    "type": "json_schema",
                    "name": "weather",
                    "description": "w",
                    "schema": WEATHER,
                    "strict": True,
                },
                "verbosity": "low",
            }
        ),
        request(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "weather",
                    "description": "w",
                    "schema": WEATHER,
                    "strict": True,
                },
            },
            provider_metadata={"openai": {"verbosity": "low"}},
        ),
    ),
    (
        "text.format json_object",
        body(text={"format": {"type": "json_object"}}),
        request(response_format={"type": "json_object"}),
    ),
    ("text.format text is the default", body(text={"format": {"type": "text"}}), request()),
    (
        "metadata, user, safety_identifier, store and other forwarded fields",
        body(
            metadata={"conversation": "c1"},
            user="u-1",
            safety_identifier="sid-9",
            store=True,
            service_tier="flex",
            prompt_cache_key="k",
        ),
        request(
            user="u-1",
            provider_metadata={
                "openai": {
                    "metadata": {"conversation": "c1"},
                    "service_tier": "flex",
                    "prompt_cache_key": "k",
                    "safety_identifier": "sid-9",
                },
                "openai_responses": {"store": True},
            },
        ),
    ),
    (
        "safety_identifier alone is the end user",
        body(safety_identifier="sid-9"),
        request(user="sid-9"),
    ),
    (
        "unknown and server-only fields are ignored",
        body(
            include=["reasoning.encrypted_content"],
            truncation="auto",
            max_tool_calls=3,
            top_logprobs=2,
            stream_options={"include_obfuscation": False},
            background=False,
            previous_response_id=None,
            something_new={"x": 1},
        ),
        request(),
    ),
]


@pytest.mark.parametrize(("name", "raw", "expected"), PARSED, ids=[c[0] for c in PARSED])
def test_parse(name: str, raw: dict[str, Any], expected: Request) -> None:
    assert parse_request(raw) == expected


def item(**fields: Any) -> dict[str, Any]:
    return body(input=[{"role": "user", "content": "hi"}, fields])


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return body(input=[{"role": "user", "content": list(parts)}])


INVALID: list[tuple[str, Any, str | None, str]] = [
    ("not an object", [], None, "must be a JSON object"),
    ("no model", {"input": "hi"}, "model", "'model' is required"),
    ("model not a string", body(model=4), "model", "'model' is required"),
    ("no input", {"model": "m"}, "input", "'input' is required"),
    ("empty input", body(input=[]), "input", "'input' is required"),
    ("input a number", body(input=3), "input", "'input' is required"),
    ("stream not a boolean", body(stream="yes"), "stream", "must be a boolean"),
    ("item not an object", body(input=["hi"]), "input[0]", "must be an object"),
    (
        "unknown item type",
        body(input=[{"type": "telepathy"}]),
        "input[0].type",
        "unknown input item type",
    ),
    (
        "no type and no role",
        body(input=[{"content": "hi"}]),
        "input[0].type",
        "unknown input item type",
    ),
    (
        "unknown role",
        body(input=[{"role": "tool", "content": "x"}]),
        "input[0].role",
        "unknown role 'tool'",
    ),
    (
        "item_reference",
        body(input=[{"type": "item_reference", "id": "msg_1"}]),
        "input[0].id",
        "send the item itself",
    ),
    (
        "a built-in tool's call as input",
        body(input=[{"type": "web_search_call", "id": "ws_1", "status": "completed"}]),
        "input[0].type",
        "'web_search_call' belongs to an OpenAI built-in tool",
    ),
    (
        "content not a string or list",
        body(input=[{"role": "user", "content": 5}]),
        "input[0].content",
        "string or an array",
    ),
    ("part not an object", user("x"), "input[0].content[0]", "must be an object"),  # type: ignore[arg-type]
    (
        "unknown part",
        user({"type": "text", "text": "x"}),
        "input[0].content[0].type",
        "expected one of: input_text",
    ),
    (
        "output_text from the user",
        user({"type": "output_text", "text": "x"}),
        "input[0].content[0].type",
        "not supported",
    ),
    (
        "text not a string",
        user({"type": "input_text", "text": 3}),
        "input[0].content[0].text",
        "must be a string",
    ),
    (
        "an image by file id",
        user({"type": "input_image", "file_id": "file-1"}),
        "input[0].content[0].file_id",
        "send the image inline",
    ),
    (
        "an image without url",
        user({"type": "input_image"}),
        "input[0].content[0].image_url",
        "is required",
    ),
    (
        "an ftp image",
        user({"type": "input_image", "image_url": "ftp://x/a.png"}),
        "input[0].content[0].image_url",
        "http(s) URLs",
    ),
    (
        "a bad data url",
        user({"type": "input_image", "image_url": "data:image/png,abc"}),
        "input[0].content[0].image_url",
        "data:image/png;base64",
    ),
    (
        "a file by id",
        user({"type": "input_file", "file_id": "file-1"}),
        "input[0].content[0].file_id",
        "send the file inline",
    ),
    (
        "a file with nothing",
        user({"type": "input_file", "filename": "a"}),
        "input[0].content[0]",
        "needs 'file_data'",
    ),
    (
        "assistant input_image",
        body(
            input=[
                {
                    "role": "assistant",
                    "content": [{"type": "input_image", "image_url": "https://x"}],
                }
            ]
        ),
        "input[0].content[0].type",
        "not supported",
    ),
    (
        "system image",
        body(
            input=[
                {"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}
            ]
        ),
        "input[0].content[0].type",
        "expected one of: input_text",
    ),
    (
        "call without call_id",
        item(type="function_call", name="f", arguments="{}"),
        "input[1].call_id",
        "must be a string",
    ),
    (
        "call without name",
        item(type="function_call", call_id="c", arguments="{}"),
        "input[1].name",
        "must be a string",
    ),
    (
        "call with bad JSON",
        item(type="function_call", call_id="c", name="f", arguments="{x"),
        "input[1].arguments",
        "not valid JSON",
    ),
    (
        "call with an array",
        item(type="function_call", call_id="c", name="f", arguments="[1]"),
        "input[1].arguments",
        "must be a JSON object",
    ),
    (
        "output without call_id",
        item(type="function_call_output", output="x"),
        "input[1].call_id",
        "must be a string",
    ),
    (
        "output without output",
        item(type="function_call_output", call_id="c"),
        "input[1].output",
        "is required",
    ),
    (
        "output a number",
        item(type="function_call_output", call_id="c", output=3),
        "input[1].output",
        "string or an array",
    ),
    ("tools not a list", body(tools={}), "tools", "must be an array"),
    ("tool not an object", body(tools=["f"]), "tools[0]", "must be an object"),
    (
        "web_search",
        body(tools=[{"type": "function", "name": "f"}, {"type": "web_search"}]),
        "tools[1].type",
        "the tool 'web_search' is one of OpenAI's built-in tools",
    ),
    (
        "file_search",
        body(tools=[{"type": "file_search", "vector_store_ids": ["vs"]}]),
        "tools[0].type",
        "'file_search'",
    ),
    (
        "code_interpreter",
        body(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]),
        "tools[0].type",
        "'code_interpreter'",
    ),
    (
        "computer_use_preview",
        body(tools=[{"type": "computer_use_preview"}]),
        "tools[0].type",
        "'computer_use_preview'",
    ),
    ("mcp", body(tools=[{"type": "mcp", "server_label": "x"}]), "tools[0].type", "'mcp'"),
    (
        "image_generation",
        body(tools=[{"type": "image_generation"}]),
        "tools[0].type",
        "'image_generation'",
    ),
    (
        "custom (free-form) tools",
        body(tools=[{"type": "custom", "name": "apply_patch"}]),
        "tools[0].type",
        "'custom'",
    ),
    ("tool without name", body(tools=[{"type": "function"}]), "tools[0].name", "must be a string"),
    (
        "tool parameters not an object",
        body(tools=[{"type": "function", "name": "f", "parameters": "x"}]),
        "tools[0].parameters",
        "JSON schema object",
    ),
    (
        "tool description not a string",
        body(tools=[{"type": "function", "name": "f", "description": 3}]),
        "tools[0].description",
        "must be a string",
    ),
    (
        "tool_choice unknown string",
        body(tool_choice="any"),
        "tool_choice",
        "must be 'none', 'auto', 'required'",
    ),
    (
        "tool_choice a built-in",
        body(tool_choice={"type": "web_search_preview"}),
        "tool_choice.type",
        "'web_search_preview' names an OpenAI built-in tool",
    ),
    (
        "tool_choice unknown function",
        body(tool_choice={"type": "function", "name": "g"}),
        "tool_choice.name",
        "not in 'tools'",
    ),
    (
        "tool_choice function without name",
        body(tool_choice={"type": "function"}),
        "tool_choice.name",
        "must be a string",
    ),
    (
        "allowed_tools naming an unknown tool",
        body(
            tools=[{"type": "function", "name": "a"}],
            tool_choice={
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "z"}],
            },
        ),
        "tool_choice.tools[0]",
        "must be one of the function tools",
    ),
    (
        "allowed_tools empty",
        body(
            tools=[{"type": "function", "name": "a"}],
            tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []},
        ),
        "tool_choice.tools",
        "non-empty",
    ),
    (
        "allowed_tools bad mode",
        body(
            tools=[{"type": "function", "name": "a"}],
            tool_choice={
                "type": "allowed_tools",
                "mode": "some",
                "tools": [{"type": "function", "name": "a"}],
            },
        ),
        "tool_choice.mode",
        "'auto' or 'required'",
    ),
    (
        "parallel_tool_calls not a boolean",
        body(parallel_tool_calls="no"),
        "parallel_tool_calls",
        "must be a boolean",
    ),
    ("max_output_tokens zero", body(max_output_tokens=0), "max_output_tokens", "positive integer"),
    (
        "max_output_tokens a string",
        body(max_output_tokens="10"),
        "max_output_tokens",
        "positive integer",
    ),
    ("temperature a string", body(temperature="hot"), "temperature", "must be a number"),
    ("top_p a boolean", body(top_p=True), "top_p", "must be a number"),
    ("instructions not a string", body(instructions=["x"]), "instructions", "must be a string"),
    ("text not an object", body(text="json"), "text", "must be an object"),
    (
        "text.format unknown",
        body(text={"format": {"type": "yaml"}}),
        "text.format.type",
        "'text', 'json_object' or 'json_schema'",
    ),
    (
        "json_schema without schema",
        body(text={"format": {"type": "json_schema", "name": "x"}}),
        "text.format.schema",
        "JSON schema object",
    ),
    (
        "json_schema without name",
        body(text={"format": {"type": "json_schema", "schema": {}}}),
        "text.format.name",
        "must be a string",
    ),
    ("reasoning not an object", body(reasoning="high"), "reasoning", "must be an object"),
    (
        "reasoning effort not a string",
        body(reasoning={"effort": 3}),
        "reasoning.effort",
        "must be a string",
    ),
    ("metadata not string values", body(metadata={"n": 1}), "metadata", "string values"),
    ("user not a string", body(user=5), "user", "must be a string"),
    ("store not a boolean", body(store="yes"), "store", "must be a boolean"),
    (
        "previous_response_id",
        body(previous_response_id="resp_1"),
        "previous_response_id",
        "send the full conversation in 'input'",
    ),
    (
        "conversation",
        body(conversation="conv_1"),
        "conversation",
        "send the full conversation in 'input'",
    ),
    ("stored prompt", body(prompt={"id": "pmpt_1"}), "prompt", "send the prompt itself"),
    ("background", body(background=True), "background", "background false"),
]


@pytest.mark.parametrize(("name", "raw", "param", "words"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(name: str, raw: Any, param: str | None, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    assert info.value.param == param
    assert words in info.value.message
    assert info.value.status == 400


def test_stateless_errors_name_the_way_out() -> None:
    with pytest.raises(InvalidRequest) as info:
        require_stateless(body(previous_response_id="resp_abc"))
    assert info.value.code == "unsupported_parameter"
    assert info.value.message.startswith("'previous_response_id' needs the earlier response")
    require_stateless(body(store=True, background=False))  # nothing stateful: no error


def test_builtin_tools_are_named_in_the_error() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body(tools=[{"type": "web_search_preview"}]))
    assert info.value.code == "unsupported_tool"
    assert "use a model whose upstream serves the Responses API natively" in info.value.message


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (None, []),
        ([{"type": "function", "name": "f"}, {"name": "g"}], []),
        (
            [{"type": "function", "name": "f"}, {"type": "web_search"}, {"type": "mcp"}],
            ["web_search", "mcp"],
        ),
    ],
)
def test_builtin_tools(tools: Any, expected: list[str]) -> None:
    assert builtin_tools(body(tools=tools)) == expected


@pytest.mark.parametrize(
    ("store", "headers"),
    [(False, {}), (True, {STATELESS_HEADER: "false"}), (None, {STATELESS_HEADER: "false"})],
)
def test_stateless_headers(store: bool | None, headers: dict[str, str]) -> None:
    raw = body() if store is None else body(store=store)
    assert stateless_headers(raw) == headers


def test_check_request() -> None:
    assert check_request(body()) == ("alias", False)
    assert check_request(body(stream=True, input=[{"role": "user", "content": "x"}])) == (
        "alias",
        True,
    )
