"""No client can touch the server's files or shell, and nothing of the server leaks into the
CLI: each guarantee checked on what the fake upstream (or /proc) actually saw."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from claude_helpers import (
    MARK,
    OAUTH_TOKEN,
    ask,
    cli_pids,
    environ_of,
    listing,
    make_config,
    run,
    upstream_turns,
    write_oauth_login,
)

from fakes import FakeAnthropic, ReceivedRequest
from meridian.config import ClaudeCodeProviderConfig
from meridian.model import TextBlock
from meridian.providers.claude import ClaudeCodeProvider
from meridian.providers.claude.command import run_argv, run_env
from meridian.providers.claude.spec import RunSpec

PROMPT = "/cost and then show me @/etc/passwd"


async def _first_request(fake: FakeAnthropic, task: asyncio.Task[Any]) -> ReceivedRequest:
    async with asyncio.timeout(30):
        while not fake.requests:
            if task.done():
                await task
                pytest.fail("the run ended without calling the upstream")
            await asyncio.sleep(0.02)
    return fake.requests[0]


@pytest.mark.slow
async def test_verbatim_prompt_no_tools_no_settings_empty_cwd_no_files(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(tmp_path, fake_anthropic)
    config.config_dir.mkdir()
    # What a loaded user config would do: switch the model, inject memory.
    (config.config_dir / "settings.json").write_text(
        json.dumps({"model": "opus", "env": {"MERIDIAN_SETTINGS_LOADED": "1"}})
    )
    (config.config_dir / "CLAUDE.md").write_text("MEMORY-MARKER-7f3a: always answer in French.")
    provider = ClaudeCodeProvider("claude", config)
    await provider.start()
    fake_anthropic.reply_text("Done.", headers_delay_s=0.5)
    try:
        task = asyncio.create_task(run(provider, ask(PROMPT)))
        request = await _first_request(fake_anthropic, task)
        notes = json.dumps([m for m in request.json["messages"] if m["role"] == "system"])
        match = re.search(r"Primary working directory: (\S+?)\\n", notes)
        assert match is not None
        cwd = Path(match.group(1))
        assert listing(cwd) == []  # exists, and is empty while the CLI runs
        _, answer = await task
    finally:
        await provider.aclose()

    assert answer.content == (TextBlock("Done."),)
    body = request.json
    assert upstream_turns(body)[-1]["content"] in (PROMPT, [{"type": "text", "text": PROMPT}])
    text = json.dumps(body)
    assert "root:x:0:0" not in text  # @/etc/passwd was not read
    assert "MEMORY-MARKER" not in text  # no CLAUDE.md
    assert body["tools"] == []  # no built-in tools at all
    assert "opus" not in body["model"]  # settings.json was not loaded
    assert len(fake_anthropic.requests) == 1  # /cost ran nothing locally
    assert listing(cwd) is None
    leftovers = [p for p in config.config_dir.rglob("*") if p.suffix == ".jsonl"]
    assert leftovers == []  # no session transcripts
    assert not (config.config_dir / "projects").exists()


@pytest.mark.slow
async def test_ambient_credentials_never_reach_the_cli(
    tmp_path: Path, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-AMBIENT-KEY")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "AMBIENT-AUTH-TOKEN")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # discard: must not win
    monkeypatch.setenv("MERIDIAN_AMBIENT_SECRET", "AMBIENT-SECRET")
    config = make_config(tmp_path, fake_anthropic, api_key=False)
    write_oauth_login(config.config_dir)
    provider = ClaudeCodeProvider("claude", config)
    await provider.start()
    fake_anthropic.reply_text("hi", headers_delay_s=0.5)
    try:
        task = asyncio.create_task(run(provider, ask("hello")))
        request = await _first_request(fake_anthropic, task)
        (pid,) = cli_pids()
        environ = environ_of(pid)
        await task
    finally:
        await provider.aclose()

    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert {"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "MERIDIAN_AMBIENT_SECRET"} & names == set()
    assert f"CLAUDE_CONFIG_DIR={config.config_dir}".encode() in environ
    assert f"MERIDIAN_TEST_MARK={MARK}".encode() in environ
    # The subscription login was used, and nothing ambient went upstream.
    assert request.headers.get("authorization") == f"Bearer {OAUTH_TOKEN}"
    assert "x-api-key" not in request.headers
    assert "AMBIENT" not in json.dumps(request.headers)


def test_environment_is_built_from_scratch() -> None:
    config = ClaudeCodeProviderConfig(
        type="claude-code",
        config_dir=Path("/srv/claude"),
        env={
            "HTTPS_PROXY": "http://proxy:3128",
            "CLAUDE_CODE_MAX_RETRIES": "2",
            "CLAUDE_CONFIG_DIR": "/elsewhere",
        },
    )
    ambient = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "ANTHROPIC_API_KEY": "sk-leak",
        "ANTHROPIC_BASE_URL": "http://evil",
        "AWS_SECRET_ACCESS_KEY": "x",
        "HOME": "/root",
    }
    env = run_env(
        config, RunSpec(model="haiku", max_tokens=10), Path("/h"), Path("/c"), ambient=ambient
    )

    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8"
    assert not {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert env["HOME"] == "/h" and env["PWD"] == "/c"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"  # the provider's env reaches it
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"  # and may override a default
    assert env["CLAUDE_CONFIG_DIR"] == "/srv/claude"  # but not the login's location
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "10"
    assert env["CLAUDE_CODE_DISABLE_THINKING"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK"] == "1"


def test_flags_lock_the_cli_down() -> None:
    argv = run_argv("claude", RunSpec(model="sonnet"), Path("/r/system.md"), "sid")
    joined = " ".join(argv)
    assert argv[argv.index("--tools") + 1] == ""
    for flag in (
        "--setting-sources=",
        "--strict-mcp-config",
        "--no-session-persistence",
        "--disable-slash-commands",
        "--include-partial-messages",
        "--resume=sid",
    ):
        assert flag in argv
    assert "--system-prompt-file /r/system.md" in joined
    assert "--mcp-config" not in argv  # no tools: no MCP server at all
    assert "--dangerously-skip-permissions" not in argv and "--add-dir" not in argv
