"""Answers through the real CLI: streaming, usage, system prompts, history, images, thinking."""

from __future__ import annotations

import asyncio
import base64
from contextlib import aclosing

import pytest
from claude_helpers import ask, run, upstream_turns

from fakes import FakeAnthropic
from meridian.model import (
    BlockDelta,
    ImageBlock,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    TextBlock,
    TextDelta,
    Thinking,
    ThinkingBlock,
)
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider

pytestmark = pytest.mark.slow

# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


async def test_tokens_stream_as_they_come_with_usage_and_cost(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_slow(0.05, text="one two three four five six seven eight")
    seen_while_streaming: list[bytes] = []
    events = []
    async with asyncio.timeout(60):
        stream = provider.stream(ask("count", max_tokens=77), CallContext("t"))
        async with aclosing(stream) as events_in:
            async for event in events_in:
                if isinstance(event, BlockDelta) and not seen_while_streaming:
                    # The fake is still writing: this token was relayed as it came.
                    seen_while_streaming.append(fake_anthropic.last.sent)
                events.append(event)

    assert b"message_stop" not in seen_while_streaming[0]
    assert isinstance(events[0], MessageStart)
    assert isinstance(events[-1], MessageStop)
    text = "".join(
        e.delta.text for e in events if isinstance(e, BlockDelta) and isinstance(e.delta, TextDelta)
    )
    assert text == "one two three four five six seven eight"
    assert len([e for e in events if isinstance(e, BlockDelta)]) > 1

    final = events[-2]
    assert isinstance(final, MessageDelta) and final.stop_reason == "end_turn"
    served = fake_anthropic.last.reply
    assert served is not None
    assert final.usage.output_tokens == served.output_tokens
    assert final.usage.input_tokens == served.input_tokens
    assert final.usage.cost_usd is not None and final.usage.cost_usd > 0

    body = fake_anthropic.last.json
    assert fake_anthropic.last.path == "/v1/messages" and body["stream"] is True
    assert body["max_tokens"] == 77
    assert "thinking" not in body  # off unless asked for
    assert len(fake_anthropic.requests) == 1


async def test_system_prompt_of_any_size_arrives_whole(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    # Far above the ~100 KB a single argv string may hold (E2BIG).
    system = "You are the house assistant. " + "".join(f"Rule {i}: be kind. " for i in range(20000))
    assert len(system) > 300_000
    _, answer = await run(provider, ask("hello", system=(TextBlock(system),)))

    assert answer.content == (TextBlock(f"pong from {fake_anthropic.last.json['model']}"),)
    sent = [b["text"] for b in fake_anthropic.last.json["system"]]
    assert system in sent


async def test_history_arrives_as_real_alternating_turns_with_an_image(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_text("It is a single pixel.")
    request = Request(
        model="haiku",
        messages=(
            Message("user", (TextBlock("My name is Ada."),)),
            Message("assistant", (TextBlock("Hello Ada."),)),
            Message("user", (TextBlock("What is 2+2?"),)),
            Message("assistant", (TextBlock("4"),)),
            Message(
                "user",
                (
                    TextBlock("And what is this image?"),
                    ImageBlock(media_type="image/png", data=PNG),
                ),
            ),
        ),
    )
    _, answer = await run(provider, request)

    assert answer.content == (TextBlock("It is a single pixel."),)
    turns = upstream_turns(fake_anthropic.last.json)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]

    def texts(turn: dict[str, object]) -> list[str]:
        content = turn["content"]
        assert isinstance(content, list)
        return [b["text"] for b in content if b["type"] == "text"]

    assert texts(turns[0]) == ["My name is Ada."]
    assert texts(turns[1]) == ["Hello Ada."]
    assert texts(turns[3]) == ["4"]
    assert "And what is this image?" in texts(turns[4])
    images = [b for b in turns[4]["content"] if b["type"] == "image"]
    assert images == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    ]
    assert len(fake_anthropic.requests) == 1  # one upstream call, not one per turn


async def test_thinking_only_when_asked_and_relayed_with_its_signature(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_thinking("Let me add them.", "4")
    request = ask("2+2?", thinking=Thinking(budget_tokens=2048), max_tokens=4096)
    _, answer = await run(provider, request)

    assert answer.content[0] == ThinkingBlock(
        "Let me add them.", "EqQBCkYIBBgCIkBmYWtlLXNpZ25hdHVyZQ=="
    )
    assert answer.content[1] == TextBlock("4")
    # The CLI decides the shape: on current models any budget means adaptive thinking.
    assert fake_anthropic.last.json["thinking"]["type"] in ("enabled", "adaptive")
