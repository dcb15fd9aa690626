"""Anthropic Messages streams <-> canonical events. No I/O.

`StreamDecoder` reads an upstream's named SSE events (or the Claude Agent SDK's raw event
dicts); `StreamEncoder` writes the bytes an Anthropic SDK client expects; `UsageSniffer`
watches a relayed stream for usage without touching it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from meridian.errors import ApiError, MeridianError
from meridian.model import (
    Block,
    BlockDelta,
    BlockStart,
    BlockStop,
    CitationDelta,
    Delta,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    RedactedThinkingBlock,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from meridian.wire.anthropic_render import render_block
from meridian.wire.anthropic_response import (
    block_from_json,
    error_from_json,
    message_id,
    render_error,
    stop_reason,
    usage_from_json,
    usage_json,
)
from meridian.wire.sse import SSEEvent, encode


def _default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_default)


def _malformed(kind: object) -> ApiError:
    return ApiError(f"upstream sent a malformed {kind or 'SSE'} event", status=502)


def _loads(event: SSEEvent) -> dict[str, Any]:
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise _malformed(event.event) from exc
    if not isinstance(data, dict):
        raise _malformed(event.event)
    return data


class StreamDecoder:
    """Anthropic SSE events from an upstream -> canonical events."""

    def __init__(self) -> None:
        self._finished = False
        # Indexes of blocks the canonical model has no type for (server tools): their
        # start, deltas and stop are dropped together.
        self._skipped: set[int] = set()

    def feed(self, event: SSEEvent) -> list[Event]:
        if not event.data.strip():
            return [Ping()] if event.event == "ping" else []
        data = _loads(event)
        if event.event == "error":
            raise error_from_json(data.get("error", data))
        if "type" not in data and event.event:
            data["type"] = event.event
        return self.feed_json(data)

    def feed_json(self, data: Mapping[str, Any]) -> list[Event]:
        """The same from an already-decoded event dict (e.g. the Claude Agent SDK's)."""
        try:
            return self._event(data)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _malformed(data.get("type")) from exc

    def _event(self, data: Mapping[str, Any]) -> list[Event]:
        kind = data.get("type")
        if kind == "content_block_delta":
            index = data["index"]
            if index in self._skipped:
                return []
            piece = _delta(data["delta"])
            return [] if piece is None else [BlockDelta(index, piece)]
        if kind == "content_block_start":
            index = data["index"]
            block = block_from_json(data["content_block"])
            if block is None:
                self._skipped.add(index)
                return []
            return [BlockStart(index, block)]
        if kind == "content_block_stop":
            index = data["index"]
            return [] if index in self._skipped else [BlockStop(index)]
        if kind == "message_start":
            msg = data["message"]
            return [MessageStart(msg["id"], msg["model"], usage_from_json(msg.get("usage")))]
        if kind == "message_delta":
            delta = data.get("delta") or {}
            return [
                MessageDelta(
                    stop_reason(delta.get("stop_reason")),
                    usage_from_json(data.get("usage")),
                    delta.get("stop_sequence"),
                )
            ]
        if kind == "message_stop":
            self._finished = True
            return [MessageStop()]
        if kind == "ping":
            return [Ping()]
        if kind == "error":
            raise error_from_json(data.get("error"))
        return []  # a newer event type: ignored, for forward compatibility

    def close(self) -> list[Event]:
        if not self._finished:
            raise ApiError("upstream stream ended before message_stop", status=502)
        return []


def _delta(delta: Mapping[str, Any]) -> Delta | None:
    kind = delta["type"]
    if kind == "text_delta":
        return TextDelta(delta["text"])
    if kind == "input_json_delta":
        return JsonDelta(delta["partial_json"])
    if kind == "thinking_delta":
        return ThinkingDelta(delta["thinking"])
    if kind == "signature_delta":
        return SignatureDelta(delta["signature"])
    if kind == "citations_delta":
        return CitationDelta(delta["citation"])
    return None


class StreamEncoder:
    """Canonical events -> ``event: <type>\\ndata: <json>\\n\\n`` for an Anthropic client.

    Output block indexes are contiguous from 0 in emission order, and only one block is open
    at a time. When the canonical stream interleaves blocks (an OpenAI upstream streaming
    two tool calls at once), the first block stays live and a later one is held back, its
    deltas buffered, until the open block stops (or the message ends); it is then emitted
    whole. Nothing is split or duplicated: a reopened tool_use would repeat its call id, and
    a thinking block carries one signature. Signature pieces are joined and sent as exactly
    one ``signature_delta`` just before the block's ``content_block_stop``.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._usage = Usage()
        self._next = 0  # next output index
        self._open: int | None = None  # canonical index of the block open on the wire
        self._out = 0  # its output index
        self._queue: list[int] = []  # canonical indexes held back, in start order
        self._held: dict[int, tuple[Block, list[Delta]]] = {}
        self._held_stopped: set[int] = set()
        self._signature: list[str] | None = None

    def feed(self, event: Event) -> bytes:
        if isinstance(event, BlockDelta):
            if event.index == self._open:
                return self._delta(event.delta)
            if event.index in self._held:
                self._held[event.index][1].append(event.delta)
            return b""
        if isinstance(event, BlockStart):
            if self._open is None and not self._queue:
                return self._start(event.index, event.block)
            self._queue.append(event.index)
            self._held[event.index] = (event.block, [])
            return b""
        if isinstance(event, BlockStop):
            if event.index == self._open:
                return self._stop() + self._drain()
            if event.index in self._held:
                self._held_stopped.add(event.index)
            return b""
        if isinstance(event, MessageStart):
            self._usage = self._usage.merge(event.usage)
            message: dict[str, Any] = {
                "id": message_id(event.id),
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_json(self._usage),
            }
            return encode("message_start", _dumps({"type": "message_start", "message": message}))
        if isinstance(event, MessageDelta):
            self._usage = self._usage.merge(event.usage)
            delta = {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence}
            body = {"type": "message_delta", "delta": delta, "usage": usage_json(self._usage)}
            return self._close_all() + encode("message_delta", _dumps(body))
        if isinstance(event, MessageStop):
            return self._close_all() + encode("message_stop", b'{"type":"message_stop"}')
        return encode("ping", b'{"type":"ping"}')

    def error(self, err: MeridianError, request_id: str) -> bytes:
        """The ``error`` event that ends a stream after its 200 (the SDK raises on it)."""
        return encode("error", _dumps(render_error(err, request_id)[1]))

    def _start(self, index: int, block: Block) -> bytes:
        self._open, self._out = index, self._next
        self._next += 1
        self._signature = None
        # The start carries the block empty and its content follows as deltas, as the
        # API does: clients that only read deltas (text_stream) still see all of it.
        initial: list[Delta] = []
        empty: dict[str, Any]
        if isinstance(block, TextBlock):
            empty = {"type": "text", "text": ""}
            initial += [TextDelta(block.text)] if block.text else []
            initial += [CitationDelta(c) for c in block.citations]
        elif isinstance(block, ToolUseBlock):
            empty = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            initial += [JsonDelta(_dumps(block.input).decode())] if block.input else []
        elif isinstance(block, ThinkingBlock):
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            initial += [ThinkingDelta(block.thinking)] if block.thinking else []
            initial += [SignatureDelta(block.signature)] if block.signature else []
        elif isinstance(block, RedactedThinkingBlock):
            empty = {"type": "redacted_thinking", "data": block.data}
        else:  # input-only block types never come from a model; sent as they are
            empty = render_block(block)
        body = {"type": "content_block_start", "index": self._out, "content_block": empty}
        return encode("content_block_start", _dumps(body)) + b"".join(
            self._delta(d) for d in initial
        )

    def _delta(self, delta: Delta) -> bytes:
        payload: dict[str, Any]
        if isinstance(delta, TextDelta):
            payload = {"type": "text_delta", "text": delta.text}
        elif isinstance(delta, JsonDelta):
            payload = {"type": "input_json_delta", "partial_json": delta.partial_json}
        elif isinstance(delta, ThinkingDelta):
            payload = {"type": "thinking_delta", "thinking": delta.thinking}
        elif isinstance(delta, SignatureDelta):
            self._signature = [*(self._signature or ()), delta.signature]
            return b""
        else:
            payload = {"type": "citations_delta", "citation": delta.citation}
        body = {"type": "content_block_delta", "index": self._out, "delta": payload}
        return encode("content_block_delta", _dumps(body))

    def _stop(self) -> bytes:
        out = b""
        if self._signature is not None:
            delta = {"type": "signature_delta", "signature": "".join(self._signature)}
            body = {"type": "content_block_delta", "index": self._out, "delta": delta}
            out = encode("content_block_delta", _dumps(body))
            self._signature = None
        self._open = None
        body = {"type": "content_block_stop", "index": self._out}
        return out + encode("content_block_stop", _dumps(body))

    def _drain(self) -> bytes:
        """Emit held-back blocks in start order until one is still unfinished."""
        out = b""
        while self._open is None and self._queue:
            index = self._queue.pop(0)
            block, deltas = self._held.pop(index)
            out += self._start(index, block) + b"".join(self._delta(d) for d in deltas)
            if index in self._held_stopped:
                self._held_stopped.discard(index)
                out += self._stop()
        return out

    def _close_all(self) -> bytes:
        out = b""
        while self._open is not None or self._queue:
            if self._open is not None:
                out += self._stop()
            out += self._drain()
        return out


class UsageSniffer:
    """For the pass-through relay: watches an upstream's SSE events without changing them."""

    __slots__ = ("error", "finished", "first_token", "produced_chars", "started", "usage")

    def __init__(self) -> None:
        self.usage = Usage()  # cumulative so far
        self.finished = False  # message_stop seen
        self.error: MeridianError | None = None  # an `error` event (the relay forwards it)
        self.first_token = False  # a content_block_delta seen (time to first token)
        # Past message_start and pings: the answer has begun (the relay commits here).
        self.started = False
        # Roughly how much content the deltas carried (for a stream cut short, whose usage
        # the upstream never reported).
        self.produced_chars = 0

    def feed(self, event: SSEEvent) -> None:
        name = event.event
        # The bulk of a stream is deltas: they are recognised by name, never parsed.
        if name == "content_block_delta":
            self.first_token = self.started = True
            # The delta's JSON framing is ~60 characters; the rest is its content.
            self.produced_chars += max(0, len(event.data) - 60)
            return
        if name in ("content_block_start", "content_block_stop"):
            self.started = True
            return
        if name == "ping":
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type") or name
        if kind not in ("message_start", "ping"):
            self.started = True
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.usage = self.usage.merge(usage_from_json(message.get("usage")))
        elif kind == "message_delta":
            self.usage = self.usage.merge(usage_from_json(data.get("usage")))
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error" or name == "error":
            self.error = error_from_json(data.get("error", data))
        elif kind == "content_block_delta":
            self.first_token = True
