"""``type: claude-code``: a Claude Pro/Max subscription, through the official Claude Code CLI.

A request becomes a `RunSpec` (`meridian.providers.claude.spec`); the pool
(`meridian.providers.claude.pool`) runs it on a live process that holds the caller's
conversation so far, or on a fresh one; the relay turns the CLI's messages into events.
Once the answer is whole, the process is kept for the conversation's next turn.

The provider also keeps what only it sees: the subscription's usage windows (from the CLI's
rate-limit events) and the exact model id a shorthand (``sonnet``) resolved to, which
transcripts must record for the history's thinking blocks to survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import claude_agent_sdk

from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import ApiError, MeridianError
from meridian.model import Collector, Event, Request, Response
from meridian.providers.base import CallContext, Capabilities, Operation, Relayed
from meridian.providers.claude.auth import LoginWatch
from meridian.providers.claude.pool import ClaudeProcesses
from meridian.providers.claude.relay import EventRelay, not_logged_in
from meridian.providers.claude.spec import answer_turn, build_spec
from meridian.providers.claude.windows import UsageWindows


class ClaudeCodeProvider:
    # No native API to relay to; generation through the CLI. Sampling reaches it through
    # CLAUDE_CODE_EXTRA_BODY; structured output has no way through it yet.
    capabilities = Capabilities(structured_output=False)

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
        self.login = LoginWatch(config)
        self.windows = UsageWindows()
        self.models: dict[str, str] = {}  # a shorthand -> the exact id the CLI used for it

    @property
    def in_flight(self) -> int:
        return self.processes.in_flight

    @property
    def queue_depth(self) -> int:
        return self.processes.queue_depth

    @property
    def limited_until(self) -> float | None:
        return self.windows.limited_until

    def status(self) -> dict[str, Any]:
        """For /ready, /metrics and the dashboard (`meridian.metrics.probe`)."""
        return {
            "processes": self.processes.status(),
            "rate_limits": self.windows.snapshot(),
            "models": dict(self.models),
        }

    async def start(self) -> None:
        await self.processes.start()

    async def aclose(self) -> None:
        await self.processes.aclose()

    async def ready(self) -> tuple[bool, str]:
        return await self.login.state()

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        raise NotImplementedError("claude-code relays no operation: it has no native API")

    async def complete(self, request: Request, ctx: CallContext) -> Response:
        # The CLI only streams: the plain answer is its stream, collected.
        collector = Collector()
        async with aclosing(self.stream(request, ctx)) as events:
            async for event in events:
                collector.feed(event)
        return collector.response()

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        spec = build_spec(request)
        spec = replace(spec, model_id=self.models.get(spec.model))
        logged_in, reason = await self.login.state()
        if not logged_in:
            raise not_logged_in(self.name, reason.split(":")[0])
        loop = asyncio.get_running_loop()
        async with self.processes.run(spec, deadline=ctx.deadline, caller=ctx.caller) as run:
            relay = EventRelay(self.name, cost_before=run.cost_before)
            answer = Collector()
            try:
                async for message in run.messages():
                    for event in relay.feed(message):
                        answer.feed(event)
                        yield event
                    if relay.ended_early:
                        break  # the CLI is stopped there: nothing more may reach upstream
            except claude_agent_sdk.ClaudeSDKError as exc:
                err = ApiError(f"{self.name}: the Claude CLI failed", status=502)
                err.detail, err.upstream = str(exc), True
                raise err from exc
            except MeridianError as exc:
                if exc.code == "not_logged_in":
                    self.login.forget()
                raise
            finally:
                self._learn(relay, spec.model)
            if not relay.done:
                err = ApiError(f"{self.name}: the Claude CLI ended without a result", status=502)
                err.upstream = True
                raise err
            turn = answer_turn(answer.response().content) if relay.clean else None
            if turn is not None and loop.time() < run.deadline:
                run.keep(turn)

    def _learn(self, relay: EventRelay, model: str) -> None:
        if relay.rate_limit is not None:
            self.windows.update(relay.rate_limit)
        # What the CLI itself resolved a shorthand to: the id it compares transcripts with.
        if relay.cli_model and relay.cli_model != model:
            self.models[model] = relay.cli_model
