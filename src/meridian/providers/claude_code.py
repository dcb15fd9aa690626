"""``type: claude-code``: a Claude Pro/Max subscription, through the official Claude Code CLI.

The provider translates; `meridian.claude_process` owns the processes. A request becomes a
`RunSpec`:

- earlier turns -> a synthetic session transcript that the CLI resumes (real turns upstream,
  not a flattened prompt), the last user turn -> the prompt, sent verbatim;
- client tools -> an in-process MCP server; a PreToolUse hook defers every call, so the run
  ends at the call and the client gets ``tool_use`` (several in parallel alike);
- a last user turn of ``tool_result``s -> the transcript ends at the assistant's calls, the
  other results included, and the CLI resumes the last call, whose result is the client's:
  upstream sees ``tool_use`` followed by the client's ``tool_result``s (plus the CLI's own
  "Continue from where you left off." line); text or images sent beside the results ride in
  that last result;
- ``max_tokens`` -> ``CLAUDE_CODE_MAX_OUTPUT_TOKENS``; thinking only when asked for.
  Not honoured (no CLI knob): temperature, top_p, top_k, stop sequences, tool_choice,
  response_format; see docs/claude-code.md.

The SDK's partial messages are the raw Anthropic stream events of the upstream call; they
are decoded as they come. The final ``message_delta`` is ours: the stop reason (a deferred
call is ``tool_use``) and the usage and API-dollar cost from the SDK's result.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import claude_agent_sdk
from claude_agent_sdk import AssistantMessage, Message, RateLimitEvent, ResultMessage, StreamEvent

from meridian import claude_auth
from meridian.claude_process import ClaudeProcesses, DeferredCall, RunSpec, ToolSpec
from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import (
    ApiError,
    BillingError,
    InvalidRequest,
    MeridianError,
    from_upstream_status,
)
from meridian.model import (
    BlockDelta,
    BlockStart,
    BlockStop,
    Collector,
    Event,
    MessageDelta,
    MessageStop,
    Request,
    Response,
    StopReason,
    Usage,
)
from meridian.providers.base import CallContext, Capabilities, Operation, Relayed
from meridian.wire.anthropic import StreamDecoder
from meridian.wire.anthropic_render import render_messages
from meridian.wire.anthropic_response import stop_reason, usage_from_json

# OpenAI's reasoning_effort -> the CLI's --effort.
_EFFORT = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}


class ClaudeCodeProvider:
    # No sampling knob reaches the CLI (temperature, top_p, top_k and stop are ignored, as
    # documented), and no structured output through it yet.
    capabilities = Capabilities(structured_output=False, sampling=frozenset())

    def __init__(
        self,
        name: str,
        config: ClaudeCodeProviderConfig,
        *,
        processes: ClaudeProcesses | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.processes = processes or ClaudeProcesses(config, name=name)

    @property
    def in_flight(self) -> int:
        return self.processes.in_flight

    @property
    def queue_depth(self) -> int:
        return self.processes.queue_depth

    async def start(self) -> None:
        await self.processes.start()

    async def aclose(self) -> None:
        await self.processes.aclose()

    async def ready(self) -> tuple[bool, str]:
        return claude_auth.login_state(self.config)

    async def complete(self, request: Request, ctx: CallContext) -> Response:
        # The CLI only streams: the plain answer is its stream, collected.
        collector = Collector()
        async with aclosing(self.stream(request, ctx)) as events:
            async for event in events:
                collector.feed(event)
        return collector.response()

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        raise NotImplementedError("claude-code relays no operation: it has no native API")

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        spec = build_spec(request)
        logged_in, reason = claude_auth.login_state(self.config)
        if not logged_in:
            raise not_logged_in(self.name, reason.split(":")[0])
        relay = EventRelay(self.name)
        async with self.processes.run(spec, deadline=ctx.deadline) as run:
            try:
                async with aclosing(run.messages()) as messages:
                    async for message in messages:
                        for event in relay.feed(message):
                            yield event
            except claude_agent_sdk.ClaudeSDKError as exc:
                raise ApiError(f"{self.name}: the Claude CLI failed ({exc})", status=502) from exc
            if not relay.done:
                raise ApiError(f"{self.name}: the Claude CLI ended without a result", status=502)


def not_logged_in(provider: str, why: str) -> MeridianError:
    # Not a 401: that tells a client *its* key is wrong (Home Assistant then asks its user to
    # re-authenticate), while the fix is the operator's, on the server. A 503 that the SDKs
    # do not retry; /ready says the same.
    return ApiError(
        f"{provider}: the Claude subscription login on the meridian server is unusable "
        f"({why}); the operator must run `meridian auth login` there",
        status=503,
        should_retry=False,
        code="not_logged_in",
    )


class EventRelay:
    """SDK messages of one run -> canonical events; raises the run's error, if any."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.done = False
        self._decoder: StreamDecoder | None = None
        self._started = False
        self._offset = 0  # block indexes of earlier upstream messages in this run
        self._next_index = 0
        self._stop: StopReason | None = None
        self._stop_sequence: str | None = None
        self._usage = Usage()
        self._error: AssistantMessage | None = None
        self._limit: RateLimitEvent | None = None
        self._streamed: set[str | None] = set()
        self._unstreamed = False

    def feed(self, message: Message) -> list[Event]:
        if isinstance(message, StreamEvent):
            return self._event(message) if message.parent_tool_use_id is None else []
        if isinstance(message, AssistantMessage) and message.parent_tool_use_id is None:
            if message.error is not None:
                self._error = message
            elif message.message_id not in self._streamed:
                self._unstreamed = True
        elif isinstance(message, RateLimitEvent):
            if message.rate_limit_info.status == "rejected":
                self._limit = message
        elif isinstance(message, ResultMessage):
            return self._result(message)
        return []

    def _event(self, message: StreamEvent) -> list[Event]:
        data = message.event
        if data.get("type") == "message_start":
            # Each upstream call of the run streams a message; the client gets one.
            self._decoder, self._offset = StreamDecoder(), self._next_index
            self._streamed.add(data.get("message", {}).get("id"))
            events = self._decoder.feed_json(data)
            if self._started:
                return []
            self._started = True
            return events
        if self._decoder is None:
            return []
        out: list[Event] = []
        for event in self._decoder.feed_json(data):
            if isinstance(event, MessageDelta):
                self._stop = event.stop_reason or self._stop
                self._stop_sequence = event.stop_sequence
                self._usage = self._usage.merge(event.usage)
            elif isinstance(event, MessageStop):
                continue
            elif isinstance(event, BlockStart | BlockDelta | BlockStop):
                index = event.index + self._offset
                self._next_index = max(self._next_index, index + 1)
                out.append(replace(event, index=index))
            else:
                out.append(event)
        return out

    def _result(self, result: ResultMessage) -> list[Event]:
        self.done = True
        if result.is_error or self._error is not None:
            raise self.error(result)
        if not self._started or self._unstreamed:
            # Nothing to relay token by token (a local command, or an answer fetched
            # without streaming): never pass that off as the model's streamed answer.
            raise ApiError(
                f"{self.provider}: the Claude CLI answered without streaming it", status=502
            )
        reason: StopReason | None = (
            "tool_use"
            if result.stop_reason == "tool_deferred"
            else self._stop or stop_reason(result.stop_reason)
        )
        usage = usage_from_json(result.usage)
        usage = replace(self._usage.merge(usage), cost_usd=result.total_cost_usd)
        return [MessageDelta(reason, usage, self._stop_sequence), MessageStop()]

    def error(self, result: ResultMessage) -> MeridianError:
        kind = self._error.error if self._error else None
        text = (_text(self._error) if self._error else "") or result.result or result.subtype
        status = result.api_error_status
        if kind == "authentication_failed" or status in (401, 403):
            return not_logged_in(self.provider, text)
        if kind == "rate_limit" or status == 429:
            info = self._limit.rate_limit_info if self._limit else None
            if info is not None and info.resets_at:
                resets = datetime.fromtimestamp(info.resets_at, UTC)
                window = (info.rate_limit_type or "usage").replace("_", "-")
                return from_upstream_status(
                    429,
                    f"Claude subscription {window} limit reached; it resets at "
                    f"{resets.isoformat(timespec='minutes')} ({text})",
                    provider=self.provider,
                    retry_after=max(1.0, info.resets_at - time.time()),
                    quota_exhausted=True,
                )
            return from_upstream_status(429, text, provider=self.provider)
        if kind == "billing_error":
            return BillingError(f"{self.provider}: {text}", should_retry=False)
        if status is not None:
            return from_upstream_status(status, text, provider=self.provider)
        if kind == "invalid_request":
            return InvalidRequest(f"{self.provider}: {text}")
        return ApiError(f"{self.provider}: {text}", status=502)


