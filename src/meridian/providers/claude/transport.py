"""The CLI as a child process: the SDK's `Transport`, NDJSON over its stdio.

The CLI runs in its own session (process group), so that a stop reaches everything it
started. Two things happen here rather than in the SDK's message stream, because they must
happen the moment a line arrives:

- stderr is drained into a bounded tail, for meridian's log (never for a client);
- the upstream stopping an answer at ``max_tokens`` freezes the CLI (SIGSTOP) as soon as the
  line saying so is read. Without that, the CLI calls the model again at once with its own
  "Output token limit hit. Resume directly" turn, up to three times, and nothing tells it
  not to; a frozen process does nothing more, and is then killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import claude_agent_sdk
from claude_agent_sdk import Transport

log = logging.getLogger("meridian.claude")

_LINE_LIMIT = 64 * 1024 * 1024
_STDERR_TAIL = 4096
_MAX_TOKENS_STOP = b'"stop_reason":"max_tokens"'


class CliTransport(Transport):
    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self._argv, self._env, self._cwd = list(argv), dict(env), cwd
        self.process: asyncio.subprocess.Process | None = None
        self._stderr: deque[bytes] = deque(maxlen=64)
        self._stderr_task: asyncio.Task[None] | None = None
        self._closed = False
        self.frozen = False  # stopped at an upstream max_tokens; it must be killed, not resumed

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

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
                message = json.loads(line)
            except ValueError as exc:
                text = line.decode(errors="replace")
                raise claude_agent_sdk.CLIJSONDecodeError(text, exc) from exc
            if _MAX_TOKENS_STOP in line and _main_max_tokens_stop(message):
                self.signal(signal.SIGSTOP)
                self.frozen = True
            yield message
        code = await self.process.wait()
        if code != 0:
            # stderr goes to meridian's log, not into an error a client may read.
            log.warning("claude CLI exited with code %s: %s", code, self.stderr_tail)
            raise claude_agent_sdk.ProcessError("the Claude CLI exited", exit_code=code)

    def signal(self, sig: int) -> None:
        """Signal the whole process group, synchronously (safe from atexit and finally)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def rss_mb(self) -> float:
        """The CLI's resident memory now (0 when it is gone)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except (OSError, TypeError):
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def close(self) -> None:
        """End of input, then SIGTERM, then SIGKILL: every wait bounded (~3 s at worst). A
        frozen CLI is killed at once: it must not wake up and call the model again."""
        self._closed = True
        proc = self.process
        if proc is not None:
            steps = ((signal.SIGKILL, 1.0),) if self.frozen else _GRACEFUL
            if not self.frozen:
                await self.end_input()
            for sig, grace in steps:
                if sig is not None:
                    self.signal(sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
                if proc.returncode is not None:
                    break
            # Anything the CLI started that outlived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()


_GRACEFUL: tuple[tuple[int | None, float], ...] = (
    (None, 1.0),
    (signal.SIGTERM, 1.0),
    (signal.SIGKILL, 1.0),
)


def _main_max_tokens_stop(message: Mapping[str, Any]) -> bool:
    event = message.get("event")
    return (
        message.get("type") == "stream_event"
        and message.get("parent_tool_use_id") is None
        and isinstance(event, Mapping)
        and event.get("type") == "message_delta"
        and (event.get("delta") or {}).get("stop_reason") == "max_tokens"
    )
