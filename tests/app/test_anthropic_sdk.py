"""The official `anthropic` SDK against meridian, on both kinds of upstream."""

from __future__ import annotations

import anthropic
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway

TOOLS = [
    {
        "name": "turn_on",
        "description": "Turn on a device",
        "input_schema": {"type": "object", "properties": {"entity": {"type": "string"}}},
    }
]
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)


def _up(
    alias: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> FakeOpenAI | FakeAnthropic:
    return fake_anthropic if alias == "claude-test" else fake_openai


@pytest.mark.parametrize("alias", ["claude-test", "gpt-test"])
def test_plain_answer(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    _up(alias, fake_openai, fake_anthropic).reply_text("Hi!", input_tokens=9, output_tokens=2)
    msg = client.messages.create(
        model=alias, max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    )
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Hi!"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (9, 2)


@pytest.mark.parametrize("alias", ["claude-test", "gpt-test"])
def test_streamed_answer(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    _up(alias, fake_openai, fake_anthropic).reply_text(
        "a b c d e f g", piece_size=2, output_tokens=7
    )
    with client.messages.stream(
        model=alias, max_tokens=100, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "a b c d e f g" and len(pieces) > 3
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7


@pytest.mark.parametrize("alias", ["claude-test", "gpt-test"])
def test_parallel_tool_use_streamed(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    _up(alias, fake_openai, fake_anthropic).reply_tool_calls(
        ("turn_on", {"entity": "light.a"}), ("turn_on", {"entity": "light.b"}), piece_size=4
    )
    with client.messages.stream(
        model=alias,
        max_tokens=100,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "on"}],
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"entity": "light.a"}, {"entity": "light.b"}]  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_tool_result_round_trip_to_openai(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    client.messages.create(
        model="gpt-test",
        max_tokens=100,
        tools=TOOLS,  # type: ignore[arg-type]
        system="You control a house.",
        messages=[
            {"role": "user", "content": "on"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "turn_on",
                        "input": {"entity": "a"},
                    },
                    {"type": "tool_use", "id": "toolu_2", "name": "turn_on", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "no"}],
                        "is_error": True,
                    },
                ],
            },
        ],
    )
    sent = fake_openai.last.json
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    calls = sent["messages"][2]["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [
        ("toolu_1", "turn_on"),
        ("toolu_2", "turn_on"),
    ]
    assert [m["tool_call_id"] for m in sent["messages"][3:]] == ["toolu_1", "toolu_2"]
    assert sent["tools"][0]["function"]["parameters"]["properties"] == {
        "entity": {"type": "string"}
    }


def test_relay_keeps_unknown_fields_cache_control_and_betas(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    client.messages.create(
        model="claude-test",
        max_tokens=100,
        system=[{"type": "text", "text": "big prompt", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "hi",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            }
        ],
        extra_headers={
            "anthropic-beta": "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31"
        },
        extra_body={"some_future_field": {"kept": True}},
    )
    got = fake_anthropic.last
    assert got.json["some_future_field"] == {"kept": True}
    assert got.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert got.json["messages"][0]["content"][0]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    assert (
        got.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31"
    )
    assert got.headers["x-api-key"] == "sk-upstream-anthropic"


def test_thinking_signature_round_trips(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_thinking("let me think", "42", signature="c2lnbmF0dXJl+/==")
    with client.messages.stream(
        model="claude-test",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "?"}],
    ) as stream:
        final = stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature == "c2lnbmF0dXJl+/=="
    client.messages.create(
        model="claude-test",
        max_tokens=2000,
        messages=[
            {"role": "user", "content": "?"},
            {"role": "assistant", "content": [b.model_dump() for b in final.content]},  # type: ignore[misc]
            {"role": "user", "content": "and?"},
        ],
    )
    sent_back = fake_anthropic.last.json["messages"][1]["content"][0]
    assert sent_back["signature"] == "c2lnbmF0dXJl+/==" and sent_back["thinking"] == "let me think"


def test_image_to_openai(client: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    client.messages.create(
        model="gpt-test",
        max_tokens=10,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {"type": "text", "text": "what is it"},
                ],
            }
        ],
    )
    parts = fake_openai.last.json["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}


def test_overloaded_before_first_byte(
    client: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    # The first attempt and router.retries (2) more, after a backoff: all overloaded.
    for _ in range(3):
        fake_anthropic.reply_overloaded()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(fake_anthropic.requests) == 3


@pytest.mark.parametrize("alias", ["claude-test", "gpt-test"])
def test_error_mid_stream(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    _up(alias, fake_openai, fake_anthropic).reply_stream_error(after=3, message="upstream broke")
    with (
        pytest.raises(anthropic.APIError, match="upstream broke"),
        client.messages.stream(
            model=alias, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        for _ in stream:
            pass


@pytest.mark.parametrize("alias", ["claude-test", "gpt-test"])
def test_truncated_stream_ends_with_error_event(
    client: anthropic.Anthropic, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    _up(alias, fake_openai, fake_anthropic).reply_truncated(after=3)
    with (
        pytest.raises(anthropic.APIError),
        client.messages.stream(
            model=alias, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        for _ in stream:
            pass


def test_models_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    page = client.models.list(limit=2)
    assert [m.id for m in page.data] == ["gpt-test", "o3-test"]
    assert page.has_more
    rest = client.models.list(after_id=page.last_id)
    assert [m.id for m in rest.data] == ["claude-test", "fallback-test"]
    info = client.models.retrieve("claude-test")
    assert info.type == "model" and info.display_name
