"""OpenAI ``chat.completion.chunk`` streams from an upstream -> canonical events. Sans-IO.

Public names are re-exported from `meridian.wire.openai_chat`; import them from there.

Decoding has one hard part: OpenAI streams keep several things open at once (reasoning,
text, and tool calls keyed by ``index``, whose argument pieces may interleave), while the
canonical stream, like Anthropic's, has one open block at a time. The decoder keeps one
*live* block and forwards its deltas as they come; a delta for anything else:

- closes the live block first if it is text or thinking (a later piece of the same kind
  opens a new block; text split in two blocks reads the same once joined), or if it is a
  tool call whose arguments already form a complete JSON object (nothing valid can follow);
- otherwise is buffered, because a tool call cannot be split: the buffered piece's block
  is opened (and its buffer flushed) as soon as it can be, at the latest at
  ``finish_reason``.

Sequential tool calls (what OpenAI sends) therefore stream live; interleaved ones arrive
whole, a little later, and correct.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from meridian.errors import ApiError, MeridianError
from meridian.model import (
    BlockDelta,
    BlockStart,
    BlockStop,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from meridian.wire.openai_common import (
    dumps,
    error_from_payload,
    stop_reason,
    usage_from_body,
)
from meridian.wire.sse import SSEEvent


def completion_id(id: str) -> str:
    if not id:
        return f"chatcmpl-{uuid.uuid4().hex[:24]}"
    return id if id.startswith("chatcmpl-") else f"chatcmpl-{id}"


def _json(data: str, provider: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"{provider}: the stream carried invalid JSON", status=502) from exc


# ---------------------------------------------------------------------------- decoder


class _Slot:
    """Something the upstream is streaming: reasoning, text or one tool call."""

    __slots__ = ("checked", "complete", "id", "index", "kind", "name", "parts", "state")

    def __init__(self, kind: Literal["text", "thinking", "tool"]) -> None:
        self.kind = kind
        self.id = ""
        self.name = ""
        self.parts: list[str] = []
        self.state: Literal["pending", "live", "closed"] = "pending"
        self.index = -1
        self.checked = 0
        self.complete = False

    def arguments_complete(self) -> bool:
        """Do the tool call's arguments so far form a whole JSON object?"""
        if self.complete or self.checked == len(self.parts):
            return self.complete
        self.checked = len(self.parts)
        try:
            self.complete = isinstance(orjson.loads("".join(self.parts)), dict)
        except orjson.JSONDecodeError:
            self.complete = False
        return self.complete


