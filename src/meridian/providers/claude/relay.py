"""The SDK messages of one turn -> canonical events, and the turn's errors -> meridian's.

The SDK's partial messages are the upstream's raw Anthropic stream events: they are decoded
as they come and relayed token by token. The final ``message_delta`` is meridian's: the stop
reason (a deferred tool call is ``tool_use``) and this turn's usage and API-dollar cost (the
CLI reports a running total per process; the turn's share is the difference).

An upstream answer that stops at ``max_tokens`` or ``refusal`` ends the client's message
right there, with that reason and that call's usage: the CLI would otherwise call again with
a turn of its own and glue the answers together.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime

import claude_agent_sdk
from claude_agent_sdk import (
    AssistantMessage,
    Message,
    RateLimitEvent,
    RateLimitInfo,
    ResultMessage,
    StreamEvent,
    SystemMessage,
)

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
    Event,
    MessageDelta,
    MessageStart,
    MessageStop,
    StopReason,
    Usage,
)
from meridian.wire.anthropic import StreamDecoder
from meridian.wire.anthropic_response import stop_reason, usage_from_json

# Upstream stops that end the client's message at once (see the module doc).
FINAL_STOPS = frozenset({"max_tokens", "refusal"})


class EventRelay:
    def __init__(self, provider: str, *, cost_before: float = 0.0) -> None:
        self.provider = provider
        self.cost_before = cost_before
        self.done = False  # the client's message is whole (or the turn's error raised)
        self.ended_early = False  # at an upstream max_tokens / refusal: the CLI must stop
        self.clean = False  # ended at the CLI's own result, successfully
        self.model: str | None = None  # the model the upstream says answered
        self.cli_model: str | None = None  # the exact id the CLI resolved --model to
        self.rate_limit: RateLimitInfo | None = None  # the latest the CLI reported
        self._decoder: StreamDecoder | None = None
        self._started = False
        self._offset = 0  # block indexes of earlier upstream messages in this turn
        self._next_index = 0
        self._stop: StopReason | None = None
        self._stop_sequence: str | None = None
        self._call_usage = Usage()  # the upstream call under way
        self._usage = Usage()  # every upstream call of the turn
        self._error: AssistantMessage | None = None
        self._streamed: set[str | None] = set()
        self._unstreamed = False

    def feed(self, message: Message) -> list[Event]:
        if self.done:
            return []
        if isinstance(message, StreamEvent):
            return self._event(message) if message.parent_tool_use_id is None else []
        if isinstance(message, AssistantMessage) and message.parent_tool_use_id is None:
            if message.error is not None:
                self._error = message
            elif message.message_id not in self._streamed:
                self._unstreamed = True
        elif isinstance(message, RateLimitEvent):
            self.rate_limit = message.rate_limit_info
        elif isinstance(message, SystemMessage) and message.subtype == "init":
            model = message.data.get("model")
            self.cli_model = model if isinstance(model, str) else self.cli_model
        elif isinstance(message, ResultMessage):
            return self._result(message)
        return []

    def _event(self, message: StreamEvent) -> list[Event]:
        data = message.event
        if data.get("type") == "message_start":
            self._decoder, self._offset = StreamDecoder(), self._next_index
            self._streamed.add(data.get("message", {}).get("id"))
            events = self._decoder.feed_json(data)
            for event in events:
                if isinstance(event, MessageStart):
                    self.model = event.model or self.model
                    self._call_usage = event.usage
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
                self._call_usage = self._call_usage.merge(event.usage)
                self._usage = self._usage.merge(self._call_usage)
                if event.stop_reason in FINAL_STOPS:
                    self.done = self.ended_early = True
                    return [*out, MessageDelta(event.stop_reason, self._call_usage), MessageStop()]
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
            err = ApiError(
                f"{self.provider}: the Claude CLI answered without streaming it", status=502
            )
            err.upstream = True
            raise err
        reason: StopReason | None = (
            "tool_use"
            if result.stop_reason == "tool_deferred"
            else self._stop or stop_reason(result.stop_reason)
        )
        usage = usage_from_json(result.usage) if result.usage else self._usage
        cost = None
        if result.total_cost_usd is not None:
            cost = max(0.0, round(result.total_cost_usd - self.cost_before, 9))
        self.clean = True
        return [MessageDelta(reason, replace(usage, cost_usd=cost), self._stop_sequence),
                MessageStop()]  # fmt: skip

    def error(self, result: ResultMessage) -> MeridianError:
        err = self._error_for(result)
        err.upstream = True
        return err

    def _error_for(self, result: ResultMessage) -> MeridianError:
        kind = self._error.error if self._error else None
        text = (_text(self._error) if self._error else "") or result.result or result.subtype
        status = result.api_error_status
        if kind == "authentication_failed" or status in (401, 403):
            return not_logged_in(self.provider, text)
        if kind == "rate_limit" or status == 429:
            info = self.rate_limit
            if info is not None and info.status == "rejected" and info.resets_at:
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


def _text(message: AssistantMessage) -> str:
    return " ".join(b.text for b in message.content if isinstance(b, claude_agent_sdk.TextBlock))
