"""A request as one CLI run: `build_spec` turns the canonical `Request` into a `RunSpec`.

Pure: no process, no file. The spec holds what the CLI must be started with (model, system
prompt, tools, output limits: the *options*, fixed for a process's life) and the
conversation: the earlier turns (``history``, written as a transcript the CLI resumes) and
the new user turn this run answers (``turn``).

A new turn of ``tool_result``s answers the previous turn's calls. The CLI cannot take it as
a prompt (it would answer its own "[Tool call interrupted]" for calls it has no record of),
so it goes into the transcript too and the CLI re-runs the interrupted turn (``resumes``);
on a live process that ended at those calls (deferred) it is sent as the next message.
Either way the upstream gets the client's ``tool_result`` blocks as sent.

What the request asks that the CLI cannot take as a flag rides in ``extra_body`` (merged
into every upstream request body through ``CLAUDE_CODE_EXTRA_BODY``): ``tool_choice``,
``temperature``, ``top_p``, ``top_k``, ``stop_sequences``. ``tool_choice: none`` leaves the
tools out instead (unless the history holds tool calls: the API then wants them declared).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from meridian.errors import InvalidRequest
from meridian.model import Block, Message, Request, instructions
from meridian.wire.anthropic_render import render_messages

Turn = Mapping[str, Any]  # an Anthropic message: {"role", "content": [blocks]}

# OpenAI's reasoning_effort -> the CLI's --effort.
_EFFORT = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One CLI run, in Anthropic JSON shapes."""

    model: str
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    thinking_budget: int | None = None  # None: thinking off; 0: adaptive
    effort: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Turn, ...] = ()
    turn: Turn | None = None
    # The exact model id the CLI resolves ``model`` to, when known: transcripts must record
    # it, or the CLI drops the history's thinking blocks (their signatures are per model).
    model_id: str | None = None

    @property
    def resumes(self) -> bool:
        """The new turn answers tool calls: it belongs in the transcript, not a prompt."""
        return self.turn is not None and any(
            b.get("type") == "tool_result" for b in self.turn["content"]
        )

    @property
    def transcript_turns(self) -> tuple[Turn, ...]:
        if self.resumes and self.turn is not None:
            return (*self.history, self.turn)
        return self.history

    def options_key(self) -> bytes:
        """What a process is started with and cannot change afterwards."""
        return _digest(
            {
                "model": self.model,
                "system": self.system,
                "tools": [[t.name, t.description, t.input_schema] for t in self.tools],
                "max_tokens": self.max_tokens,
                "thinking": self.thinking_budget,
                "effort": self.effort,
                "extra": self.extra_body,
            }
        )


def conversation_key(caller: str, spec: RunSpec, turns: Sequence[Turn]) -> bytes:
    """Names a live process's state: the caller, its options and the exact turns so far.
    A request continues that process when its earlier turns hash to the same key."""
    return hashlib.blake2b(
        caller.encode() + b"\0" + spec.options_key() + _digest([_normal(t) for t in turns]),
        digest_size=20,
    ).digest()


def build_spec(request: Request) -> RunSpec:
    # One system prompt: instructions given mid-conversation join it (Claude Code sends
    # them inside `messages` for a model name it does not know).
    system, conversation = instructions(request.system, request.messages)
    turns = [_clean(t) for t in render_messages(conversation)]
    if not turns or turns[-1]["role"] != "user":
        raise InvalidRequest(
            "the last message must be a user turn: the Claude subscription provider cannot "
            "continue a partial assistant answer (prefill)",
            param="messages",
        )
    _check_tool_results(turns)
    choice = request.tool_choice
    tools = request.tools
    if choice is not None and choice.type == "none" and not _has_tool_blocks(turns):
        tools = ()  # nothing to offer; with tool history the API wants them declared
    spec = RunSpec(
        model=request.model,
        system="\n\n".join(b.text for b in system if b.text),
        tools=tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in tools),
        max_tokens=request.max_tokens,
        extra_body=_extra_body(request, bool(tools)),
        history=tuple(turns[:-1]),
        turn=turns[-1],
    )
    thinking = request.thinking
    if thinking is not None and thinking.enabled:
        spec = replace(
            spec,
            thinking_budget=thinking.budget_tokens or 0,
            effort=_EFFORT.get(thinking.effort or ""),
        )
    return spec


