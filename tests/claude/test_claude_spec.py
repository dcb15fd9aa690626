"""Request -> RunSpec -> transcript, and SDK messages -> events: pure, no CLI."""

from __future__ import annotations

import pytest
from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent
from claude_agent_sdk import TextBlock as SdkText

from meridian.claude_process import DeferredCall, RunSpec, transcript
from meridian.errors import ApiError, InvalidRequest
from meridian.model import (
    BlockDelta,
    BlockStart,
    Collector,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    TextBlock,
    TextDelta,
    Thinking,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.providers.claude_code import EventRelay, build_spec

CACHE = {"type": "ephemeral"}


def req(*messages: Message, **fields: object) -> Request:
    return Request(model="sonnet", messages=messages, **fields)  # type: ignore[arg-type]


def test_earlier_turns_become_history_and_the_last_the_prompt() -> None:
    spec = build_spec(
        req(
            Message("user", (TextBlock("a", cache_control=CACHE),)),
            Message("assistant", (TextBlock("b"),)),
            Message("user", (TextBlock("c"),)),
            Message("user", (TextBlock("d", cache_control=CACHE),)),  # merged into one turn
            system=(TextBlock("one"), TextBlock("two")),
            max_tokens=100,
        )
    )
    assert spec.history == (
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
    )
    assert spec.prompt == ({"type": "text", "text": "c"}, {"type": "text", "text": "d"})
    assert (spec.system, spec.max_tokens, spec.deferred) == ("one\n\ntwo", 100, None)
    assert spec.thinking_budget is None  # thinking off


def test_a_partial_assistant_answer_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        build_spec(req(Message("user", (TextBlock("a"),)), Message("assistant", (TextBlock("b"),))))


def test_tool_results_resume_the_last_call_with_the_others_in_the_transcript() -> None:
    calls = (ToolUseBlock("t1", "on", {"area": "a"}), ToolUseBlock("t2", "off", {"area": "b"}))
    spec = build_spec(
        req(
            Message("user", (TextBlock("go"),)),
            Message("assistant", calls),
            Message(
                "user",
                (
                    TextBlock("note"),
                    ToolResultBlock("t2", (TextBlock("b off", cache_control=CACHE),), True),
                    ToolResultBlock("t1", (TextBlock("a on"),)),
                ),
            ),
            tools=(Tool("on"),),
        )
    )
    assert spec.prompt is None
    assert spec.deferred == DeferredCall(
        "t2",
        "off",
        {"area": "b"},
        ({"type": "text", "text": "b off"}, {"type": "text", "text": "note"}),
        True,
    )
    assert spec.history[-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a on"}],
    }
    assert spec.history[-2]["role"] == "assistant"
    assert [t.name for t in spec.tools] == ["on", "off"]  # the resumed tool is declared


def test_thinking_and_effort_map_to_cli_options() -> None:
    ask = Message("user", (TextBlock("q"),))
    spec = build_spec(req(ask, thinking=Thinking(budget_tokens=2048, effort="minimal")))
    assert (spec.thinking_budget, spec.effort) == (2048, "low")
    assert build_spec(req(ask, thinking=Thinking())).thinking_budget == 0  # adaptive
    assert build_spec(req(ask, thinking=Thinking(enabled=False))).thinking_budget is None


def test_transcript_is_a_chain_ending_at_the_deferred_call(tmp_path: object) -> None:
    spec = RunSpec(
        model="sonnet",
        history=(
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "on", "input": {}}],
            },
        ),
        deferred=DeferredCall("t1", "on", {}, ()),
    )
    entries = transcript(spec, "sid", tmp_path)  # type: ignore[arg-type]

    assert [e["type"] for e in entries] == ["user", "assistant", "attachment"]
    assert entries[0]["parentUuid"] is None
    assert [e["parentUuid"] for e in entries[1:]] == [e["uuid"] for e in entries[:-1]]
    assert {e["sessionId"] for e in entries} == {"sid"}
    assert entries[1]["message"]["stop_reason"] == "tool_use"
    assert entries[2]["attachment"]["type"] == "hook_deferred_tool"
    assert entries[2]["attachment"]["toolUseID"] == "t1"


def _event(data: dict[str, object]) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="s", event=data)


def _message(msg_id: str, text: str) -> list[StreamEvent]:
    return [
        _event(
            {
                "type": "message_start",
                "message": {"id": msg_id, "model": "m", "usage": {"input_tokens": 5}},
            }
        ),
        _event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        _event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        ),
        _event({"type": "content_block_stop", "index": 0}),
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            }
        ),
        _event({"type": "message_stop"}),
    ]


def _result(**fields: object) -> ResultMessage:
    base: dict[str, object] = {
        "subtype": "success",
        "duration_ms": 1,
        "duration_api_ms": 1,
        "is_error": False,
        "num_turns": 1,
        "session_id": "s",
        "stop_reason": "tool_deferred",
        "total_cost_usd": 0.25,
        "usage": {"input_tokens": 10, "output_tokens": 6, "cache_read_input_tokens": 4},
    }
    return ResultMessage(**{**base, **fields})  # type: ignore[arg-type]


def test_relay_makes_one_message_of_a_run_with_our_final_delta() -> None:
    relay = EventRelay("claude")
    events = []
    for message in [*_message("msg_1", "a"), *_message("msg_2", "b"), _result()]:
        events.extend(relay.feed(message))

    assert sum(isinstance(e, MessageStart) for e in events) == 1
    assert [e.index for e in events if isinstance(e, BlockStart)] == [0, 1]
    assert (
        isinstance(events[-1], MessageStop) and sum(isinstance(e, MessageStop) for e in events) == 1
    )
    final = events[-2]
    assert isinstance(final, MessageDelta) and final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 6)
    assert (final.usage.cache_read_tokens, final.usage.cost_usd) == (4, 0.25)
    response = Collector().feed_all(events)
    assert response.content == (TextBlock("a"), TextBlock("b"))
    assert BlockDelta(1, TextDelta("b")) in events


def test_relay_refuses_an_answer_that_was_not_streamed() -> None:
    relay = EventRelay("claude")
    for message in _message("msg_1", "partial"):
        relay.feed(message)
    relay.feed(AssistantMessage(content=[SdkText("full")], model="m", message_id="msg_2"))
    with pytest.raises(ApiError):
        relay.feed(_result(stop_reason="end_turn"))
