"""The CLI's command line, environment and transcript for a `RunSpec`: pure, no I/O.

Safety (each has a test on what the upstream received): no built-in tools (``--tools ""``),
no settings or CLAUDE.md (``--setting-sources=``), no MCP config but meridian's own, no
session files (``--no-session-persistence``), no slash commands, and an environment built
from scratch: only ``PATH`` and the locale come from meridian's own environment, so an
ambient ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_AUTH_TOKEN`` / ``ANTHROPIC_BASE_URL`` never
reaches the CLI unless the provider's ``env`` sets it. Prompts are marked verbatim by the
SDK (``@/etc/passwd`` is text, ``/cost`` is not a command).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import claude_agent_sdk

from meridian import __version__
from meridian.config import ClaudeCodeProviderConfig
from meridian.providers.claude.spec import RunSpec

BUNDLED_CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
MCP_SERVER = "meridian"
# Locale and search path: the only variables taken from meridian's own environment.
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
# Defaults the provider's ``env`` may override. Retries: the router decides, not the CLI's
# own loop of up to 10 attempts over minutes.
DEFAULT_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
    # No silent switch to another model: fallbacks are the router's, and visible.
    "CLAUDE_CODE_NO_MODEL_FALLBACK": "1",
}
# Always set for runs: what keeps one client request one upstream call of the model asked.
RUN_ENV = {
    "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
    "CLAUDE_AGENT_SDK_VERSION": claude_agent_sdk.__version__,
    "CLAUDE_AGENT_SDK_CLIENT_APP": f"meridian/{__version__}",
    # The SDK's Query reads these frames to tell when a run is over.
    "CLAUDE_CODE_SDK_READS_SESSION_STATE": "1",
    # Client tools keep their own names upstream (not mcp__meridian__name).
    "CLAUDE_AGENT_SDK_MCP_NO_PREFIX": "1",
    # A broken stream is an error, not a silent retry without streaming: the part already
    # relayed cannot be taken back, and the retry would arrive unstreamed.
    "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
    # A refusal ends the answer: no second call with the CLI's own "stopped by a safety
    # classifier" turn, and no switch to another model.
    "CLAUDE_CODE_DISABLE_REFUSAL_RETRY": "1",
    "CLAUDE_CODE_DISABLE_REFUSAL_FALLBACK": "1",
    # The client's tools as declared, without the CLI's DeferredToolPlaceholder.
    "ENABLE_TOOL_SEARCH": "false",
    # The context the CLI gathers for its own turns (its reminders, changed files, memory):
    # nothing a gateway's client asked for, and about half the CLI's CPU on a live turn.
    "CLAUDE_CODE_DISABLE_ATTACHMENTS": "1",
}


def default_cli() -> str:
    """The CLI bundled in the pinned SDK wheel; a ``claude`` on PATH only on platforms whose
    wheel has none."""
    if BUNDLED_CLI.exists():
        return str(BUNDLED_CLI)
    return shutil.which("claude") or str(BUNDLED_CLI)


def scrubbed_env(
    config: ClaudeCodeProviderConfig, home: Path, ambient: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The CLI's whole environment, for any CLI invocation (runs, ``auth``). ``home`` is a
    scratch directory that dies with the invocation; the CLI's temporary files go there too
    (it leaves a probe directory under ``$TMPDIR`` on every start, and its IPC socket)."""
    ambient = os.environ if ambient is None else ambient
    env = {k: ambient[k] for k in PASSED_THROUGH if k in ambient}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(DEFAULT_ENV)
    env["HOME"] = str(home)
    env.update(config.env)
    env["TMPDIR"] = str(home / "tmp")
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
    env.update(RUN_ENV, PWD=str(cwd))
    if spec.max_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(spec.max_tokens)
    if spec.thinking_budget is None:
        env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
    if spec.extra_body:
        env["CLAUDE_CODE_EXTRA_BODY"] = json.dumps(dict(spec.extra_body), separators=(",", ":"))
    if spec.resumes:
        # The transcript ends at the client's tool results: the CLI answers them at start.
        env["CLAUDE_CODE_RESUME_INTERRUPTED_TURN"] = "1"
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
    """The earlier turns as the CLI's own session file would hold them (one JSON object a
    line), each entry the child of the one before."""
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
    for i, turn in enumerate(spec.transcript_turns):
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
                "model": spec.model_id or spec.model,
                "content": list(turn["content"]),
                "stop_reason": _stop_reason(turn["content"]),
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        else:
            entry["message"] = {"role": "user", "content": list(turn["content"])}
            entry["promptSource"] = "sdk"
        entries.append(entry)
        parent = entry["uuid"]
    return entries


def _stop_reason(content: Sequence[Mapping[str, Any]]) -> str:
    # The CLI reads a turn without "end_turn" as interrupted and would ask to continue it.
    return "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
