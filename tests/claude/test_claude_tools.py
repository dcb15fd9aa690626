"""Client-defined tools: the run stops at the call, the client runs it, the next request's
tool_result continues the conversation (the Home Assistant device-control loop)."""

from __future__ import annotations

import pytest
from claude_helpers import run, upstream_turns

from fakes import FakeAnthropic
from meridian.model import (
    Message,
    Request,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.providers.claude import ClaudeCodeProvider

pytestmark = pytest.mark.slow

LIGHT = {
    "type": "object",
    "properties": {"area": {"type": "string"}, "brightness": {"type": "integer"}},
    "required": ["area"],
}
TOOLS = (
    Tool("HassTurnOn", "Turns on a device or entity", LIGHT),
    Tool("HassTurnOff", "Turns off a device or entity", LIGHT),
)


async def test_parallel_tool_calls_round_trip(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    ask = Message("user", (TextBlock("Kitchen on at 40%, hall off."),))
    fake_anthropic.reply_tool_calls(
        ("HassTurnOn", {"area": "kitchen", "brightness": 40}),
        ("HassTurnOff", {"area": "hall"}),
        text="On it.",
    )
    _, first = await run(provider, Request(model="haiku", messages=(ask,), tools=TOOLS))

    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if isinstance(b, ToolUseBlock)]
    assert [(c.name, dict(c.input)) for c in calls] == [
        ("HassTurnOn", {"area": "kitchen", "brightness": 40}),
        ("HassTurnOff", {"area": "hall"}),
    ]
    assert first.content[0] == TextBlock("On it.")
    # The tools went upstream under their own names and schemas, and nothing else did.
    sent = {t["name"]: t for t in fake_anthropic.last.json["tools"] if not t.get("defer_loading")}
    assert set(sent) == {"HassTurnOn", "HassTurnOff"}
    assert sent["HassTurnOn"]["input_schema"] == LIGHT
    assert sent["HassTurnOn"]["description"] == "Turns on a device or entity"
    assert len(fake_anthropic.requests) == 1  # the run ended at the calls

    fake_anthropic.reply_text("Kitchen is on at 40% and the hall is off.")
    results = Message(
        "user",
        (
            ToolResultBlock(calls[0].id, (TextBlock("kitchen: on, 40%"),)),
            ToolResultBlock(calls[1].id, (TextBlock("hall: off"),)),
        ),
    )
    _, second = await run(
        provider,
        Request(
            model="haiku", messages=(ask, Message("assistant", first.content), results), tools=TOOLS
        ),
    )

    assert second.content == (TextBlock("Kitchen is on at 40% and the hall is off."),)
    assert second.stop_reason == "end_turn"
    turns = upstream_turns(fake_anthropic.last.json)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["id"] for b in turns[1]["content"] if b["type"] == "tool_use"] == [
        calls[0].id,
        calls[1].id,
    ]
    answered = [b for b in turns[2]["content"] if b["type"] == "tool_result"]
    assert [(b["tool_use_id"], _text(b["content"])) for b in answered] == [
        (calls[0].id, "kitchen: on, 40%"),
        (calls[1].id, "hall: off"),
    ]
    assert not any(b.get("is_error") for b in answered)
    assert len(fake_anthropic.requests) == 2


async def test_error_result_with_a_note_continues(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    call = ToolUseBlock("toolu_01ABC", "HassTurnOn", {"area": "garage"})
    fake_anthropic.reply_text("The garage light is unavailable.")
    request = Request(
        model="haiku",
        tools=TOOLS,
        messages=(
            Message("user", (TextBlock("Garage light on."),)),
            Message("assistant", (call,)),
            Message(
                "user",
                (
                    ToolResultBlock(call.id, (TextBlock("entity unavailable"),), is_error=True),
                    TextBlock("(the user is waiting)"),
                ),
            ),
        ),
    )
    _, answer = await run(provider, request)

    assert answer.content == (TextBlock("The garage light is unavailable."),)
    turns = upstream_turns(fake_anthropic.last.json)
    result = turns[-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    assert result["is_error"] is True
    assert _text(result["content"]).startswith("entity unavailable")
    # Text sent beside the results stays beside them.
    note = [b for b in turns[-1]["content"] if b["type"] == "text"]
    assert note[0]["text"].startswith("(the user is waiting)")
    # The CLI's own words on resuming a turn (cold start only; see docs/claude-code.md).
    assert turns[-1]["content"][-1]["text"] == "Continue from where you left off."


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    assert isinstance(content, list)
    return "\n".join(b["text"] for b in content if b["type"] == "text")
