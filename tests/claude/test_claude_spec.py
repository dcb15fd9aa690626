"""Request -> RunSpec -> argv, environment, transcript, conversation keys: pure, no CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import InvalidRequest
from meridian.model import (
    DocumentBlock,
    ImageBlock,
    Message,
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.providers.claude.command import run_argv, run_env, transcript
from meridian.providers.claude.spec import (
    RunSpec,
    answer_turn,
    build_spec,
    conversation_key,
)

CACHE = {"type": "ephemeral"}
PNG = "iVBORw0KGgo="
ASK = Message("user", (TextBlock("go"),))
CALLS = Message(
    "assistant", (ToolUseBlock("t1", "on", {"area": "a"}), ToolUseBlock("t2", "off", {}))
)


def req(*messages: Message, **fields: Any) -> Request:
    return Request(model="claude-sonnet-4-6", messages=messages, **fields)


def test_earlier_turns_become_history_and_the_last_the_turn() -> None:
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
    assert spec.turn == {
        "role": "user",
        "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
    }
    assert (spec.system, spec.max_tokens, spec.resumes) == ("one\n\ntwo", 100, False)
    assert spec.thinking_budget is None and spec.extra_body == {}


@pytest.mark.parametrize(
    ("messages", "wanted"),
    [
        ((ASK, Message("assistant", (TextBlock("b"),))), "last message must be a user turn"),
        # A result for a call the history does not hold: a 400 naming the id, not a CLI that
        # drops the client's result and sends an invented one upstream.
        (
            (ASK, CALLS, Message("user", (ToolResultBlock("t9", (TextBlock("x"),)),))),
            "messages.2: tool_result for tool_use_id 't9'",
        ),
        ((Message("user", (ToolResultBlock("t1"),)),), "tool_use_id 't1'"),
        # A call left unanswered: the CLI would answer it itself, "[Tool call interrupted…]".
        (
            (ASK, CALLS, Message("user", (ToolResultBlock("t1", (TextBlock("x"),)),))),
            "messages.2: no tool_result for tool_use_id 't2'",
        ),
        ((ASK, CALLS, Message("user", (TextBlock("never mind"),))), "'t1', 't2'"),
    ],
    ids=["prefill", "unknown-id", "no-call-at-all", "one-unanswered", "none-answered"],
)
def test_requests_the_cli_cannot_take_faithfully_are_400(
    messages: tuple[Message, ...], wanted: str
) -> None:
    with pytest.raises(InvalidRequest, match=wanted) as info:
        build_spec(req(*messages))
    assert info.value.status == 400 and info.value.param == "messages"


def test_tool_results_go_into_the_transcript_verbatim() -> None:
    results = Message(
        "user",
        (
            ToolResultBlock("t1", (TextBlock("a on", cache_control=CACHE),)),
            ToolResultBlock(
                "t2", (DocumentBlock({"type": "text", "media_type": "text/plain", "data": "D"}),)
            ),
            TextBlock("(note)"),
        ),
    )
    spec = build_spec(req(ASK, CALLS, results, tools=(Tool("on"), Tool("off"))))
    assert spec.resumes and spec.turn is not None
    assert spec.transcript_turns == (*spec.history, spec.turn)
    assert spec.turn["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a on"}]},
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                "data": "D"}},
            ],
        },
        {"type": "text", "text": "(note)"},
    ]  # fmt: skip


def test_an_error_result_keeps_its_images_and_text_documents() -> None:
    """The CLI keeps only the text of an error result: text documents become text, images
    and other documents ride beside the results."""
    error = ToolResultBlock(
        "t2",
        (
            TextBlock("failed"),
            DocumentBlock({"type": "text", "media_type": "text/plain", "data": "log"}, "tail"),
            ImageBlock("image/png", PNG),
        ),
        is_error=True,
    )
    turn = build_spec(req(ASK, CALLS, Message("user", (ToolResultBlock("t1"), error)))).turn
    assert turn is not None
    assert turn["content"] == [
        {"type": "tool_result", "tool_use_id": "t1"},
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "is_error": True,
            "content": [
                {"type": "text", "text": "failed"},
                {"type": "text", "text": "tail\n\nlog"},
            ],
        },
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]


@pytest.mark.parametrize(
    ("fields", "tools", "extra"),
    [
        ({}, ["on"], {}),
        ({"tool_choice": ToolChoice("auto")}, ["on"], {}),
        ({"tool_choice": ToolChoice("none")}, [], {}),  # not offered at all
        ({"tool_choice": ToolChoice("any")}, ["on"], {"tool_choice": {"type": "any"}}),
        (
            {"tool_choice": ToolChoice("tool", "on", disable_parallel_tool_use=True)},
            ["on"],
            {"tool_choice": {"type": "tool", "name": "on", "disable_parallel_tool_use": True}},
        ),
        (
            {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop": ("END",)},
            ["on"],
            {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"]},
        ),
    ],
    ids=["default", "auto", "none", "any", "named", "sampling"],
)
def test_what_the_cli_has_no_flag_for_rides_in_the_extra_body(
    fields: dict[str, Any], tools: list[str], extra: dict[str, Any]
) -> None:
    spec = build_spec(req(ASK, tools=(Tool("on"),), **fields))
    assert [t.name for t in spec.tools] == tools
    assert spec.extra_body == extra
    env = run_env(_config(), spec, Path("/h"), Path("/c"), ambient={})
    assert json.loads(env.get("CLAUDE_CODE_EXTRA_BODY", "{}")) == extra


def test_tool_choice_none_with_tool_history_keeps_the_tools_declared() -> None:
    results = Message("user", (ToolResultBlock("t1"), ToolResultBlock("t2")))
    spec = build_spec(
        req(ASK, CALLS, results, tools=(Tool("on"), Tool("off")), tool_choice=ToolChoice("none"))
    )
    assert [t.name for t in spec.tools] == ["on", "off"]
    assert spec.extra_body == {"tool_choice": {"type": "none"}}


@pytest.mark.parametrize(
    ("thinking", "budget", "effort", "argv"),
    [
        (None, None, None, []),
        (Thinking(budget_tokens=2048, effort="minimal"), 2048, "low",
         ["--max-thinking-tokens", "2048", "--effort", "low"]),
        (Thinking(), 0, None, ["--thinking", "adaptive"]),
        (Thinking(enabled=False), None, None, []),
    ],
    ids=["off", "budget", "adaptive", "disabled"],
)  # fmt: skip
def test_thinking_and_effort_map_to_cli_options(
    thinking: Thinking | None, budget: int | None, effort: str | None, argv: list[str]
) -> None:
    spec = build_spec(req(ASK, thinking=thinking))
    assert (spec.thinking_budget, spec.effort) == (budget, effort)
    args = run_argv("claude", spec, None, None)
    assert args[args.index(spec.model) + 1 :] == argv
    env = run_env(_config(), spec, Path("/h"), Path("/c"), ambient={})
    assert ("CLAUDE_CODE_DISABLE_THINKING" in env) == (budget is None)


def test_environment_of_a_run() -> None:
    ask = build_spec(req(ASK, max_tokens=10))
    env = run_env(_config(), ask, Path("/h"), Path("/c"), ambient={"TMPDIR": "/var/tmp"})
    # Every temporary file of the CLI dies with its scratch home.
    assert env["TMPDIR"] == "/h/tmp" and env["HOME"] == "/h" and env["PWD"] == "/c"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "10"
    for name in (
        "CLAUDE_CODE_DISABLE_REFUSAL_RETRY",
        "CLAUDE_CODE_DISABLE_REFUSAL_FALLBACK",
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK",
    ):
        assert env[name] == "1"
    assert env["ENABLE_TOOL_SEARCH"] == "false"  # no DeferredToolPlaceholder
    assert env["CLAUDE_CODE_DISABLE_ATTACHMENTS"] == "1"
    assert "CLAUDE_CODE_RESUME_INTERRUPTED_TURN" not in env
    results = Message("user", (ToolResultBlock("t1"), ToolResultBlock("t2")))
    resume = run_env(_config(), build_spec(req(ASK, CALLS, results)), Path("/h"), Path("/c"))
    assert resume["CLAUDE_CODE_RESUME_INTERRUPTED_TURN"] == "1"


def test_transcript_is_a_chain_that_records_the_exact_model(tmp_path: Path) -> None:
    history = (
        Message("user", (TextBlock("go"),)),
        Message("assistant", (ThinkingBlock("hm", "SIG"), ToolUseBlock("t1", "on", {}))),
    )
    results = Message("user", (ToolResultBlock("t1", (TextBlock("ok"),)),))
    spec = build_spec(Request(model="sonnet", messages=(*history, results)))
    entries = transcript(RunSpec(**{**_fields(spec), "model_id": "claude-x-9"}), "sid", tmp_path)

    assert [e["type"] for e in entries] == ["user", "assistant", "user"]
    assert entries[0]["parentUuid"] is None
    assert [e["parentUuid"] for e in entries[1:]] == [e["uuid"] for e in entries[:-1]]
    assert {e["sessionId"] for e in entries} == {"sid"}
    assert entries[1]["message"]["stop_reason"] == "tool_use"
    # A shorthand recorded as the model: the CLI would drop the thinking blocks.
    assert entries[1]["message"]["model"] == "claude-x-9"
    assert entries[1]["message"]["content"][0]["type"] == "thinking"
    assert entries[2]["message"]["content"][0]["tool_use_id"] == "t1"
    plain = transcript(spec, "sid", tmp_path)
    assert plain[1]["message"]["model"] == "sonnet"  # nothing learned yet


def test_conversation_keys_match_the_answer_as_a_client_sends_it_back() -> None:
    first = build_spec(req(ASK, system=(TextBlock("s"),), tools=(Tool("on"),)))
    answer = answer_turn([TextBlock("On "), TextBlock("it."), ToolUseBlock("t1", "on", {})])
    assert answer is not None and first.turn is not None
    kept = conversation_key("key:1", first, (first.turn, answer))

    # An OpenAI client joins the text blocks; the next request's earlier turns are the same.
    echo = Message("assistant", (TextBlock("On it."), ToolUseBlock("t1", "on", {})))
    results = Message("user", (ToolResultBlock("t1", (TextBlock("ok"),)),))
    follow = build_spec(req(ASK, echo, results, system=(TextBlock("s"),), tools=(Tool("on"),)))
    assert conversation_key("key:1", follow, follow.history) == kept

    assert conversation_key("key:2", follow, follow.history) != kept  # another caller
    other = build_spec(req(ASK, echo, results, system=(TextBlock("t"),), tools=(Tool("on"),)))
    assert conversation_key("key:1", other, other.history) != kept  # another system prompt
    edited = Message("assistant", (TextBlock("On it!"), ToolUseBlock("t1", "on", {})))
    changed = build_spec(req(ASK, edited, results, system=(TextBlock("s"),), tools=(Tool("on"),)))
    assert conversation_key("key:1", changed, changed.history) != kept  # another history


def _config() -> ClaudeCodeProviderConfig:
    return ClaudeCodeProviderConfig(type="claude-code", config_dir=Path("/srv/claude"))


def _fields(spec: RunSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in RunSpec.__dataclass_fields__}
