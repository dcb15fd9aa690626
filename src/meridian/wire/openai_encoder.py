"""Canonical events -> the OpenAI ``chat.completion.chunk`` stream a client reads. Sans-IO.

Public names are re-exported from `meridian.wire.openai_chat`; import them from there.
The shape follows PROTOCOL.md and what the openai SDK's stream accumulator relies on:
``accumulate_delta`` merges ``tool_calls`` by ``index`` and concatenates strings, so the
first delta of a call carries its id, type and name (arguments ``""``), later ones only
argument pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meridian.errors import MeridianError
from meridian.model import (
    BlockDelta,
    BlockStart,
    BlockStop,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    Ping,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from meridian.wire.openai_common import dumps, finish_reason, render_error, render_usage
from meridian.wire.openai_stream import completion_id
from meridian.wire.sse import KEEPALIVE_COMMENT

_DONE = b"data: [DONE]\n\n"


class StreamEncoder:
    """Canonical events -> OpenAI chunks: ``data: {json}\\n\\n``, then ``data: [DONE]\\n\\n``.

    Every chunk has the same id/created/model. Tool calls are numbered 0..n-1 in order of
    appearance; canonical blocks never interleave, so each call's pieces arrive together.
    """

    def __init__(
        self, *, model: str, include_usage: bool, created: int, id: str | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = created
        self._id = completion_id(id) if id else ""
        self._head = b""
        self._usage = Usage()
        self._kinds: dict[int, str] = {}
        self._tools: dict[int, int] = {}  # canonical block index -> tool call index
        # Tool blocks whose BlockStart carried the whole input (no JsonDelta follows).
        self._inputs: dict[int, Mapping[str, Any]] = {}
        self._finished = False

    def feed(self, event: Event) -> bytes:
        if isinstance(event, BlockDelta):
            return self._block_delta(event)
        if isinstance(event, Ping):
            return KEEPALIVE_COMMENT
        if isinstance(event, MessageStart):
            if not self._id:
                self._id = completion_id(event.id)
            self._usage = self._usage.merge(event.usage)
            return self._start()
        out = self._start() if not self._head else b""
        if isinstance(event, BlockStart):
            return out + self._block_start(event)
        if isinstance(event, BlockStop):
            inp = self._inputs.pop(event.index, None)
            if inp:
                return out + self._tool_chunk(event.index, {"arguments": dumps(inp).decode()})
            return out
        if isinstance(event, MessageDelta):
            self._usage = self._usage.merge(event.usage)
            if self._finished:
                return out
            self._finished = True
            return out + self._chunk(b"{}", finish_reason(event.stop_reason))
        # MessageStop. A stream must end with a finish_reason (Pulse waits for it).
        if not self._finished:
            self._finished = True
            out += self._chunk(b"{}", "stop")
        if self._include_usage:
            usage = {"choices": [], "usage": render_usage(self._usage)}
            out += b"data: " + self._head + dumps(usage)[1:] + b"\n\n"
        return out + _DONE

    def error(self, err: MeridianError) -> bytes:
        """A mid-stream error: the openai SDK raises ``APIError`` on it."""
        return b"data: " + dumps(render_error(err)[1]) + b"\n\n"

    # -- internals

    def _start(self) -> bytes:
        if self._head:
            return b""
        self._id = self._id or completion_id("")
        fixed = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        self._head = dumps(fixed)[:-1] + b","  # '{"id":...,"model":"m",' + the rest
        return self._chunk(b'{"role":"assistant","content":""}')

    def _chunk(self, delta: bytes, finish: str | None = None) -> bytes:
        reason = b"null" if finish is None else b'"' + finish.encode() + b'"'
        tail = b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        return (
            b"data: "
            + self._head
            + b'"choices":[{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + reason
            + b"}]"
            + tail
        )

    def _block_start(self, event: BlockStart) -> bytes:
        block = event.block
        if isinstance(block, TextBlock):
            self._kinds[event.index] = "text"
            return self._chunk(dumps({"content": block.text})) if block.text else b""
        if isinstance(block, ThinkingBlock):
            self._kinds[event.index] = "thinking"
            return (
                self._chunk(dumps({"reasoning_content": block.thinking})) if block.thinking else b""
            )
        if isinstance(block, ToolUseBlock):
            self._kinds[event.index] = "tool"
            n = self._tools[event.index] = len(self._tools)
            if block.input:
                self._inputs[event.index] = block.input
            first = {
                "index": n,
                "id": block.id,
                "type": "function",
                "function": {"name": block.name, "arguments": ""},
            }
            return self._chunk(dumps({"tool_calls": [first]}))
        return b""  # redacted thinking, documents: nothing to show an OpenAI client

    def _block_delta(self, event: BlockDelta) -> bytes:
        out = self._start() if not self._head else b""
        d = event.delta
        if isinstance(d, TextDelta) and d.text:
            return out + self._chunk(dumps({"content": d.text}))
        if isinstance(d, ThinkingDelta) and d.thinking:
            return out + self._chunk(dumps({"reasoning_content": d.thinking}))
        if isinstance(d, JsonDelta) and event.index in self._tools:
            self._inputs.pop(event.index, None)  # deltas replace the input given at start
            if d.partial_json:
                return out + self._tool_chunk(event.index, {"arguments": d.partial_json})
        return out  # signatures and citations have no OpenAI form

    def _tool_chunk(self, index: int, function: dict[str, Any]) -> bytes:
        call = {"index": self._tools[index], "function": function}
        return self._chunk(dumps({"tool_calls": [call]}))