class StreamDecoder:
    """OpenAI chat.completion.chunk data -> canonical events (for OpenAI-compatible upstreams)."""

    def __init__(self, *, provider: str = "upstream") -> None:
        self._provider = provider
        self._started = False
        self._done = False
        self._finish: str | None = None
        self._usage = Usage()
        self._blocks = 0
        self._live: _Slot | None = None
        # Open-able slots in order of first appearance: "text", "thinking", tool indexes.
        self._slots: dict[str | int, _Slot] = {}
        self._call_ids: dict[str, int] = {}
        self._last_call = 0
        self._saw_tools = False

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data.strip()
        if not data or self._done:
            return []
        if data == "[DONE]":
            return self._end()
        if event.event == "error" and not data.startswith("{"):
            # Some servers (vLLM behind proxies) send `event: error` with plain text.
            raise ApiError(f"{self._provider}: {data[:500]}", status=502)
        chunk = _json(data, self._provider)
        if not isinstance(chunk, Mapping):
            raise ApiError(f"{self._provider}: the stream carried a non-object chunk", status=502)
        return self.feed_json(chunk)

    def feed_json(self, chunk: Mapping[str, Any]) -> list[Event]:
        if self._done:
            return []
        if chunk.get("error"):
            raise error_from_payload(chunk, provider=self._provider)
        out: list[Event] = []
        if not self._started:
            self._started = True
            out.append(MessageStart(str(chunk.get("id") or ""), str(chunk.get("model") or "")))
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = usage_from_body(chunk)  # cumulative: the latest report wins
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue  # meridian asks for one choice; ignore any others
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                self._delta(delta, out)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self._finish = reason
                self._close_all(out)
        return out

    def close(self) -> list[Event]:
        """At upstream EOF. Some servers (older Ollama) end after ``finish_reason`` without
        ``[DONE]``: that still counts as finished. Anything else was cut short."""
        if self._done:
            return []
        if self._finish is None:
            raise ApiError(
                f"{self._provider}: upstream stream ended before it finished", status=502
            )
        return self._end()

    # -- internals

    def _end(self) -> list[Event]:
        out: list[Event] = []
        if not self._started:
            raise ApiError(f"{self._provider}: upstream stream ended before it started", status=502)
        self._close_all(out)
        # [DONE] without a finish_reason is still an explicit end: the answer is complete.
        reason = stop_reason(self._finish or "stop", saw_tool_calls=self._saw_tools)
        out += [MessageDelta(reason, self._usage), MessageStop()]
        self._done = True
        return out

    def _delta(self, delta: Mapping[str, Any], out: list[Event]) -> None:
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thinking, str) and thinking:
            self._piece("thinking", thinking, out)
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self._piece("text", text, out)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping):
                self._tool_piece(call, out)

    def _piece(self, key: Literal["text", "thinking"], text: str, out: list[Event]) -> None:
        live = self._live
        if live is not None and live.kind == key:
            out.append(
                BlockDelta(live.index, TextDelta(text) if key == "text" else ThinkingDelta(text))
            )
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key)
        slot.parts.append(text)
        if live is None or live.kind != "tool" or live.arguments_complete():
            self._close_live(out)
            self._open(slot, out)

    def _tool_piece(self, call: Mapping[str, Any], out: list[Event]) -> None:
        index, call_id = call.get("index"), call.get("id")
        if not isinstance(index, int) or isinstance(index, bool):
            # Some servers omit `index`: a new id is a new call, else it continues the last.
            known = self._call_ids.get(call_id) if isinstance(call_id, str) else None
            if known is not None:
                index = known
            elif isinstance(call_id, str) and call_id:
                index = 1 + max((k for k in self._slots if isinstance(k, int)), default=-1)
            else:
                index = self._last_call
        self._last_call = index
        slot = self._slots.get(index)
        if slot is None:
            slot = self._slots[index] = _Slot("tool")
            self._saw_tools = True
        if isinstance(call_id, str) and call_id and not slot.id:
            slot.id = call_id
            self._call_ids[call_id] = index
        fn = call.get("function")
        fn = fn if isinstance(fn, Mapping) else {}
        name, args = fn.get("name"), fn.get("arguments")
        if isinstance(name, str) and name and not slot.name:
            slot.name = name  # some servers repeat the name on every delta: never concatenate
        piece = args if isinstance(args, str) else (dumps(args).decode() if args else "")
        if slot.state == "closed":
            if piece.strip():
                raise ApiError(
                    f"{self._provider}: tool call {index} got arguments after they were complete",
                    status=502,
                )
            return
        if piece:
            slot.parts.append(piece)
            if slot.state == "live":
                out.append(BlockDelta(slot.index, JsonDelta(piece)))
                return
        live = self._live
        if (
            slot.state == "pending"
            and slot.name
            and (live is None or live.kind != "tool" or live.arguments_complete())
        ):
            self._close_live(out)
            self._open(slot, out)

    def _open(self, slot: _Slot, out: list[Event]) -> None:
        slot.index, slot.state = self._blocks, "live"
        self._blocks += 1
        self._live = slot
        buffered = "".join(slot.parts)
        if slot.kind == "tool":
            slot.id = slot.id or f"call_{uuid.uuid4().hex[:24]}"
            out.append(BlockStart(slot.index, ToolUseBlock(slot.id, slot.name, {})))
            if buffered:
                out.append(BlockDelta(slot.index, JsonDelta(buffered)))
            return
        block = TextBlock("") if slot.kind == "text" else ThinkingBlock("", "")
        out.append(BlockStart(slot.index, block))
        out.append(
            BlockDelta(
                slot.index, TextDelta(buffered) if slot.kind == "text" else ThinkingDelta(buffered)
            )
        )

    def _close_live(self, out: list[Event]) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        out.append(BlockStop(live.index))
        live.state = "closed"
        if live.kind != "tool":
            # A later piece of text or reasoning starts a new block.
            del self._slots[live.kind]

    def _close_all(self, out: list[Event]) -> None:
        self._close_live(out)
        for slot in [s for s in self._slots.values() if s.state == "pending"]:
            self._open(slot, out)
            self._close_live(out)


# ---------------------------------------------------------------------------- sniffer


class UsageSniffer:
    """For the pass-through relay: watches upstream chunks without changing them."""

    def __init__(self, *, provider: str = "upstream") -> None:
        self._provider = provider
        self.usage = Usage()
        self.finished = False  # [DONE] or a finish_reason seen
        self.error: MeridianError | None = None
        self.first_token = False  # a delta with content, reasoning or a tool call seen
        self.started = False  # any chunk seen: the relay commits at the first one
        self.produced_chars = 0  # content the deltas carried so far, roughly

    def feed(self, event: SSEEvent) -> None:
        data = event.data
        self.started = True
        if data.startswith("[DONE]"):
            self.finished = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not ours to judge: the relay forwards it as it came
        if not isinstance(chunk, dict):
            return
        if chunk.get("error"):
            self.error = error_from_payload(chunk, provider=self._provider)
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_body(chunk)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self.produced_chars += _delta_chars(delta)
            if (
                not self.first_token
                and isinstance(delta, dict)
                and any(
                    delta.get(k)
                    for k in ("content", "reasoning_content", "reasoning", "tool_calls", "refusal")
                )
            ):
                self.first_token = True
            if choice.get("finish_reason"):
                self.finished = True


def _delta_chars(delta: dict[str, Any]) -> int:
    n = 0
    for key in ("content", "reasoning_content", "reasoning", "refusal"):
        value = delta.get(key)
        if isinstance(value, str):
            n += len(value)
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            n += len(function.get("arguments") or "") + len(function.get("name") or "")
    return n
