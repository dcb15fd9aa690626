"""Canonical events -> the typed Responses stream a client reads. Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.

Every event is ``event: <type>\\ndata: {"type": <type>, "sequence_number": n, ...}\\n\\n``,
numbered from 0 without gaps. The order is the one the openai SDK's ``ResponseStreamState``
accumulates (and checks: a lifecycle event with another response id, an item event before
its ``output_item.added``, or a ``response.completed`` with items never finished all make
it raise):

    response.created, response.in_progress,
    per output item: response.output_item.added,
        message:   (content_part.added, output_text.delta*, output_text.done,
                    content_part.done) per text block
        function:  function_call_arguments.delta*, function_call_arguments.done
        reasoning: reasoning_summary_part.added, reasoning_summary_text.delta*,
                   reasoning_summary_text.done, reasoning_summary_part.done (if any text)
    response.output_item.done,
    response.completed | response.incomplete

A message item stays open across consecutive text blocks (one ``output_text`` part each)
and is finished when another kind of block starts or the answer ends. Keep-alives are SSE
comments, which SDKs skip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    RedactedThinkingBlock,
    SignatureDelta,
    StopReason,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from meridian.wire.openai_common import dumps, render_error
from meridian.wire.openai_responses_common import (
    failed_error,
    request_echo,
    response_object,
    status_of,
)
from meridian.wire.openai_responses_items import (
    REDACTED_PREFIX,
    ItemStatus,
    OutputItem,
    Status,
    function_call_item,
    item_id,
    message_item,
    output_text,
    reasoning_item,
    response_id,
)
from meridian.wire.sse import KEEPALIVE_COMMENT, encode


class _Open:
    """The output item being streamed."""

    __slots__ = (
        "block",
        "call_id",
        "id",
        "index",
        "kind",
        "name",
        "part_open",
        "parts",
        "signature",
        "summary",
    )

    def __init__(self, kind: str, id: str, index: int, block: int) -> None:
        self.kind = kind  # "message" | "function_call" | "reasoning"
        self.id = id
        self.index = index
        self.block = block  # the canonical block streaming into it now
        self.parts: list[list[str]] = []  # message: text per part; function: [[args...]]
        self.part_open = False  # message: the last text part is not finished yet
        self.summary: list[str] | None = None  # reasoning: None until a summary part opens
        self.signature: list[str] = []
        self.call_id = ""
        self.name = ""


class StreamEncoder:
    """Canonical events -> Responses SSE bytes for one answer.

    ``model`` is the name the client asked for; ``echo`` is `request_echo` of its request
    body (the parameters every response object repeats); ``clock`` (unix seconds, e.g.
    ``time.time``) dates ``completed_at``, which is ``created_at`` without one. A relay that
    failed mid-stream can continue an upstream's numbering with ``response_id`` and
    ``sequence_start``.
    """

    def __init__(
        self,
        *,
        model: str,
        created_at: int,
        echo: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        sequence_start: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._model = model
        self._clock = clock
        self._created_at = created_at
        self._echo = echo if echo is not None else request_echo({})
        self._id = response_id or ""
        self._seq = sequence_start
        self._started = False
        self._done = False
        self._usage = Usage()
        self._stop: StopReason | None = None
        self._output: list[OutputItem] = []
        self._open: _Open | None = None
        self._kinds: dict[int, str] = {}  # canonical block index -> "text" | "tool" | ...

    # -- public

    def feed(self, event: Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, BlockDelta):
            return self._delta(event)
        if isinstance(event, Ping):
            return KEEPALIVE_COMMENT
        if isinstance(event, MessageStart):
            self._usage = self._usage.merge(event.usage)
            if not self._started and not self._id:
                self._id = response_id(event.id)
            return self._start()
        out = self._start()
        if isinstance(event, BlockStart):
            return out + self._block_start(event)
        if isinstance(event, BlockStop):
            return out + self._block_stop(event.index)
        if isinstance(event, MessageDelta):
            self._usage = self._usage.merge(event.usage)
            self._stop = event.stop_reason
            return out
        # MessageStop
        status, details = status_of(self._stop)
        out += self._close("incomplete" if status == "incomplete" else "completed")
        self._done = True
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._emit(kind, response=self._object(status, details))

    def error(self, err: MeridianError) -> bytes:
        """After the first byte: an ``error`` event, then ``response.failed``.

        The ``error`` event carries both the documented top-level ``code``/``message``/
        ``param`` and the ``error`` object of the OpenAI envelope, on which the openai SDK
        raises ``APIError``; ``response.failed`` is the terminal lifecycle event that
        clients validating the lifecycle (Codex) wait for.
        """
        if self._done:
            return b""
        self._done = True
        self._id = self._id or response_id("")
        envelope = render_error(err)[1]["error"]
        out = self._emit(
            "error",
            code=envelope["code"] or envelope["type"],
            message=err.message,
            param=err.param,
            error=envelope,
        )
        out += self._close("incomplete", emit=False)
        failed = self._object("failed", None, error=failed_error(err, envelope["type"]))
        return out + self._emit("response.failed", response=failed)

    # -- internals

    def _emit(self, type_: str, **fields: Any) -> bytes:
        body = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return encode(type_, dumps(body))

    def _object(
        self, status: Status, details: dict[str, str] | None, error: Any = None
    ) -> dict[str, Any]:
        final = status in ("completed", "incomplete")
        return response_object(
            id=self._id,
            model=self._model,
            created_at=self._created_at,
            status=status,
            output=self._output if final or error else [],
            usage=self._usage if final else None,
            echo=self._echo,
            incomplete_details=details,
            error=error,
            completed_at=int(self._clock()) if self._clock and status == "completed" else None,
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._id = self._id or response_id("")
        snapshot = self._object("in_progress", None)
        return self._emit("response.created", response=snapshot) + self._emit(
            "response.in_progress", response=snapshot
        )

    def _block_start(self, event: BlockStart) -> bytes:
        block, index = event.block, event.index
        if isinstance(block, TextBlock):
            self._kinds[index] = "text"
            out = b""
            item = self._open
            if item is None or item.kind != "message":
                out += self._close("completed")
                n = len(self._output)
                item = self._open = _Open("message", item_id("msg", self._id, n), n, index)
                out += self._emit(
                    "response.output_item.added",
                    output_index=item.index,
                    item=message_item(item.id, (), "in_progress"),
                )
            item.block, item.part_open = index, True
            item.parts.append([])
            out += self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=len(item.parts) - 1,
                part=output_text(""),
            )
            return out + (self._text(block.text) if block.text else b"")
        out = self._close("completed")
        n = len(self._output)
        if isinstance(block, ToolUseBlock):
            self._kinds[index] = "tool"
            item = self._open = _Open("function_call", item_id("fc", self._id, n), n, index)
            item.call_id, item.name = block.id, block.name
            item.parts.append([])
            out += self._emit(
                "response.output_item.added",
                output_index=n,
                item=function_call_item(item.id, block.id, block.name, "", "in_progress"),
            )
            if block.input:
                # The whole input came with the start: send it as one piece.
                out += self._arguments(item, dumps(block.input).decode())
            return out
        if isinstance(block, ThinkingBlock):
            self._kinds[index] = "thinking"
            item = self._open = _Open("reasoning", item_id("rs", self._id, n), n, index)
            out += self._emit(
                "response.output_item.added", output_index=n, item=reasoning_item(item.id, "", "")
            )
            if block.thinking:
                out += self._thinking(block.thinking)
            if block.signature:
                item.signature.append(block.signature)
            return out
        if isinstance(block, RedactedThinkingBlock):
            self._kinds[index] = "skip"
            done = reasoning_item(item_id("rs", self._id, n), "", REDACTED_PREFIX + block.data)
            self._output.append(done)
            added = reasoning_item(done["id"], "", "")
            return (
                out
                + self._emit("response.output_item.added", output_index=n, item=added)
                + self._emit("response.output_item.done", output_index=n, item=done)
            )
        self._kinds[index] = "skip"  # input-only block types: nothing a client could show
        return out

    def _delta(self, event: BlockDelta) -> bytes:
        out = self._start()
        item, d = self._open, event.delta
        if item is None or item.block != event.index:
            return out  # the canonical grammar streams one block at a time: the open one
        kind = self._kinds.get(event.index)
        if kind == "text" and isinstance(d, TextDelta) and d.text:
            return out + self._text(d.text)
        if kind == "tool" and isinstance(d, JsonDelta) and d.partial_json:
            return out + self._arguments(item, d.partial_json)
        if kind == "thinking" and isinstance(d, ThinkingDelta) and d.thinking:
            return out + self._thinking(d.thinking)
        if kind == "thinking" and isinstance(d, SignatureDelta):
            item.signature.append(d.signature)
        return out  # citations have no Responses form meridian can fill in faithfully

    def _text(self, text: str) -> bytes:
        item = self._open
        assert item is not None
        item.parts[-1].append(text)
        return self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=len(item.parts) - 1,
            delta=text,
            logprobs=[],
        )

    def _arguments(self, item: _Open, piece: str) -> bytes:
        item.parts[0].append(piece)
        return self._emit(
            "response.function_call_arguments.delta",
            item_id=item.id,
            output_index=item.index,
            delta=piece,
        )

    def _thinking(self, text: str) -> bytes:
        item = self._open
        assert item is not None
        out = b""
        if item.summary is None:
            item.summary = []
            out += self._emit(
                "response.reasoning_summary_part.added",
                item_id=item.id,
                output_index=item.index,
                summary_index=0,
                part={"type": "summary_text", "text": ""},
            )
        item.summary.append(text)
        return out + self._emit(
            "response.reasoning_summary_text.delta",
            item_id=item.id,
            output_index=item.index,
            summary_index=0,
            delta=text,
        )

    def _block_stop(self, index: int) -> bytes:
        kind, item = self._kinds.pop(index, None), self._open
        if item is None or item.block != index:
            return b""
        if kind == "text" and item.kind == "message":
            return self._part_done(item)
        if kind in ("tool", "thinking"):
            return self._close("completed")
        return b""

    def _part_done(self, item: _Open) -> bytes:
        item.part_open = False
        text = "".join(item.parts[-1])
        where = {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": len(item.parts) - 1,
        }
        return self._emit(
            "response.output_text.done", **where, text=text, logprobs=[]
        ) + self._emit("response.content_part.done", **where, part=output_text(text))

    def _close(self, status: ItemStatus, *, emit: bool = True) -> bytes:
        """Finish the open output item (if any) and record it in the output."""
        item, self._open = self._open, None
        if item is None:
            return b""
        out = b""
        done: OutputItem
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            if item.part_open and emit:
                out += self._part_done(item)  # a text block the stream never stopped
            done = message_item(item.id, ["".join(p) for p in item.parts], status)
        elif item.kind == "function_call":
            args = "".join(item.parts[0])
            if not args and emit:
                # No input at all means {}; clients json.loads the arguments.
                out += self._arguments(item, "{}")
                args = "{}"
            if emit:
                out += self._emit("response.function_call_arguments.done", **where, arguments=args)
            done = function_call_item(item.id, item.call_id, item.name, args, status)
        else:
            summary = "".join(item.summary or ())
            if item.summary is not None and emit:
                part = {"type": "summary_text", "text": summary}
                out += self._emit(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=summary
                )
                out += self._emit(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=part
                )
            done = reasoning_item(item.id, summary, "".join(item.signature))
        self._output.append(done)
        if emit:
            out += self._emit("response.output_item.done", output_index=item.index, item=done)
        return out