def _text(message: AssistantMessage) -> str:
    return " ".join(b.text for b in message.content if isinstance(b, claude_agent_sdk.TextBlock))


# ------------------------------------------------------------------ request -> RunSpec


def build_spec(request: Request) -> RunSpec:
    turns = [_clean(t) for t in render_messages(request.messages)]
    if not turns or turns[-1]["role"] != "user":
        raise InvalidRequest(
            "the last message must be a user turn: the Claude subscription provider cannot "
            "continue a partial assistant answer (prefill)",
            param="messages",
        )
    spec = RunSpec(
        model=request.model,
        system="\n\n".join(b.text for b in request.system if b.text),
        tools=tuple(ToolSpec(t.name, t.description or "", t.input_schema) for t in request.tools),
        max_tokens=request.max_tokens,
    )
    thinking = request.thinking
    if thinking is not None and thinking.enabled:
        spec = replace(
            spec,
            thinking_budget=thinking.budget_tokens or 0,
            effort=_EFFORT.get(thinking.effort or ""),
        )
    last, earlier = turns[-1], turns[:-1]
    call = _resumable_call(last, earlier[-1] if earlier else None)
    if call is None:
        return replace(spec, history=tuple(earlier), prompt=tuple(last["content"]))
    answer = next(b for b in last["content"] if b.get("tool_use_id") == call["id"])
    others = [b for b in last["content"] if b is not answer]
    results = [b for b in others if b["type"] == "tool_result"]
    extra = [b for b in others if b["type"] != "tool_result"]
    history = earlier + ([{"role": "user", "content": results}] if results else [])
    deferred = DeferredCall(
        tool_use_id=call["id"],
        name=call["name"],
        input=call.get("input") or {},
        content=tuple(_mcp_content(answer.get("content")) + _mcp_content(extra)),
        is_error=bool(answer.get("is_error")),
    )
    tools = spec.tools
    if all(t.name != call["name"] for t in tools):
        tools += (ToolSpec(call["name"], "", {"type": "object", "properties": {}}),)
    return replace(spec, history=tuple(history), deferred=deferred, tools=tools)


