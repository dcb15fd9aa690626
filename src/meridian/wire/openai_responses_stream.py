"""Responses streams from an upstream -> canonical events (the translated path). Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.

Canonical blocks, from the typed events:

- each ``output_text`` (or ``refusal``) content part of a ``message`` item -> a text block,
  opened by ``content_part.added`` and stopped by ``content_part.done``;
- a ``function_call`` item -> a tool-use block (``call_id`` as its id), its argument
  deltas as JSON deltas, stopped by ``output_item.done``;
- a ``reasoning`` item -> a thinking block: summary and reasoning-text deltas as thinking
  (summary parts after the first are separated by a blank line), and its final
  ``encrypted_content`` as the signature;
- items of built-in tools (``web_search_call``, ...) have no canonical form and are skipped.

A ``.done`` event whose text or arguments are longer than the deltas seen (some servers
send few or no deltas) contributes the missing rest. OpenAI streams one item at a time;
should a server interleave, the later block is held back, its deltas buffered, until the
open one stops, so the canonical stream still has one open block at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from meridian.errors import ApiError
from meridian.model import (
    Block,
    BlockDelta,
    BlockStart,
    BlockStop,
    Delta,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    RedactedThinkingBlock,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
)
from meridian.wire.openai_responses_common import failure, stop_reason_of, usage_from_json
from meridian.wire.openai_responses_items import reasoning_block
from meridian.wire.sse import SSEEvent


class _Slot:
    __slots__ = ("block", "index", "parts", "pending", "stopped")

    def __init__(self, block: Block) -> None:
        self.block = block
        self.index: int | None = None  # canonical index, once opened
        self.parts: list[str] = []  # what was streamed (text, arguments or thinking)
        self.pending: list[Delta] = []
        self.stopped = False


Key = tuple[int, ...]  # (output_index,) for an item, (output_index, content_index) for a part


class StreamDecoder:
    """Responses SSE events from an upstream -> canonical events."""

    def __init__(self, *, provider: str = "upstream") -> None:
        self._provider = provider
        self._started = False
        self._finished = False
        self._slots: dict[Key, _Slot] = {}
        self._live: Key | None = None
        self._queue: list[Key] = []
        self._blocks = 0
        self._tools = False
        self._refused = False

    def feed(self, event: SSEEvent) -> list[Event]:
        data = event.data.strip()
        if not data or data == "[DONE]" or self._finished:
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                f"{self._provider}: the stream carried invalid JSON", status=502
            ) from exc
        if not isinstance(payload, dict):
            raise ApiError(f"{self._provider}: the stream carried a non-object event", status=502)
        if "type" not in payload and event.event:
            payload["type"] = event.event
        return self.feed_json(payload)

    def feed_json(self, data: Mapping[str, Any]) -> list[Event]:
        if self._finished:
            return []
        out: list[Event] = []
        try:
            self._event(data, out)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ApiError(
                f"{self._provider}: upstream sent a malformed {data.get('type')} event", status=502
            ) from exc
        return out

    def close(self) -> list[Event]:
        if not self._finished:
            raise ApiError(
                f"{self._provider}: upstream stream ended before the response completed",
                status=502,
            )
        return []

    # -- events

    def _event(self, data: Mapping[str, Any], out: list[Event]) -> None:
        kind = data.get("type")
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            key = (data["output_index"], data["content_index"])
            self._start(key, TextBlock(""), out)  # if a server skipped content_part.added
            self._delta(key, TextDelta(data["delta"]), out)
        elif kind == "response.function_call_arguments.delta":
            # (Without its output_item.added a call has no name yet: its output_item.done
            # will bring the arguments whole.)
            self._delta((data["output_index"],), JsonDelta(data["delta"]), out)
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._start((data["output_index"],), ThinkingBlock("", ""), out)
            self._delta((data["output_index"],), ThinkingDelta(data["delta"]), out)
        elif kind == "response.reasoning_summary_part.added":
            slot = self._slots.get((data["output_index"],))
            if slot is not None and slot.parts:
                self._delta((data["output_index"],), ThinkingDelta("\n\n"), out)
        elif kind == "response.content_part.added":
            part = data["part"]
            if part.get("type") in ("output_text", "refusal"):
                key = (data["output_index"], data["content_index"])
                self._refused = self._refused or part["type"] == "refusal"
                self._start(key, TextBlock(""), out)
                self._catch_up(key, part.get("text") or part.get("refusal"), out)
        elif kind in ("response.output_text.done", "response.refusal.done"):
            text = data.get("text") if kind == "response.output_text.done" else data.get("refusal")
            self._catch_up((data["output_index"], data["content_index"]), text, out)
        elif kind == "response.content_part.done":
            key = (data["output_index"], data["content_index"])
            part = data["part"]
            self._catch_up(key, part.get("text") or part.get("refusal"), out)
            self._stop(key, out)
        elif kind == "response.function_call_arguments.done":
            self._catch_up((data["output_index"],), data.get("arguments"), out)
        elif kind == "response.output_item.added":
            self._item_added(data["output_index"], data["item"], out)
        elif kind == "response.output_item.done":
            self._item_done(data["output_index"], data["item"], out)
        elif kind in ("response.created", "response.in_progress", "response.queued"):
            self._begin(data["response"], out)
        elif kind in ("response.completed", "response.incomplete"):
            self._complete(data["response"], out)
        elif kind == "response.failed":
            response = data.get("response")
            error = response.get("error") if isinstance(response, Mapping) else None
            raise failure(error if isinstance(error, Mapping) else {}, provider=self._provider)
        elif kind == "error":
            raise failure(data, provider=self._provider)
        # Anything else (built-in tool progress, audio, newer events) has no canonical form.

    def _begin(self, response: Mapping[str, Any], out: list[Event]) -> None:
        if not self._started:
            self._started = True
            usage = usage_from_json(response.get("usage"))
            out.append(
                MessageStart(str(response.get("id") or ""), str(response.get("model") or ""), usage)
            )

    def _item_added(self, index: int, item: Mapping[str, Any], out: list[Event]) -> None:
        type_ = item.get("type")
        if type_ == "function_call":
            self._tools = True
            self._start((index,), ToolUseBlock(item["call_id"], item["name"], {}), out)
            self._catch_up((index,), item.get("arguments"), out)
        elif type_ == "reasoning":
            self._start((index,), ThinkingBlock("", ""), out)

    def _item_done(self, index: int, item: Mapping[str, Any], out: list[Event]) -> None:
        type_ = item.get("type")
        key = (index,)
        if type_ == "function_call":
            if key not in self._slots:
                self._item_added(index, item, out)
            self._catch_up(key, item.get("arguments"), out)
            self._stop(key, out)
        elif type_ == "reasoning":
            block = reasoning_block(item)
            if key not in self._slots:
                if isinstance(block, RedactedThinkingBlock):
                    self._start(key, block, out)
                    self._stop(key, out)
                    return
                self._start(key, ThinkingBlock("", ""), out)
            slot = self._slots[key]
            if isinstance(block, ThinkingBlock):
                if not slot.parts and block.thinking:
                    self._delta(key, ThinkingDelta(block.thinking), out)
                if block.signature:
                    self._delta(key, SignatureDelta(block.signature), out)
            self._stop(key, out)
        elif type_ == "message":
            content = item.get("content")
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if not isinstance(part, Mapping) or part.get("type") not in (
                    "output_text",
                    "refusal",
                ):
                    continue
                part_key = (index, j)
                if part_key not in self._slots:
                    self._refused = self._refused or part["type"] == "refusal"
                    self._start(part_key, TextBlock(""), out)
                self._catch_up(part_key, part.get("text") or part.get("refusal"), out)
                self._stop(part_key, out)

    def _complete(self, response: Mapping[str, Any], out: list[Event]) -> None:
        self._begin(response, out)
        if not self._slots:
            # A server that sends only the final object: its output is the answer.
            output = response.get("output")
            for i, item in enumerate(output if isinstance(output, list) else ()):
                if isinstance(item, Mapping):
                    self._item_done(i, item, out)
        for key in list(self._slots):
            self._stop(key, out)
        reason = stop_reason_of(
            response.get("status"),
            response.get("incomplete_details"),
            saw_tool_calls=self._tools,
            refused=self._refused,
        )
        out += [MessageDelta(reason, usage_from_json(response.get("usage"))), MessageStop()]
        self._finished = True

    # -- blocks: one open at a time

    def _start(self, key: Key, block: Block, out: list[Event]) -> None:
        if key in self._slots:
            return
        if not self._started:
            self._begin({}, out)
        self._slots[key] = _Slot(block)
        if self._live is None:
            self._open(key, out)
        else:
            self._queue.append(key)

    def _open(self, key: Key, out: list[Event]) -> None:
        slot = self._slots[key]
        slot.index, self._live = self._blocks, key
        self._blocks += 1
        out.append(BlockStart(slot.index, slot.block))
        out.extend(BlockDelta(slot.index, d) for d in slot.pending)
        slot.pending.clear()

    def _delta(self, key: Key, delta: Delta, out: list[Event]) -> None:
        slot = self._slots.get(key)
        if slot is None or slot.stopped:
            return
        if isinstance(delta, TextDelta | JsonDelta | ThinkingDelta):
            piece = (
                delta.text
                if isinstance(delta, TextDelta)
                else (delta.partial_json if isinstance(delta, JsonDelta) else delta.thinking)
            )
            if not piece:
                return
            slot.parts.append(piece)
        if slot.index is None:
            slot.pending.append(delta)
        else:
            out.append(BlockDelta(slot.index, delta))

    def _catch_up(self, key: Key, full: Any, out: list[Event]) -> None:
        slot = self._slots.get(key)
        if slot is None or not isinstance(full, str):
            return
        seen = "".join(slot.parts)
        if len(full) > len(seen) and full.startswith(seen):
            rest = full[len(seen) :]
            self._delta(
                key,
                JsonDelta(rest) if isinstance(slot.block, ToolUseBlock) else TextDelta(rest),
                out,
            )

    def _stop(self, key: Key, out: list[Event]) -> None:
        slot = self._slots.get(key)
        if slot is None or slot.stopped:
            return
        slot.stopped = True
        if self._live != key:
            return  # held back: stopped when its turn comes
        assert slot.index is not None
        out.append(BlockStop(slot.index))
        self._live = None
        while self._queue and self._live is None:
            nxt = self._queue.pop(0)
            self._open(nxt, out)
            slot = self._slots[nxt]
            if slot.stopped:
                assert slot.index is not None
                out.append(BlockStop(slot.index))
                self._live = None
