"""The canonical model: what every wire format is translated to and from.

It follows Anthropic's content blocks because they are the richer of the two APIs; OpenAI
shapes map onto them. Everything here is a frozen dataclass (a pure value): no I/O, no HTTP.

A provider yields a stream of `Event`s; a non-streaming answer is the same stream, collected
by `collect()`. The event grammar is Anthropic's:

    MessageStart (BlockStart BlockDelta* BlockStop)* MessageDelta MessageStop

`BlockStart.block` carries the block with empty content (``TextBlock("")``,
``ToolUseBlock(id, name, {})``, ``ThinkingBlock("", "")``); deltas fill it in.

`provider_metadata` is the one escape hatch for fields a format has that the model does not
(kept per format under its own key, so a translator only reads what it wrote).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

JSON: TypeAlias = Any
# "system": an instruction given in the middle of the conversation (Claude Code sends them
# inside `messages` for a model it does not know; OpenAI allows them anywhere). Text only.
# Instructions before the first turn live in `Request.system`.
Role = Literal["user", "assistant", "system"]
StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


# ---------------------------------------------------------------------------- content blocks


@dataclass(frozen=True, slots=True)
class TextBlock:
    text: str
    cache_control: Mapping[str, JSON] | None = None
    citations: tuple[Mapping[str, JSON], ...] = ()


@dataclass(frozen=True, slots=True)
class ImageBlock:
    """An image, either inline (``data`` is base64, ``media_type`` set) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    cache_control: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class DocumentBlock:
    """A document block (PDF, plain text) kept as its Anthropic ``source`` object."""

    source: Mapping[str, JSON]
    title: str | None = None
    cache_control: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    id: str
    name: str
    input: Mapping[str, JSON]
    cache_control: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    tool_use_id: str
    content: tuple[TextBlock | ImageBlock | DocumentBlock, ...] = ()
    is_error: bool = False
    cache_control: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    thinking: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class RedactedThinkingBlock:
    data: str


Block: TypeAlias = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


# ---------------------------------------------------------------------------- request


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[Block, ...]