def _resumable_call(
    last: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The last of the previous turn's tool calls that the last turn answers, if any."""
    if previous is None or previous["role"] != "assistant":
        return None
    answered = {b.get("tool_use_id") for b in last["content"] if b["type"] == "tool_result"}
    calls = [b for b in previous["content"] if b["type"] == "tool_use" and b["id"] in answered]
    return calls[-1] if calls else None


def _clean(turn: dict[str, Any]) -> dict[str, Any]:
    """The CLI places its own cache breakpoints; a client's would exceed the API's four."""
    return {"role": turn["role"], "content": [_uncached(b) for b in turn["content"]]}


def _uncached(block: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):
        out["content"] = [_uncached(b) for b in out["content"]]
    return out


def _mcp_content(content: object) -> list[dict[str, Any]]:
    """Anthropic content (a string or blocks) -> MCP tool-result content."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out: list[dict[str, Any]] = []
    for block in content if isinstance(content, Sequence) else ():
        source = block.get("source") or {}
        if block.get("type") == "text":
            out.append({"type": "text", "text": block["text"]})
        elif block.get("type") == "image" and source.get("type") == "base64":
            out.append({"type": "image", "data": source["data"], "mimeType": source["media_type"]})
        else:  # MCP results carry text and inline images only
            out.append({"type": "text", "text": f"[{block.get('type')}: {source.get('url', '')}]"})
    return out
