"""What the upstream receives is what the client asked for: the model, one call per request,
the tool results and the options as sent. Each check is on the fake upstream's request log,
through the real CLI."""

from __future__ import annotations

import base64
import json

import pytest
from claude_helpers import ask, listing, run, upstream_turns

from fakes import FakeAnthropic
from meridian.errors import InvalidRequest
from meridian.model import (
    DocumentBlock,
    ImageBlock,
    Message,
    MessageStart,
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.providers.claude import ClaudeCodeProvider

pytestmark = pytest.mark.slow

LIGHT = {"type": "object", "properties": {"area": {"type": "string"}}, "required": ["area"]}
TOOLS = (Tool("HassTurnOn", "Turns on", LIGHT), Tool("HassTurnOff", "Turns off", LIGHT))
# A 1x1 PNG (the CLI re-encodes images it cannot read).
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


async def test_a_shorthand_is_answered_by_the_model_the_cli_picked_and_says_so(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    """Also what the CLI adds upstream beyond the request (docs/claude-code.md)."""
    events, _ = await run(provider, ask("hello", model="sonnet", tools=TOOLS))

    sent = fake_anthropic.last.json
    picked = sent["model"]
    assert picked.startswith("claude-sonnet-") and picked != "sonnet"
    start = events[0]
    assert isinstance(start, MessageStart) and start.model == picked
    assert provider.status()["models"] == {"sonnet": picked}
    # The client's two tools and nothing else (no DeferredToolPlaceholder).
    assert sorted(t["name"] for t in sent["tools"]) == ["HassTurnOff", "HassTurnOn"]
    # No system prompt asked: the CLI's own one-line prefix and its billing block only.
    assert [b["text"] for b in sent["system"]][1:] == [
        "You are a Claude agent, built on Anthropic's Claude Agent SDK."
    ]
    # The environment note names a working directory that says nothing about the server.
    text = json.dumps(sent)
    assert "meridian" not in text and "/run-" not in text


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "sonnet"])
async def test_thinking_in_a_tool_loop_history_reaches_the_upstream(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic, model: str
) -> None:
    if model == "sonnet":  # the shorthand's exact id is learned from an earlier answer
        await run(provider, ask("hi", model=model))
    thought = ThinkingBlock("Which area?", "EqQBCkYIBBgCIkBmYWtlLXNpZ25hdHVyZQ==")
    history = (
        Message("user", (TextBlock("Kitchen on."),)),
        Message("assistant", (thought, ToolUseBlock("toolu_1", "HassTurnOn", {"area": "k"}))),
        Message("user", (ToolResultBlock("toolu_1", (TextBlock("on"),)),)),
    )
    fake_anthropic.reply_text("Done.")
    request = Request(model=model, messages=history, tools=TOOLS, thinking=Thinking())
    _, answer = await run(provider, request)

    assert answer.content == (TextBlock("Done."),)
    turns = upstream_turns(fake_anthropic.last.json)
    assert turns[1]["content"][0] == {
        "type": "thinking",
        "thinking": thought.thinking,
        "signature": thought.signature,
    }


@pytest.mark.parametrize("stop", ["max_tokens", "refusal"])
async def test_a_max_tokens_or_refusal_stop_is_one_upstream_call(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic, stop: str
) -> None:
    fake_anthropic.reply_text("cut short here", stop_reason=stop, output_tokens=7)
    # What the CLI's own recovery turns would get: never asked for.
    fake_anthropic.reply_text("and glued on")
    fake_anthropic.reply_text("and again")
    _, answer = await run(provider, ask("write a lot", model="claude-haiku-4-5"))

    assert answer.content == (TextBlock("cut short here"),)
    assert answer.stop_reason == stop
    assert answer.usage.output_tokens == 7
    assert answer.usage.input_tokens == fake_anthropic.requests[0].reply.input_tokens  # type: ignore[union-attr]
    assert len(fake_anthropic.requests) == 1
    assert provider.in_flight == 0
    # The CLI was stopped there, and left no session record behind.
    assert listing(provider.config.config_dir / "sessions") in (None, [])


async def test_a_result_for_a_call_the_history_lacks_is_400_before_any_process(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    history = (
        Message("user", (TextBlock("Kitchen on."),)),
        Message("assistant", (ToolUseBlock("toolu_1", "HassTurnOn", {"area": "k"}),)),
        Message("user", (ToolResultBlock("toolu_9", (TextBlock("on"),)),)),
    )
    with pytest.raises(InvalidRequest, match="toolu_9"):
        await run(provider, Request(model="claude-haiku-4-5", messages=history, tools=TOOLS))
    assert fake_anthropic.requests == []
    assert provider.processes.counts["spawns"] == 0


async def test_documents_and_images_in_tool_results_arrive(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    doc = DocumentBlock({"type": "text", "media_type": "text/plain", "data": "manual text"})
    history = (
        Message("user", (TextBlock("Check both."),)),
        Message(
            "assistant",
            (
                ToolUseBlock("toolu_1", "HassTurnOn", {"area": "a"}),
                ToolUseBlock("toolu_2", "HassTurnOff", {"area": "b"}),
            ),
        ),
        Message(
            "user",
            (
                ToolResultBlock("toolu_1", (TextBlock("see manual"), doc)),
                ToolResultBlock(
                    "toolu_2", (TextBlock("camera says no"), ImageBlock("image/png", PNG)), True
                ),
            ),
        ),
    )
    fake_anthropic.reply_text("Seen.")
    await run(provider, Request(model="claude-haiku-4-5", messages=history, tools=TOOLS))

    content = upstream_turns(fake_anthropic.last.json)[-1]["content"]
    first, second = (b for b in content if b["type"] == "tool_result")
    assert first["content"][1] == {"type": "document", "source": dict(doc.source)}
    assert second["is_error"] is True
    assert second["content"][0]["text"].startswith("camera says no")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert image in content  # beside the results: the CLI keeps only an error's text
    assert len(fake_anthropic.requests) == 1


@pytest.mark.parametrize(
    ("choice", "tools", "sent_choice"),
    [(ToolChoice("none"), [], None), (ToolChoice("any"), ["HassTurnOff", "HassTurnOn"],
      {"type": "any"})],
    ids=["none", "any"],
)  # fmt: skip
async def test_tool_choice_and_sampling_are_honoured(
    provider: ClaudeCodeProvider,
    fake_anthropic: FakeAnthropic,
    choice: ToolChoice,
    tools: list[str],
    sent_choice: dict[str, str] | None,
) -> None:
    request = ask("lights?", "claude-haiku-4-5", tools=TOOLS, tool_choice=choice, temperature=0.3)
    await run(provider, request)
    sent = fake_anthropic.last.json
    assert sorted(t["name"] for t in sent["tools"]) == tools
    assert sent.get("tool_choice") == sent_choice
    assert sent["temperature"] == 0.3  # what the CLI has no flag for rides in its extra body
