"""One Claude Code CLI process, driven through the Claude Agent SDK.

`ClaudeSDKClient` over meridian's own transport (every flag and variable the CLI sees is
decided in `meridian.providers.claude.command`), started once and then asked one turn at a
time, each turn read up to its result:

    prepare: scratch dir (home, temp files, system prompt) + transcript of earlier turns
    -> start: spawn in its own process group, initialize (hooks, in-process MCP server),
       delete the transcript (the CLI has read it)
    -> ask(turn) / messages() ... as many turns as the pool lets it live
    -> stop: interrupt if a turn is unfinished, end of input, SIGTERM, SIGKILL the group;
       delete the scratch dir (and what a killed CLI leaves behind)

The working directory is one empty directory shared by every process of a provider: the
CLI names it upstream ("Primary working directory: ..."), so it reveals nothing and stays
the same from one request to the next (the start of the prompt is then cacheable).

Client tools are declared on an in-process MCP server and a PreToolUse hook defers every
call: the turn ends at the calls (``tool_deferred``), nothing runs on the server, and the
client's ``tool_result``s arrive as the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import claude_agent_sdk
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    Message,
    SdkMcpTool,
    create_sdk_mcp_server,
    project_key_for_directory,
)
from claude_agent_sdk.types import PreToolUseHookSpecificOutput

from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import ApiError, Timeout
from meridian.providers.claude.command import MCP_SERVER, run_argv, run_env, transcript
from meridian.providers.claude.spec import RunSpec, Turn
from meridian.providers.claude.transport import CliTransport

log = logging.getLogger("meridian.claude")


class CliProcess:
    def __init__(
        self,
        config: ClaudeCodeProviderConfig,
        spec: RunSpec,
        *,
        name: str,
        cli: Sequence[str],
        scratch: Path,
        cwd: Path,
        caller: str | None,
    ) -> None:
        self.config, self.spec, self.name, self.caller = config, spec, name, caller
        self.options = spec.options_key()
        self.root = Path(scratch) / f"run-{uuid.uuid4().hex[:12]}"
        self._cwd = cwd
        home = self.root / "home"
        self._system = self.root / "system.md" if spec.system else None
        self._session = str(uuid.uuid4()) if spec.transcript_turns else None
        self.transcript: Path | None = None
        if self._session is not None:
            folder = config.config_dir / "projects" / project_key_for_directory(cwd)
            self.transcript = folder / f"{self._session}.jsonl"
        self.transport = CliTransport(
            [*cli[:-1], *run_argv(cli[-1], spec, self._system, self._session)],
            run_env(config, spec, home, cwd),
            cwd,
        )
        # Only what the SDK's own Query reads: the CLI's flags are in the transport's argv.
        options = ClaudeAgentOptions(
            verbatim_prompts=True,
            mcp_servers=_mcp_servers(spec),
            hooks={"PreToolUse": [HookMatcher(matcher=None, hooks=[_defer])]},
        )
        self.client = ClaudeSDKClient(options, self.transport)
        self.cost = 0.0  # total_cost_usd the CLI last reported: a running total per process
        self.turns = 0  # turns answered
        self.finished = True  # no turn under way
        self.key: bytes | None = None  # the conversation it holds, while it waits
        self.idle_since = 0.0
        self.expiry: asyncio.TimerHandle | None = None
        self.started = False
        self.handoff = False  # its slot goes to whoever evicted it, not to the queue
        self._stopping: asyncio.Future[None] | None = None

    @property
    def alive(self) -> bool:
        return self.transport.is_ready() and not self.transport.frozen

    @property
    def frozen(self) -> bool:
        return self.transport.frozen

    def rss_mb(self) -> float:
        return self.transport.rss_mb()

    async def start(self, deadline: float) -> None:
        self.started = True
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline):
                # Off the event loop: a system prompt or a history can be megabytes.
                await asyncio.to_thread(self._write_files)
                await self.client.connect()
        except TimeoutError:
            raise Timeout(f"{self.name}: the CLI did not start in time") from None
        except OSError as exc:
            err = ApiError(f"{self.name}: could not prepare the Claude CLI's files", status=502)
            err.detail = str(exc)
            raise err from exc
        except claude_agent_sdk.ClaudeSDKError as exc:
            log.warning("claude CLI failed to start: %s; %s", exc, self.transport.stderr_tail)
            err = ApiError(f"{self.name}: could not start the Claude CLI", status=502)
            err.detail = f"{exc}; {self.transport.stderr_tail}"
            raise err from exc
        finally:
            self._forget_transcript()
        log.debug("claude CLI ready in %.0f ms", (time.monotonic() - started) * 1000)

    async def ask(self, turn: Turn | None, deadline: float) -> None:
        """Start the next turn: send ``turn`` (None: the CLI resumes its transcript's own)."""
        self.finished = False
        if turn is None:
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self.client.query(_one(turn["content"]))
        except TimeoutError:
            raise Timeout(f"{self.name}: the CLI did not take the request in time") from None
        except claude_agent_sdk.ClaudeSDKError as exc:
            err = ApiError(f"{self.name}: the Claude CLI stopped taking requests", status=502)
            err.detail = str(exc)
            raise err from exc

    async def messages(self, deadline: float) -> AsyncGenerator[Message, None]:
        """The SDK messages of the turn under way, up to its result."""
        stream = self.client.receive_response()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise Timeout(f"{self.name}: no answer in time; the CLI was stopped") from None
                if isinstance(message, claude_agent_sdk.ResultMessage):
                    self.finished = True
                    self.turns += 1
                    if message.total_cost_usd is not None:
                        self.cost = message.total_cost_usd
                yield message
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Interrupt (if a turn is under way), end of input, SIGTERM, SIGKILL; always bounded
        and always complete: callers run it shielded from their own cancellation. Every
        caller waits for the one stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        pid = self.transport.pid
        try:
            if not self.finished and self.alive:
                # Stops generation at once: the upstream call is abandoned within milliseconds.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.interrupt(), 0.5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.disconnect(), 8)
        finally:
            proc = self.transport.process
            if proc is not None and proc.returncode is None:  # the graceful stop failed
                self.transport.signal(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 2)
            await asyncio.to_thread(shutil.rmtree, self.root, True)
            self._forget_transcript()
            if pid is not None and proc is not None and (proc.returncode or 0) < 0:
                # Killed, it could not remove its session record (<pid>.json, <pid>.<h>.key).
                for record in (self.config.config_dir / "sessions").glob(f"{pid}.*"):
                    with contextlib.suppress(OSError):
                        record.unlink()

    def kill(self) -> None:
        """Synchronous last resort (atexit): the process group, at once."""
        self.transport.signal(signal.SIGKILL)

    def _write_files(self) -> None:
        (self.root / "home" / "tmp").mkdir(parents=True)
        if self._system is not None:
            self._system.write_text(self.spec.system, encoding="utf-8")
        if self.transcript is not None and self._session is not None:
            self.transcript.parent.mkdir(parents=True, exist_ok=True)
            entries = transcript(self.spec, self._session, self._cwd)
            lines = (json.dumps(e, ensure_ascii=False) for e in entries)
            self.transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _forget_transcript(self) -> None:
        if self.transcript is None:
            return
        with contextlib.suppress(OSError):
            self.transcript.unlink()
        with contextlib.suppress(OSError):  # only if no other process's is there
            self.transcript.parent.rmdir()
        self.transcript = None


async def _one(content: Sequence[Mapping[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield {
        "type": "user",
        "message": {"role": "user", "content": list(content)},
        "parent_tool_use_id": None,
    }


def _mcp_servers(spec: RunSpec) -> dict[str, Any]:
    if not spec.tools:
        return {}

    async def never(args: dict[str, Any]) -> dict[str, Any]:
        # Unreachable while the hook defers every call; never run anything.
        return {"content": [{"type": "text", "text": "not executed"}], "is_error": True}

    tools = [
        SdkMcpTool(
            name=t.name,
            description=t.description,
            input_schema={"properties": {}, **t.input_schema, "type": "object"},
            handler=never,
        )
        for t in spec.tools
    ]
    return {MCP_SERVER: create_sdk_mcp_server(MCP_SERVER, tools=tools)}


async def _defer(data: HookInput, tool_use_id: str | None, ctx: HookContext) -> HookJSONOutput:
    # "defer" ends the turn at the call, which becomes the client's tool_use.
    output: PreToolUseHookSpecificOutput = {
        "hookEventName": "PreToolUse",
        "permissionDecision": "defer",
    }
    return {"hookSpecificOutput": output}
