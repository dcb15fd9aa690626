"""SDK messages -> events, and the usage windows they report: pure, no CLI."""

from __future__ import annotations

import pytest
from claude_agent_sdk import (
    AssistantMessage,
    RateLimitEvent,
    RateLimitInfo,
    ResultMessage,
    StreamEvent,
    SystemMessage,
)
from claude_agent_sdk import TextBlock as SdkText

from meridian.errors import ApiError
from meridian.model import (
    BlockDelta,
    BlockStart,
    Collector,
    MessageDelta,
    MessageStart,
    MessageStop,
    TextBlock,
    TextDelta,
)
from meridian.providers.claude.relay import EventRelay
from meridian.providers.claude.windows import UsageWindows


def _event(data: dict[str, object]) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="s", event=data)


def _message(msg_id: str, text: str, stop: str = "tool_use") -> list[StreamEvent]:
    start = {"id": msg_id, "model": "claude-x-1", "usage": {"input_tokens": 5}}
    return [
        _event({"type": "message_start", "message": start}),
        _event({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        _event({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        _event({"type": "content_block_stop", "index": 0}),
        _event({"type": "message_delta", "delta": {"stop_reason": stop},
                "usage": {"output_tokens": 3}}),
        _event({"type": "message_stop"}),
    ]  # fmt: skip


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


def test_one_message_per_turn_with_our_final_delta() -> None:
    relay = EventRelay("claude", cost_before=0.05)
    events = []
    init = SystemMessage("init", {"type": "system", "subtype": "init", "model": "claude-x-1"})
    for message in [init, *_message("msg_1", "a"), *_message("msg_2", "b"), _result()]:
        events.extend(relay.feed(message))

    assert sum(isinstance(e, MessageStart) for e in events) == 1
    assert [e.index for e in events if isinstance(e, BlockStart)] == [0, 1]
    assert isinstance(events[-1], MessageStop)
    assert sum(isinstance(e, MessageStop) for e in events) == 1
    final = events[-2]
    assert isinstance(final, MessageDelta) and final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 6)
    # The CLI reports a running total per process: this turn's share is the difference.
    assert (final.usage.cache_read_tokens, final.usage.cost_usd) == (4, 0.2)
    assert Collector().feed_all(events).content == (TextBlock("a"), TextBlock("b"))
    assert BlockDelta(1, TextDelta("b")) in events
    assert relay.clean and relay.model == relay.cli_model == "claude-x-1"


@pytest.mark.parametrize("stop", ["max_tokens", "refusal"])
def test_an_upstream_stop_at_max_tokens_or_refusal_ends_the_message_there(stop: str) -> None:
    relay = EventRelay("claude")
    events = []
    for message in _message("msg_1", "cut", stop):
        events.extend(relay.feed(message))
    # What the CLI does next (its own "Output token limit hit" turn) never reaches the client.
    for message in [*_message("msg_2", "glued on"), _result(stop_reason="end_turn")]:
        events.extend(relay.feed(message))

    assert relay.done and relay.ended_early and not relay.clean
    assert Collector().feed_all(events).content == (TextBlock("cut"),)
    final = events[-2]
    assert isinstance(final, MessageDelta) and final.stop_reason == stop
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)  # that call's
    assert isinstance(events[-1], MessageStop)


def test_an_answer_that_was_not_streamed_is_refused() -> None:
    relay = EventRelay("claude")
    for message in _message("msg_1", "partial"):
        relay.feed(message)
    relay.feed(AssistantMessage(content=[SdkText("full")], model="m", message_id="msg_2"))
    with pytest.raises(ApiError) as info:
        relay.feed(_result(stop_reason="end_turn"))
    assert info.value.upstream


def test_usage_windows_keep_the_latest_report() -> None:
    now = 1_800_000_000.0
    windows = UsageWindows(clock=lambda: now)
    raw = {
        "status": "allowed_warning",
        "unifiedWindows": {
            "five_hour": {"utilization": 0.42, "resetsAt": now + 3600, "status": "allowed"},
            "seven_day": {"utilization": 0.91, "resetsAt": now + 86400, "status": "allowed"},
        },
    }
    info = RateLimitInfo("allowed_warning", int(now + 86400), "seven_day", 0.91, raw=raw)
    relay = EventRelay("claude")
    relay.feed(RateLimitEvent(info, "u", "s"))
    assert relay.rate_limit is not None
    windows.update(relay.rate_limit)

    assert windows.snapshot() == [
        {"window": "five_hour", "status": "allowed", "utilization": 0.42,
         "resets_at": now + 3600},
        {"window": "seven_day", "status": "allowed", "utilization": 0.91,
         "resets_at": now + 86400},
    ]  # fmt: skip
    assert windows.limited_until is None
    windows.update(RateLimitInfo("rejected", int(now + 600), "five_hour", 1.0))
    assert windows.limited_until == now + 600
    assert windows.snapshot()[0] == {
        "window": "five_hour", "status": "rejected", "utilization": 1.0, "resets_at": now + 600
    }  # fmt: skip