def _has_tool_blocks(turns: Sequence[Turn]) -> bool:
    return any(b["type"] in ("tool_use", "tool_result") for t in turns for b in t["content"])


def _extra_body(request: Request, tools: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    choice = request.tool_choice
    if tools and choice is not None and (choice.type != "auto" or choice.disable_parallel_tool_use):
        out["tool_choice"] = {"type": choice.type}
        if choice.type == "tool":
            out["tool_choice"]["name"] = choice.name
        if choice.disable_parallel_tool_use:
            out["tool_choice"]["disable_parallel_tool_use"] = True
    sampling = {"temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k}
    out.update((k, v) for k, v in sampling.items() if v is not None)
    if request.stop:
        out["stop_sequences"] = list(request.stop)
    return out


def answer_turn(blocks: Sequence[Block]) -> Turn | None:
    """The assistant turn an answer becomes in the conversation (as the client sends it
    back), or None when nothing of it would be sent."""
    turns = [_clean(t) for t in render_messages([Message("assistant", tuple(blocks))])]
    return turns[0] if turns else None


def _check_tool_results(turns: Sequence[Turn]) -> None:
    """Tool calls and results pair up turn by turn, as the API requires. The CLI would
    otherwise drop a client's result it cannot place and send an invented one upstream
    ("[Tool call interrupted…]"), for a result that is missing too."""
    for i, turn in enumerate(turns):
        if turn["role"] != "user":
            continue
        previous = turns[i - 1] if i else None
        calls = [
            b["id"]
            for b in (previous["content"] if previous and previous["role"] == "assistant" else ())
            if b["type"] == "tool_use"
        ]
        answered = set()
        for block in turn["content"]:
            if block["type"] == "tool_result":
                if block["tool_use_id"] not in calls:
                    raise InvalidRequest(
                        f"messages.{i}: tool_result for tool_use_id {block['tool_use_id']!r}, "
                        "which the previous assistant turn does not contain",
                        param="messages",
                    )
                answered.add(block["tool_use_id"])
        missing = [c for c in calls if c not in answered]
        if missing:
            raise InvalidRequest(
                f"messages.{i}: no tool_result for tool_use_id {', '.join(map(repr, missing))} "
                "of the previous assistant turn",
                param="messages",
            )


def _clean(turn: dict[str, Any]) -> dict[str, Any]:
    """The CLI places its own cache breakpoints (a client's would exceed the API's four), and
    drops everything but text from an error result: its images and documents are moved
    beside the results (text documents become text), so that they still arrive."""
    content: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    for original in turn["content"]:
        block = _uncached(original)
        if block["type"] == "tool_result" and block.get("is_error"):
            block, media = _error_result(block)
            moved.extend(media)
        content.append(block)
    return {"role": turn["role"], "content": content + moved}


def _error_result(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parts = block.get("content")
    if not isinstance(parts, list):
        return block, []
    kept: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    for part in parts:
        source = part.get("source") or {}
        if part["type"] == "text":
            kept.append(part)
        elif part["type"] == "document" and source.get("type") == "text":
            title = f"{part['title']}\n\n" if part.get("title") else ""
            kept.append({"type": "text", "text": title + str(source.get("data", ""))})
        else:
            moved.append(part)
    return {**block, "content": kept}, moved


def _uncached(block: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):
        out["content"] = [_uncached(b) for b in out["content"]]
    return out


def _normal(turn: Turn) -> Any:
    """A turn as a client sends it back: an OpenAI client joins an answer's text blocks."""
    if turn["role"] != "assistant":
        return [turn["role"], turn["content"]]
    blocks: list[Any] = []
    for block in turn["content"]:
        if block["type"] != "text":
            blocks.append(block)
        elif blocks and blocks[-1]["type"] == "text":
            blocks[-1] = {"type": "text", "text": blocks[-1]["text"] + block["text"]}
        elif block["text"]:
            blocks.append({"type": "text", "text": block["text"]})
    return ["assistant", blocks]


def _digest(value: Any) -> bytes:
    data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=20).digest()
