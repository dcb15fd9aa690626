"""``meridian auth status | login | refresh-token``: the CLI's own login, in the config dir."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from claude_helpers import OAUTH_TOKEN, make_config, write_oauth_login

from fakes import FakeAnthropic
from meridian.config import ClaudeCodeProviderConfig
from meridian.providers.claude import auth as claude_auth


def test_status_of_a_stored_subscription_login(tmp_path: Path) -> None:
    config = ClaudeCodeProviderConfig(type="claude-code", config_dir=tmp_path / "claude")
    write_oauth_login(config.config_dir, expires_in_s=3600)
    status = claude_auth.status(config)

    assert status.logged_in and status.method == "claude.ai"
    assert (status.subscription, status.plan) == ("max", "max_5x")
    assert status.refreshable
    assert status.access_token_expires_at is not None
    assert abs(status.access_token_expires_at.timestamp() - (time.time() + 3600)) < 60
    data = status.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["config_dir"] == str(config.config_dir)
    datetime.fromisoformat(data["access_token_expires_at"])
    assert OAUTH_TOKEN not in json.dumps(data) and OAUTH_TOKEN not in status.table()
    assert "max_5x" in status.table()


def test_status_when_not_logged_in_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-ambient")  # must not count
    config = ClaudeCodeProviderConfig(type="claude-code", config_dir=tmp_path / "claude")
    status = claude_auth.status(config)

    assert not status.logged_in and status.method == "none"
    assert "meridian auth login" in status.detail
    assert status.access_token_expires_at is None


FAKE_CLI = """#!/bin/sh
out={out}
printf '%s\\n' "$@" > "$out.args.$1.$2"
env > "$out.env.$1.$2"
if [ "$2" = status ]; then
  echo '{{"loggedIn": true, "authMethod": "claude.ai", "subscriptionType": "pro"}}'
fi
"""


def test_login_runs_the_cli_login_for_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-ambient")
    record = tmp_path / "record"
    cli = tmp_path / "claude"
    cli.write_text(FAKE_CLI.format(out=record))
    cli.chmod(0o755)
    config = ClaudeCodeProviderConfig(type="claude-code", config_dir=tmp_path / "srv" / "claude")

    assert claude_auth.login(config, cli_path=str(cli)) == 0

    args = Path(f"{record}.args.auth.login").read_text().split()
    assert args == ["auth", "login", "--claudeai"]
    env = dict(
        line.split("=", 1)
        for line in Path(f"{record}.env.auth.login").read_text().splitlines()
        if "=" in line
    )
    assert env["CLAUDE_CONFIG_DIR"] == str(config.config_dir)
    assert "ANTHROPIC_API_KEY" not in env
    assert stat.S_IMODE(config.config_dir.stat().st_mode) == 0o700
    err = capsys.readouterr().err
    assert "paste the code back" in err and "pro" in err  # the status after login


@pytest.mark.slow
def test_refresh_token_sends_one_tiny_request_through_the_cli(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(tmp_path, fake_anthropic, api_key=False)
    write_oauth_login(config.config_dir)

    assert claude_auth.refresh_token(config) == 0
    (request,) = fake_anthropic.requests
    assert request.headers["authorization"] == f"Bearer {OAUTH_TOKEN}"
    assert request.json["max_tokens"] == 16 and request.json["tools"] == []


@pytest.mark.slow
def test_refresh_token_reports_a_rejected_login(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(tmp_path, fake_anthropic)  # an API key the upstream rejects
    fake_anthropic.reply_auth_error()
    assert claude_auth.refresh_token(config) == 1


async def test_the_login_is_read_off_the_event_loop_once_per_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ClaudeCodeProviderConfig(type="claude-code", config_dir=tmp_path)
    write_oauth_login(tmp_path)
    now = [0.0]
    watch = claude_auth.LoginWatch(config, ttl_s=5, clock=lambda: now[0])
    readers: list[threading.Thread] = []
    real = claude_auth._read_json

    def read(path: Path) -> dict[str, Any]:
        readers.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(claude_auth, "_read_json", read)
    states = await asyncio.gather(*(watch.state() for _ in range(20)))
    assert set(states) == {(True, "ok")}
    assert readers and threading.main_thread() not in readers  # never on the event loop
    reads = len(readers)  # one read served all twenty calls

    (tmp_path / ".credentials.json").unlink()
    assert await watch.state() == (True, "ok")  # within the ttl: no read
    assert len(readers) == reads
    now[0] = 5.0
    assert (await watch.state())[0] is False  # a lost login shows within the ttl
