"""The official `openai` SDK against meridian, on both kinds of upstream."""

from __future__ import annotations

import json

import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "turn_on",
            "description": "Turn on a device",
            "parameters": {"type": "object", "properties": {"entity": {"type": "string"}}},
        },
    }
]
PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_plain_answer(
    client: openai.OpenAI, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    upstream = fake_openai if alias == "gpt-test" else fake_anthropic
    upstream.reply_text("Hello there", input_tokens=11, output_tokens=3)
    done = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    assert done.choices[0].message.content == "Hello there"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (11, 3)
    sent = upstream.last.json
    assert sent["model"] == ("gpt-4o-mini" if alias == "gpt-test" else "claude-haiku-4-5")
    assert "sk-test" not in json.dumps(upstream.last.headers)  # the caller's key stays here


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_streamed_answer_with_usage(
    client: openai.OpenAI, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    upstream = fake_openai if alias == "gpt-test" else fake_anthropic
    upstream.reply_text("one two three four five", input_tokens=7, output_tokens=5, piece_size=3)
    chunks = list(
        client.chat.completions.create(
            model=alias,
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_stream_without_usage_option_has_no_usage_chunk(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    # meridian still asked upstream for usage, for its own ledger
    assert fake_openai.last.json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_parallel_tool_calls_streamed(
    client: openai.OpenAI, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    upstream = fake_openai if alias == "gpt-test" else fake_anthropic
    upstream.reply_tool_calls(
        ("turn_on", {"entity": "light.kitchen"}),
        ("turn_on", {"entity": "light.porch"}),
        piece_size=5,
    )
    with client.chat.completions.stream(
        model=alias,
        messages=[{"role": "user", "content": "lights on"}],
        tools=TOOLS,
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    args = [json.loads(c.function.arguments) for c in message.tool_calls]  # type: ignore[union-attr]
    assert args == [{"entity": "light.kitchen"}, {"entity": "light.porch"}]
    assert len({c.id for c in message.tool_calls}) == 2


def test_tool_result_round_trip_to_anthropic(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_text("The kitchen light is on.")
    client.chat.completions.create(
        model="claude-test",
        tools=TOOLS,
        messages=[
            {"role": "system", "content": "You control a house."},
            {"role": "user", "content": "kitchen light on"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "turn_on", "arguments": '{"entity": "light.kitchen"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "turn_on", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "tool", "tool_call_id": "call_2", "content": "failed"},
        ],
    )
    sent = fake_anthropic.last.json
    assert sent["system"] in (
        "You control a house.",
        [{"type": "text", "text": "You control a house."}],
    )
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "user"]
    uses = sent["messages"][1]["content"]
    assert [(b["id"], b["input"]) for b in uses if b["type"] == "tool_use"] == [
        ("call_1", {"entity": "light.kitchen"}),
        ("call_2", {}),
    ]
    results = sent["messages"][2]["content"]
    assert [b["tool_use_id"] for b in results] == ["call_1", "call_2"]
    assert sent["tools"][0]["input_schema"]["properties"] == {"entity": {"type": "string"}}


def test_image_to_anthropic(client: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    client.chat.completions.create(
        model="claude-test",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    blocks = fake_anthropic.last.json["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": PIXEL}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


def test_o_series_gets_max_completion_tokens(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    client.chat.completions.create(
        model="o3-test",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=300,
        temperature=0.2,
    )
    sent = fake_openai.last.json
    assert sent["max_completion_tokens"] == 300
    assert "max_tokens" not in sent and "temperature" not in sent


def test_no_max_tokens_to_anthropic_gets_a_default_and_big_ones_are_clamped(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    client.chat.completions.create(model="claude-test", messages=[{"role": "user", "content": "x"}])
    assert isinstance(fake_anthropic.last.json["max_tokens"], int)
    client.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": "x"}], max_tokens=10_000_000
    )
    assert fake_anthropic.last.json["max_tokens"] == 64_000


def test_rate_limit_before_first_byte_keeps_retry_after(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    # Longer than router.retry_budget_s (15 s): not worth waiting for here, so the client
    # gets the upstream's own retry-after at once.
    fake_openai.reply_rate_limited(retry_after=30)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.response.headers["retry-after"] == "30"
    assert info.value.response.headers.get("x-should-retry") != "false"
    assert len(fake_openai.requests) == 1


def test_quota_exhausted_is_not_retryable(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_quota_exhausted()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.code == "insufficient_quota"


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_error_mid_stream_raises_in_the_sdk(
    client: openai.OpenAI, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    upstream = fake_openai if alias == "gpt-test" else fake_anthropic
    upstream.reply_stream_error(after=3, message="the model fell over")
    stream = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="fell over"):
        for _ in stream:
            pass


@pytest.mark.parametrize("fault", ["truncate", "reset"])
@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_broken_upstream_stream_ends_with_an_error(
    client: openai.OpenAI,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    alias: str,
    fault: str,
) -> None:
    upstream = fake_openai if alias == "gpt-test" else fake_anthropic
    (upstream.reply_truncated if fault == "truncate" else upstream.reply_reset)(after=3)
    stream = client.chat.completions.create(
        model=alias, messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_fallback_to_the_next_deployment(
    client: openai.OpenAI, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_overloaded()
    fake_openai.reply_text("from the fallback")
    done = client.chat.completions.create(
        model="fallback-test", messages=[{"role": "user", "content": "x"}]
    )
    assert done.choices[0].message.content == "from the fallback"
    assert fake_openai.last.json["model"] == "gpt-4o"


def test_models_in_openai_shape(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-test", "o3-test", "claude-test", "fallback-test"]
    assert client.models.retrieve("claude-test").owned_by == "ant"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