def instructions(
    system: tuple[TextBlock, ...], messages: Sequence[Message]
) -> tuple[tuple[TextBlock, ...], tuple[Message, ...]]:
    """For an API with one system prompt (Anthropic's, the Claude CLI's): the system prompt
    with every mid-conversation system message appended in order, and the conversation
    without them."""
    if not any(m.role == "system" for m in messages):
        return system, tuple(messages)
    extra = [
        b for m in messages if m.role == "system" for b in m.content if isinstance(b, TextBlock)
    ]
    return (*system, *extra), tuple(m for m in messages if m.role != "system")


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str | None = None
    input_schema: Mapping[str, JSON] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    cache_control: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` | ``any`` (OpenAI ``required``) | ``tool`` (a named one) | ``none``."""

    type: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool = False


@dataclass(frozen=True, slots=True)
class Thinking:
    """Extended thinking / reasoning, as the client asked for it.

    ``budget_tokens`` comes from Anthropic's ``thinking``; ``effort`` from OpenAI's
    ``reasoning_effort`` (``minimal|low|medium|high``). Either may be missing.
    """

    enabled: bool = True
    budget_tokens: int | None = None
    effort: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    model: str
    messages: tuple[Message, ...]
    system: tuple[TextBlock, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    stream: bool = False
    # OpenAI ``response_format`` (json_object / json_schema), kept as sent.
    response_format: Mapping[str, JSON] | None = None
    # End-user id: OpenAI ``user``, Anthropic ``metadata.user_id``.
    user: str | None = None
    provider_metadata: Mapping[str, Mapping[str, JSON]] = field(default_factory=dict)

    def with_model(self, model: str) -> Request:
        return replace(self, model=model)


# ---------------------------------------------------------------------------- response


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``input_tokens`` excludes cache reads and writes, as Anthropic counts."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    # Dollar cost when the upstream reports one (the Claude CLI does); else None.
    cost_usd: float | None = None

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens

    def merge(self, other: Usage) -> Usage:
        """Later non-zero counts win: streams report usage cumulatively, in pieces."""
        return Usage(
            input_tokens=other.input_tokens or self.input_tokens,
            output_tokens=other.output_tokens or self.output_tokens,
            cache_read_tokens=other.cache_read_tokens or self.cache_read_tokens,
            cache_creation_tokens=other.cache_creation_tokens or self.cache_creation_tokens,
            reasoning_tokens=other.reasoning_tokens or self.reasoning_tokens,
            cost_usd=other.cost_usd if other.cost_usd is not None else self.cost_usd,
        )


@dataclass(frozen=True, slots=True)
class Response:
    id: str
    model: str
    content: tuple[Block, ...]
    stop_reason: StopReason | None
    usage: Usage
    stop_sequence: str | None = None


# ---------------------------------------------------------------------------- stream events


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class JsonDelta:
    partial_json: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    thinking: str


@dataclass(frozen=True, slots=True)
class SignatureDelta:
    signature: str


@dataclass(frozen=True, slots=True)
class CitationDelta:
    citation: Mapping[str, JSON]


Delta: TypeAlias = TextDelta | JsonDelta | ThinkingDelta | SignatureDelta | CitationDelta


@dataclass(frozen=True, slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage = Usage()


@dataclass(frozen=True, slots=True)
class BlockStart:
    index: int
    block: Block


@dataclass(frozen=True, slots=True)
class BlockDelta:
    index: int
    delta: Delta


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class MessageDelta:
    stop_reason: StopReason | None
    usage: Usage = Usage()
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class MessageStop:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Event: TypeAlias = (
    MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | Ping
)


def parse_tool_input(partial_json: str) -> Mapping[str, JSON]:
    """The concatenated ``partial_json`` of a tool call; empty means ``{}``.

    Invalid JSON (fine-grained tool streaming can produce it) is kept as
    ``{"INVALID_JSON": raw}`` rather than dropped, which is what Anthropic's SDK does too.
    """
    if not partial_json.strip():
        return {}
    try:
        value = json.loads(partial_json)
    except ValueError:
        return {"INVALID_JSON": partial_json}
    return value if isinstance(value, dict) else {"INVALID_JSON": partial_json}


class Collector:
    """Folds a stream of events into a `Response` (the non-streaming path)."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.usage = Usage()
        self.stop_reason: StopReason | None = None
        self.stop_sequence: str | None = None
        self._blocks: dict[int, Block] = {}
        self._parts: dict[int, list[str]] = {}
        self._signatures: dict[int, list[str]] = {}
        self._citations: dict[int, list[Mapping[str, JSON]]] = {}

    def feed(self, event: Event) -> None:
        if isinstance(event, BlockDelta):
            d = event.delta
            if isinstance(d, TextDelta):
                self._parts[event.index].append(d.text)
            elif isinstance(d, JsonDelta):
                self._parts[event.index].append(d.partial_json)
            elif isinstance(d, ThinkingDelta):
                self._parts[event.index].append(d.thinking)
            elif isinstance(d, SignatureDelta):
                self._signatures[event.index].append(d.signature)
            else:
                self._citations[event.index].append(d.citation)
        elif isinstance(event, BlockStart):
            self._blocks[event.index] = event.block
            self._parts[event.index] = []
            self._signatures[event.index] = []
            self._citations[event.index] = []
        elif isinstance(event, MessageStart):
            self.id, self.model = event.id, event.model
            self.usage = self.usage.merge(event.usage)
        elif isinstance(event, MessageDelta):
            self.stop_reason = event.stop_reason
            self.stop_sequence = event.stop_sequence
            self.usage = self.usage.merge(event.usage)

    def feed_all(self, events: Iterable[Event]) -> Response:
        for event in events:
            self.feed(event)
        return self.response()

    def response(self) -> Response:
        return Response(
            id=self.id,
            model=self.model,
            content=tuple(self._finish(i) for i in sorted(self._blocks)),
            stop_reason=self.stop_reason,
            usage=self.usage,
            stop_sequence=self.stop_sequence,
        )

    def _finish(self, index: int) -> Block:
        block, text = self._blocks[index], "".join(self._parts[index])
        if isinstance(block, TextBlock):
            citations = block.citations + tuple(self._citations[index])
            return replace(block, text=block.text + text, citations=citations)
        if isinstance(block, ToolUseBlock):
            return replace(block, input=parse_tool_input(text)) if text else block
        if isinstance(block, ThinkingBlock):
            signature = block.signature + "".join(self._signatures[index])
            return replace(block, thinking=block.thinking + text, signature=signature)
        return block


def response_events(response: Response) -> list[Event]:
    """The inverse of `Collector`: a whole response as the stream that would produce it."""
    events: list[Event] = [
        MessageStart(
            response.id,
            response.model,
            Usage(
                input_tokens=response.usage.input_tokens,
                cache_read_tokens=response.usage.cache_read_tokens,
                cache_creation_tokens=response.usage.cache_creation_tokens,
            ),
        )
    ]
    for i, block in enumerate(response.content):
        if isinstance(block, TextBlock):
            events.append(BlockStart(i, replace(block, text="", citations=())))
            if block.text:
                events.append(BlockDelta(i, TextDelta(block.text)))
            events.extend(BlockDelta(i, CitationDelta(c)) for c in block.citations)
        elif isinstance(block, ToolUseBlock):
            events.append(BlockStart(i, replace(block, input={})))
            if block.input:
                events.append(BlockDelta(i, JsonDelta(json.dumps(block.input))))
        elif isinstance(block, ThinkingBlock):
            events.append(BlockStart(i, ThinkingBlock("", "")))
            if block.thinking:
                events.append(BlockDelta(i, ThinkingDelta(block.thinking)))
            events.append(BlockDelta(i, SignatureDelta(block.signature)))
        else:
            events.append(BlockStart(i, block))
        events.append(BlockStop(i))
    events.append(MessageDelta(response.stop_reason, response.usage, response.stop_sequence))
    events.append(MessageStop())
    return events
