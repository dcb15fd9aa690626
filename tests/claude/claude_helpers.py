"""Helpers for the Claude provider tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from fakes import FakeAnthropic
from meridian.config import ClaudeCodeProviderConfig
from meridian.model import Collector, Event, Message, Request, Response, TextBlock
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider

MARK = f"meridian-test-{uuid.uuid4()}"
OAUTH_TOKEN = "sk-ant-oat01-fake-access-token"


def cli_pids() -> list[int]:
    """Live processes started by this test session (by the mark in their environment)."""
    needle = f"MERIDIAN_TEST_MARK={MARK}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids


def wait_gone(pids: list[int] | None = None, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in cli_pids() if pids is None or p in pids]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def write_oauth_login(config_dir: Path, *, expires_in_s: float = 3600, **extra: Any) -> None:
    """A stored subscription login as ``claude auth login`` leaves it (fake tokens)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    oauth = {
        "accessToken": OAUTH_TOKEN,
        "refreshToken": "sk-ant-ort01-fake-refresh-token",
        "expiresAt": int((time.time() + expires_in_s) * 1000),
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "max",
        "rateLimitTier": "default_claude_max_5x",
        **extra,
    }
    path = config_dir / ".credentials.json"
    path.write_text(json.dumps({"claudeAiOauth": oauth}))
    path.chmod(0o600)


def make_config(
    tmp_path: Path, fake: FakeAnthropic, *, api_key: bool = True, **fields: Any
) -> ClaudeCodeProviderConfig:
    env = {"ANTHROPIC_BASE_URL": fake.url, "MERIDIAN_TEST_MARK": MARK}
    if api_key:
        env["ANTHROPIC_API_KEY"] = "dummy"
    env.update(fields.pop("env", {}))
    return ClaudeCodeProviderConfig(
        type="claude-code", config_dir=tmp_path / "claude", env=env, **fields
    )


def ask(text: str, model: str = "haiku", **fields: Any) -> Request:
    return Request(model=model, messages=(Message("user", (TextBlock(text),)),), **fields)


async def run(
    provider: ClaudeCodeProvider, request: Request, ctx: CallContext | None = None
) -> tuple[list[Event], Response]:
    events: list[Event] = []
    async with aclosing(provider.stream(request, ctx or CallContext("test"))) as stream:
        async for event in stream:
            events.append(event)
    return events, Collector().feed_all(events)


def upstream_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation as the fake received it, without the CLI's own system-role notes."""
    return [m for m in body["messages"] if m["role"] != "system"]


async def eventually(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def listing(path: Path) -> list[str] | None:
    """A directory's entries, or None when it does not exist (sync: fine from async tests)."""
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else None


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
