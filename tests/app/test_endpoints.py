"""Every endpoint meridian serves, driven by the official SDKs, against an OpenAI-shaped and
an Anthropic-shaped upstream: the Responses API (pass-through and translated), embeddings,
completions, count_tokens, the models listing; and what is not served."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI, ToolCall
from harness import Gateway


@pytest.fixture
def gateway(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Gateway]:
    raw = {
        "providers": {
            # Serves the Responses API itself (as api.openai.com does).
            "oai": {"type": "openai", "api_key": "sk-o", "base_url": fake_openai.url,
                    "responses_api": True},
            # An OpenAI-compatible server without it (Ollama, vLLM, Gemini).
            "local": {"type": "openai", "base_url": fake_openai.url},
            "ant": {"type": "anthropic", "api_key": "sk-a", "base_url": fake_anthropic.url},
        },
        "models": {
            "gpt-test": {"provider": "oai", "model": "gpt-4o-mini"},
            "local-test": {"provider": "local", "model": "llama3.2"},
            "claude-test": {"provider": "ant", "model": "claude-haiku-4-5"},
            "embed-test": {"provider": "oai", "model": "text-embedding-3-small"},
        },
    }  # fmt: skip
    with Gateway.start(raw, tmp_path) as gw:
        yield gw


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


TOOLS: Any = [
    {"type": "function", "name": "set_light", "description": "Switch a light",
     "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}}},
]  # fmt: skip


# ------------------------------------------------------------------ the Responses API


@pytest.mark.parametrize(
    ("alias", "upstream_path"),
    [
        ("gpt-test", "/v1/responses"),  # pass-through
        ("local-test", "/v1/chat/completions"),  # translated to chat
        ("claude-test", "/v1/messages"),  # translated to Anthropic
    ],
)
def test_responses_create_and_stream(
    gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    alias: str, upstream_path: str,
) -> None:  # fmt: skip
    fake = fake_anthropic if alias == "claude-test" else fake_openai
    fake.reply_text("Hello from the upstream")
    answer = oai(gateway).responses.create(model=alias, input="hi", instructions="Be brief.")
    assert answer.output_text == "Hello from the upstream"
    assert answer.status == "completed" and answer.usage is not None
    assert fake.last.path == upstream_path
    fake.reply_text("streamed words")
    with oai(gateway).responses.stream(model=alias, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "streamed words" == final.output_text
    if alias == "gpt-test":
        assert fake.last.json["input"] == "hi"  # the caller's own body, relayed
    else:
        assert fake.last.json["messages"]  # a chat / messages body made from it


@pytest.mark.parametrize("alias", ["gpt-test", "local-test", "claude-test"])
def test_responses_function_call_round_trip(
    gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    fake = fake_anthropic if alias == "claude-test" else fake_openai
    fake.reply_tool_calls(ToolCall("set_light", {"on": True}, id="call_light1"))
    client = oai(gateway)
    first = client.responses.create(model=alias, input="lights on", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("set_light", {"on": True})]
    fake.reply_text("The light is on.")
    with client.responses.stream(
        model=alias,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "lights on"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "set_light",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "done"},
        ],
    ) as stream:
        final = stream.get_final_response()  # fmt: skip
    assert final.output_text == "The light is on."
    sent = json.dumps(fake.last.json)
    assert calls[0].call_id in sent and "done" in sent  # the result reached the upstream


def test_responses_statefulness_is_refused_when_translated(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).responses.create(model="local-test", input="hi", previous_response_id="r1")
    assert "send the full" in info.value.message


def test_responses_previous_response_id_is_forwarded_on_pass_through(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    oai(gateway).responses.create(model="gpt-test", input="more", previous_response_id="resp_1")
    assert fake_openai.last.json["previous_response_id"] == "resp_1"


def test_responses_builtin_tools_only_where_served(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    tool: Any = [{"type": "web_search"}]
    oai(gateway).responses.create(model="gpt-test", input="news?", tools=tool)
    assert fake_openai.last.json["tools"] == tool
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).responses.create(model="claude-test", input="news?", tools=tool)
    assert "web_search" in info.value.message


# ------------------------------------------------------------------ embeddings, completions


def test_embeddings(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply(input_tokens=7)
    done = oai(gateway).embeddings.create(model="embed-test", input=["a", "b"])
    assert done.data[0].embedding == [0.25, -0.5, 0.125]
    assert fake_openai.last.path == "/v1/embeddings"
    assert (
        fake_openai.last.json
        == {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}
        or fake_openai.last.json["model"] == "text-embedding-3-small"
    )
    row = gateway.usage_rows()[-1]
    assert (row["endpoint"], row["input_tokens"], row["path"]) == ("/v1/embeddings", 7, "relay")
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).embeddings.create(model="claude-test", input="x")
    assert "provider `ant`, which has no embeddings endpoint" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_completions(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    fake_openai.reply_text("def add(a, b):")
    if stream:
        chunks = oai(gateway).completions.create(model="local-test", prompt="# add", stream=True)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = oai(gateway).completions.create(model="local-test", prompt="# add").choices[0].text
    assert text == "def add(a, b):"
    assert fake_openai.last.path == "/v1/completions"
    assert fake_openai.last.json["model"] == "llama3.2"


# ------------------------------------------------------------------ count_tokens


def test_count_tokens_exact_from_anthropic_and_estimated_elsewhere(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    messages: Any = [{"role": "user", "content": "How many tokens is this? " * 10}]
    exact = ant(gateway).messages.with_raw_response.count_tokens(
        model="claude-test", messages=messages
    )
    assert exact.headers.get("x-meridian-token-count") is None
    assert exact.parse().input_tokens == len(fake_anthropic.last.body) // 8
    assert fake_anthropic.last.path == "/v1/messages/count_tokens"
    estimated = ant(gateway).messages.with_raw_response.count_tokens(
        model="gpt-test", messages=messages, system="Be brief."
    )
    assert estimated.headers["x-meridian-token-count"] == "estimate"
    assert 60 <= estimated.parse().input_tokens <= 90  # 250 + 9 characters, at four a token


# ------------------------------------------------------------------ models


def test_models_paginated_with_capabilities(gateway: Gateway) -> None:
    client = ant(gateway)
    first = client.models.list(limit=2)
    assert [m.id for m in first.data] == ["gpt-test", "local-test"]
    assert first.has_more and first.last_id == "local-test"
    rest = client.models.list(limit=2, after_id="local-test")
    assert [m.id for m in rest.data] == ["claude-test", "embed-test"]
    assert not rest.has_more
    assert [m.id for m in client.models.list(limit=1, before_id="local-test").data] == ["gpt-test"]
    assert [m.id for m in client.models.list()] == [
        "gpt-test", "local-test", "claude-test", "embed-test"
    ]  # fmt: skip
    claude = client.models.retrieve("claude-test")
    assert claude.max_input_tokens == 200_000 and claude.max_tokens == 64_000
    caps: Any = claude.capabilities
    assert caps.thinking.supported and caps.pdf_input.supported and caps.image_input.supported
    local: Any = client.models.retrieve("local-test").capabilities
    assert not local.image_input.supported and not local.thinking.supported


# ------------------------------------------------------------------ not served


@pytest.mark.parametrize(
    ("headers", "envelope"),
    [
        ({"authorization": "Bearer x"}, "openai"),
        ({"x-api-key": "x", "anthropic-version": "1"}, "anthropic"),
    ],
)
def test_an_unknown_v1_endpoint_is_a_404_that_lists_what_is_served(
    gateway: Gateway, headers: dict[str, str], envelope: str
) -> None:
    req = urllib.request.Request(gateway.url + "/v1/assistants", data=b"{}", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(info.value.read())
    assert info.value.code == 404
    if envelope == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    else:
        assert set(body["error"]) >= {"message", "type", "param", "code"}
    message = body["error"]["message"]
    assert "no such endpoint: POST /v1/assistants" in message
    for served in ("POST /v1/responses", "POST /v1/embeddings", "POST /v1/messages/count_tokens"):
        assert served in message
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'status="404"' in metrics


def test_models_capabilities_and_context_from_the_config(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    raw = {
        "providers": {"local": {"type": "openai", "base_url": fake_openai.url}},
        "models": {
            "vision-local": {
                "provider": "local", "model": "qwen2.5-vl:7b", "max_input_tokens": 32_768,
                "capabilities": {"image_input": True, "structured_outputs": True},
            },
        },
    }  # fmt: skip
    with Gateway.start(raw, tmp_path) as gw:
        model = ant(gw).models.retrieve("vision-local")
    caps: Any = model.capabilities
    assert model.max_input_tokens == 32_768
    assert caps.image_input.supported and caps.structured_outputs.supported
    assert not caps.thinking.supported  # not said: the catalog's word for an unknown model


@pytest.mark.parametrize(
    ("base_url", "setting", "native"),
    [
        ("https://api.openai.com/v1", None, True),
        ("http://127.0.0.1:11434/v1", None, False),
        ("http://127.0.0.1:8000/v1", True, True),
        ("https://api.openai.com/v1", False, False),
    ],
)
def test_which_openai_upstreams_serve_responses_themselves(
    base_url: str, setting: bool | None, native: bool
) -> None:
    from meridian.config import OpenAIProviderConfig
    from meridian.providers.openai import native_operations

    conf = OpenAIProviderConfig.model_validate(
        {"type": "openai", "base_url": base_url, "responses_api": setting}
    )
    assert ("responses" in native_operations(conf)) is native
