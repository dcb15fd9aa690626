"""The one owner of Claude Code CLI processes: slots, spawn, environment, files, teardown.

A run is one fresh CLI process driven through the Claude Agent SDK (`ClaudeSDKClient` over
our own `Transport`, so that every flag and every environment variable the CLI sees is
decided here, in one place):

    acquire a slot (bounded queue) -> scratch dir + transcript -> spawn in its own session
    -> initialize (hooks, in-process MCP server) -> send the prompt -> SDK messages
    -> teardown: interrupt if unfinished, stdin EOF, SIGTERM, SIGKILL the process group,
       delete the scratch dir and the transcript, release the slot

Safety (each has a test on what the upstream received): no built-in tools (``--tools ""``),
prompts delivered verbatim (``client_composed``: ``@/etc/passwd`` is text, ``/cost`` is not
a command), no settings or CLAUDE.md (``--setting-sources=``), no MCP config but ours, no
session files (``--no-session-persistence``), an empty scratch working directory, and an
environment built from scratch: only a few locale variables and ``PATH`` come from
meridian's own environment, so an ambient ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_AUTH_TOKEN`` /
``ANTHROPIC_BASE_URL`` never reaches the CLI unless the provider's ``env`` sets it.

The OAuth login lives in the configured ``config_dir`` and every run uses it directly: the
CLI refreshes the access token there itself. A per-run copy would be refreshed into a
directory nobody reads back, burning the single-use refresh token of the real login.
Transcripts for history replay are written under ``config_dir/projects/<scratch cwd>/`` and
removed with the run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
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
    Transport,
    create_sdk_mcp_server,
    project_key_for_directory,
)
from claude_agent_sdk.types import PreToolUseHookSpecificOutput

from meridian import __version__
from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import ApiError, Overloaded, Timeout

log = logging.getLogger("meridian.claude")

BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
MCP_SERVER = "meridian"
# Locale and search path: the only variables taken from meridian's own environment.
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# Defaults the provider's ``env`` may override. Retries: the router decides, not the CLI's
# own loop of up to 10 attempts over minutes.
DEFAULT_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    # No silent switch to another model: fallbacks are the router's, and visible.
    "CLAUDE_CODE_NO_MODEL_FALLBACK": "1",
}
QUEUE_RETRY_AFTER_S = 2.0
_LINE_LIMIT = 64 * 1024 * 1024
_STDERR_TAIL = 4096


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeferredCall:
    """The history's last tool call, which the CLI runs again on resume; its result is the
    client's ``tool_result`` (MCP content blocks)."""

    tool_use_id: str
    name: str
    input: Mapping[str, Any]
    content: tuple[Mapping[str, Any], ...]
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One CLI run, in Anthropic JSON shapes (the provider translates the canonical request).

    ``history`` becomes a synthetic transcript that the CLI resumes; ``prompt`` is the new user
    turn. With ``deferred`` there is no prompt: the transcript ends at a deferred tool call
    and the CLI continues by running it (the SDK's resume-a-deferred-call flow).
    """

    model: str
    system: str = ""
    prompt: tuple[Mapping[str, Any], ...] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    deferred: DeferredCall | None = None
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    thinking_budget: int | None = None  # None: thinking off; 0: adaptive
    effort: str | None = None


def default_cli() -> str:
    """The CLI bundled in the pinned SDK wheel; a ``claude`` on PATH only on platforms whose
    wheel has none."""
    if BUNDLED_CLI.exists():
        return str(BUNDLED_CLI)
    return shutil.which("claude") or str(BUNDLED_CLI)


def scrubbed_env(
    config: ClaudeCodeProviderConfig, home: Path, ambient: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The CLI's whole environment, for any CLI invocation (runs, ``auth``)."""
    ambient = os.environ if ambient is None else ambient
    env = {k: ambient[k] for k in PASSED_THROUGH if k in ambient}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(DEFAULT_ENV)
    env["HOME"] = str(home)
    env.update(config.env)
    env["CLAUDE_CONFIG_DIR"] = str(config.config_dir)
    return env


def run_env(
    config: ClaudeCodeProviderConfig,
    spec: RunSpec,
    home: Path,
    cwd: Path,
    ambient: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = scrubbed_env(config, home, ambient)
    env.update(
        CLAUDE_CODE_ENTRYPOINT="sdk-py",
        CLAUDE_AGENT_SDK_VERSION=claude_agent_sdk.__version__,
        CLAUDE_AGENT_SDK_CLIENT_APP=f"meridian/{__version__}",
        # The SDK's Query reads these frames to tell when a run is over.
        CLAUDE_CODE_SDK_READS_SESSION_STATE="1",
        # Client tools keep their own names upstream (not mcp__meridian__name).
        CLAUDE_AGENT_SDK_MCP_NO_PREFIX="1",
        # A broken stream is an error, not a silent retry without streaming: the part
        # already relayed cannot be taken back, and the retry would arrive unstreamed.
        CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK="1",
        PWD=str(cwd),
    )
    if spec.max_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(spec.max_tokens)
    if spec.thinking_budget is None:
        env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
    return env


def run_argv(
    cli: str, spec: RunSpec, system_file: Path | None, session_id: str | None
) -> list[str]:
    argv = [cli, "--output-format", "stream-json", "--verbose", "--input-format", "stream-json"]
    # A file, never argv: system prompts above ~100 KB fail with E2BIG as an argument.
    argv += ["--system-prompt-file", str(system_file)] if system_file else ["--system-prompt", ""]
    argv += ["--tools", "", "--setting-sources=", "--strict-mcp-config", "--disable-slash-commands"]
    argv += ["--no-session-persistence", "--include-partial-messages", "--model", spec.model]
    if spec.tools:
        servers = {MCP_SERVER: {"type": "sdk", "name": MCP_SERVER}}
        argv += ["--mcp-config", json.dumps({"mcpServers": servers})]
    if session_id is not None:
        argv.append(f"--resume={session_id}")
    if spec.thinking_budget is not None:
        argv += (
            ["--max-thinking-tokens", str(spec.thinking_budget)]
            if spec.thinking_budget > 0
            else ["--thinking", "adaptive"]
        )
    if spec.effort is not None:
        argv += ["--effort", spec.effort]
    return argv


def transcript(spec: RunSpec, session_id: str, cwd: Path) -> list[dict[str, Any]]:
    """The history as the CLI's own session file would hold it (one JSON object a line)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    base = {
        "isSidechain": False,
        "userType": "external",
        "entrypoint": "sdk-py",
        "sessionId": session_id,
        "cwd": str(cwd),
        "timestamp": now,
    }
    entries: list[dict[str, Any]] = []
    parent: str | None = None
    for i, turn in enumerate(spec.history):
        entry: dict[str, Any] = {
            **base,
            "type": turn["role"],
            "uuid": str(uuid.uuid4()),
            "parentUuid": parent,
        }
        if turn["role"] == "assistant":
            entry["message"] = {
                "id": f"msg_history{i:04d}",
                "type": "message",
                "role": "assistant",
                "model": spec.model,
                "content": list(turn["content"]),
                "stop_reason": _stop_reason(turn["content"]),
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        else:
            entry["message"] = {"role": "user", "content": list(turn["content"])}
            entry["promptSource"] = "sdk"
        entries.append(entry)
        parent = entry["uuid"]
    if spec.deferred is not None:
        d = spec.deferred
        entries.append(
            {
                **base,
                "type": "attachment",
                "uuid": str(uuid.uuid4()),
                "parentUuid": parent,
                "attachment": {
                    "type": "hook_deferred_tool",
                    "toolUseID": d.tool_use_id,
                    "toolName": d.name,
                    "toolInput": dict(d.input),
                    "hookName": "settings",
                    "hookEvent": "PreToolUse",
                    "permissionMode": "default",
                },
            }
        )
    return entries


def _stop_reason(content: Sequence[Mapping[str, Any]]) -> str:
    # The CLI reads a turn without "end_turn" as interrupted and would ask to continue it.
    return "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"


class CliTransport(Transport):
    """The CLI as a child in its own session (process group), NDJSON over its stdio."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self._argv, self._env, self._cwd = list(argv), dict(env), cwd
        self.process: asyncio.subprocess.Process | None = None
        self._stderr: deque[bytes] = deque(maxlen=64)
        self._stderr_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-_STDERR_TAIL:].decode("utf-8", "replace").strip()

    async def connect(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._cwd,
            env=self._env,
            start_new_session=True,
            limit=_LINE_LIMIT,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        with contextlib.suppress(Exception):
            while chunk := await self.process.stderr.read(4096):
                self._stderr.append(chunk)

    def is_ready(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self._closed

    async def write(self, data: str) -> None:
        stdin = self.process.stdin if self.process else None
        if stdin is None or stdin.is_closing() or not self.is_ready():
            raise claude_agent_sdk.CLIConnectionError("the Claude CLI is not running")
        stdin.write(data.encode())
        try:
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise claude_agent_sdk.CLIConnectionError("the Claude CLI closed its input") from exc

    async def end_input(self) -> None:
        if self.process and self.process.stdin and not self.process.stdin.is_closing():
            self.process.stdin.close()

    def read_messages(self) -> AsyncIterator[dict[str, Any]]:
        return self._read()

    async def _read(self) -> AsyncIterator[dict[str, Any]]:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        while line := await stdout.readline():
            line = line.strip()
            if not line.startswith(b"{"):
                continue  # some CLI builds print debug lines on stdout
            try:
                yield json.loads(line)
            except ValueError as exc:
                text = line.decode(errors="replace")
                raise claude_agent_sdk.CLIJSONDecodeError(text, exc) from exc
        code = await self.process.wait()
        if code != 0:
            # stderr goes to meridian's log, not into an error a client may read.
            log.warning("claude CLI exited with code %s: %s", code, self.stderr_tail)
            raise claude_agent_sdk.ProcessError("the Claude CLI exited", exit_code=code)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group, synchronously (safe from atexit and finally)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def close(self) -> None:
        """stdin EOF, then SIGTERM, then SIGKILL: every wait bounded (~3 s at worst)."""
        self._closed = True
        proc = self.process
        if proc is not None:
            with anyio.CancelScope(shield=True):
                await self.end_input()
                for sig, grace in ((None, 1.0), (signal.SIGTERM, 1.0), (signal.SIGKILL, 1.0)):
                    if sig is not None:
                        self.kill(sig)
                    with anyio.move_on_after(grace):
                        await proc.wait()
                    if proc.returncode is not None:
                        break
                # Anything the CLI started that outlived it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()


@dataclass(eq=False)
class ClaudeRun:
    """One live CLI run; iterate `messages` (SDK messages, up to the result) once."""

    name: str
    spec: RunSpec
    deadline: float
    transport: CliTransport
    client: ClaudeSDKClient
    root: Path
    transcript_dir: Path | None
    finished: bool = False
    _closed: bool = field(default=False, repr=False)

    async def messages(self) -> AsyncGenerator[Message, None]:
        stream = self.client.receive_response()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self.deadline):
                        message = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise Timeout(f"{self.name}: no answer in time; the CLI was stopped") from None
                if isinstance(message, claude_agent_sdk.ResultMessage):
                    self.finished = True
                yield message
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def interrupt(self) -> None:
        """Stop generation now (the upstream call is abandoned within milliseconds)."""
        with contextlib.suppress(Exception), anyio.move_on_after(0.5):
            await self.client.interrupt()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                if not self.finished and self.transport.is_ready():
                    await self.interrupt()
                with contextlib.suppress(Exception), anyio.move_on_after(8):
                    await self.client.disconnect()
            finally:
                self.transport.kill()
                shutil.rmtree(self.root, ignore_errors=True)
                if self.transcript_dir is not None:
                    shutil.rmtree(self.transcript_dir, ignore_errors=True)
                    with contextlib.suppress(OSError):  # only if no other run's is there
                        self.transcript_dir.parent.rmdir()


class ClaudeProcesses:
    """Concurrency slots, a bounded queue, and every live run (to kill them all on exit)."""

    def __init__(
        self, config: ClaudeCodeProviderConfig, *, name: str = "claude", cli_path: str | None = None
    ) -> None:
        self.config = config
        self.name = name  # the provider's, for messages
        self.cli_path = cli_path or default_cli()
        # The kernel kills the CLI if meridian dies without cleaning up (even SIGKILL); an
        # orphan would otherwise finish its answer before noticing stdin closed.
        setpriv = shutil.which("setpriv")
        self._launcher = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._waiting = 0
        self._active = 0
        self._runs: set[ClaudeRun] = set()
        self._scratch: Path | None = None

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def queue_depth(self) -> int:
        return self._waiting

    async def start(self) -> None:
        try:
            self.config.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # /ready and every request will say it is not logged in
            log.warning(
                "%s: cannot create config_dir %s: %s", self.name, self.config.config_dir, exc
            )
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="meridian-claude-"))
            atexit.register(self.kill_all)

    async def aclose(self) -> None:
        """Stop every run: SIGTERM, a second's grace, SIGKILL; safe to call twice."""
        runs = list(self._runs)
        for run in runs:
            run.transport.kill(signal.SIGTERM)
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                for run in runs:
                    tg.start_soon(run.close)
        self.kill_all()
        if self._scratch is not None:
            atexit.unregister(self.kill_all)
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def kill_all(self) -> None:
        for run in list(self._runs):
            run.transport.kill()

    async def _acquire(self) -> None:
        if self._slots.locked() and self._waiting >= self.config.max_queue:
            raise Overloaded(
                f"{self.name}: all {self.config.max_concurrency} CLI slots are busy and the queue "
                f"is full ({self.config.max_queue} waiting)",
                retry_after=QUEUE_RETRY_AFTER_S,
            )
        self._waiting += 1
        try:
            async with asyncio.timeout(self.config.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(
                f"{self.name}: no CLI slot became free within {self.config.queue_timeout_s:g} s",
                retry_after=QUEUE_RETRY_AFTER_S,
            ) from None
        finally:
            self._waiting -= 1
        self._active += 1

    def _release(self) -> None:
        self._active -= 1
        self._slots.release()

    @contextlib.asynccontextmanager
    async def run(
        self, spec: RunSpec, *, deadline: float | None = None
    ) -> AsyncIterator[ClaudeRun]:
        """A started run; leaving the block tears it down and frees its slot. ``deadline``
        (loop time) is the framework's; the provider's own request_timeout_s may be sooner."""
        if self._scratch is None:
            await self.start()
        await self._acquire()
        try:
            own = asyncio.get_running_loop().time() + self.config.request_timeout_s
            run = self._prepare(spec, own if deadline is None else min(own, deadline))
            self._runs.add(run)
            try:
                await self._launch(run)
                yield run
            finally:
                await run.close()
                self._runs.discard(run)
        finally:
            self._release()

    def _prepare(self, spec: RunSpec, deadline: float) -> ClaudeRun:
        assert self._scratch is not None
        root = Path(tempfile.mkdtemp(prefix="run-", dir=self._scratch))
        cwd, home = root / "cwd", root / "home"
        cwd.mkdir()
        home.mkdir()
        system_file = None
        if spec.system:
            system_file = root / "system.md"
            system_file.write_text(spec.system, encoding="utf-8")
        session_id = transcript_dir = None
        if spec.history or spec.deferred:
            session_id = str(uuid.uuid4())
            transcript_dir = self.config.config_dir / "projects" / project_key_for_directory(cwd)
            transcript_dir.mkdir(parents=True, exist_ok=True)
            lines = (json.dumps(e, ensure_ascii=False) for e in transcript(spec, session_id, cwd))
            (transcript_dir / f"{session_id}.jsonl").write_text(
                "\n".join(lines) + "\n", encoding="utf-8"
            )
        transport = CliTransport(
            self._launcher + run_argv(self.cli_path, spec, system_file, session_id),
            run_env(self.config, spec, home, cwd),
            cwd,
        )
        # Only what the SDK's own Query reads: the CLI's flags are in the transport's argv.
        options = ClaudeAgentOptions(
            verbatim_prompts=True,
            mcp_servers=_mcp_servers(spec),
            hooks={"PreToolUse": [HookMatcher(matcher=None, hooks=[_defer_hook(spec)])]},
        )
        client = ClaudeSDKClient(options, transport)
        return ClaudeRun(self.name, spec, deadline, transport, client, root, transcript_dir)

    async def _launch(self, run: ClaudeRun) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(run.deadline):
                await run.client.connect()
                if run.spec.prompt is not None:
                    await run.client.query(_one(run.spec.prompt))
        except TimeoutError:
            raise Timeout(f"{self.name}: the CLI did not start in time") from None
        except claude_agent_sdk.ClaudeSDKError as exc:
            log.warning("claude CLI failed to start: %s; %s", exc, run.transport.stderr_tail)
            raise ApiError(f"{self.name}: could not start the CLI ({exc})", status=502) from exc
        log.debug("claude CLI ready in %.0f ms", (time.monotonic() - started) * 1000)


async def _one(content: Sequence[Mapping[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield {
        "type": "user",
        "message": {"role": "user", "content": list(content)},
        "parent_tool_use_id": None,
    }


def _mcp_servers(spec: RunSpec) -> dict[str, Any]:
    if not spec.tools:
        return {}
    deferred = spec.deferred

    def handler(name: str) -> Any:
        async def call(args: dict[str, Any]) -> dict[str, Any]:
            if deferred is not None and name == deferred.name:
                return {
                    "content": [dict(c) for c in deferred.content],
                    "is_error": deferred.is_error,
                }
            # Unreachable while the hook defers every other call; never run anything.
            return {"content": [{"type": "text", "text": "not executed"}], "is_error": True}

        return call

    tools = [
        SdkMcpTool(
            name=t.name,
            description=t.description,
            input_schema={"properties": {}, **t.input_schema, "type": "object"},
            handler=handler(t.name),
        )
        for t in spec.tools
    ]
    return {MCP_SERVER: create_sdk_mcp_server(MCP_SERVER, tools=tools)}


def _defer_hook(spec: RunSpec) -> Any:
    resumed = spec.deferred.tool_use_id if spec.deferred else None

    async def hook(data: HookInput, tool_use_id: str | None, ctx: HookContext) -> HookJSONOutput:
        # "defer" ends the run at the call, which becomes the client's tool_use; only the
        # call being resumed with the client's own result may run.
        output: PreToolUseHookSpecificOutput = {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow"
            if resumed is not None and tool_use_id == resumed
            else "defer",
        }
        return {"hookSpecificOutput": output}

    return hook
