"""Upstream errors through the CLI, mapped to meridian's error tree; the not-logged-in state."""

from __future__ import annotations

import time
from contextlib import aclosing
from pathlib import Path

import pytest
from claude_helpers import ask, make_config, run, write_oauth_login

from fakes import FakeAnthropic
from meridian.config import ClaudeCodeProviderConfig
from meridian.errors import ApiError, MeridianError, Overloaded, RateLimited
from meridian.model import BlockDelta, Event
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider
from meridian.providers.claude.pool import ClaudeProcesses


@pytest.fixture
async def subscription(tmp_path: Path, fake_anthropic: FakeAnthropic) -> ClaudeCodeProvider:
    """A provider on a stored OAuth login (the real deployment's shape), not an API key."""
    config = make_config(tmp_path, fake_anthropic, api_key=False)
    write_oauth_login(config.config_dir)
    return ClaudeCodeProvider("claude", config)


async def _error(provider: ClaudeCodeProvider) -> MeridianError:
    await provider.start()
    try:
        with pytest.raises(MeridianError) as info:
            await run(provider, ask("hi"))
    finally:
        await provider.aclose()
    return info.value


@pytest.mark.slow
async def test_exhausted_subscription_window_is_429_with_reset_and_no_retry(
    subscription: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    resets = int(time.time()) + 2 * 3600
    fake_anthropic.reply_error(
        429,
        "rate limited",
        headers={
            "anthropic-ratelimit-unified-status": "rejected",
            "anthropic-ratelimit-unified-reset": str(resets),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
        },
    )
    err = await _error(subscription)

    assert isinstance(err, RateLimited) and err.status == 429
    assert err.should_retry is False
    assert err.headers()["x-should-retry"] == "false"
    assert abs(int(err.headers()["retry-after"]) - 7200) < 60
    assert time.strftime("%Y-%m-%dT%H:%M", time.gmtime(resets)) in err.message
    assert "five-hour" in err.message
    assert len(fake_anthropic.requests) == 1  # the CLI's own retry loop is off
    # The provider says so until the reset: /ready, /metrics and the dashboard read it.
    assert subscription.limited_until == resets
    assert subscription.status()["rate_limits"][0]["status"] == "rejected"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "cls", "expected_status"),
    [(429, RateLimited, 429), (529, Overloaded, 529), (500, ApiError, 500)],
)
async def test_upstream_errors_map_without_cli_retries(
    provider: ClaudeCodeProvider,
    fake_anthropic: FakeAnthropic,
    status: int,
    cls: type[MeridianError],
    expected_status: int,
) -> None:
    fake_anthropic.reply_error(status)
    with pytest.raises(cls) as info:
        await run(provider, ask("hi"))

    assert info.value.status == expected_status
    assert info.value.should_retry is not False  # transient: the client may retry
    assert info.value.message.startswith("claude: ")
    assert len(fake_anthropic.requests) == 1


@pytest.mark.slow
async def test_a_broken_stream_is_an_error_after_the_relayed_part(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_stream_error(after=4, text="one two three four five six")
    events: list[Event] = []
    with pytest.raises(MeridianError):
        async with aclosing(provider.stream(ask("hi"), CallContext("t"))) as stream:
            async for event in stream:
                events.append(event)

    assert any(isinstance(e, BlockDelta) for e in events)  # relayed as it came
    # No silent second call without streaming, whose answer could not be relayed.
    assert len(fake_anthropic.requests) == 1


@pytest.mark.slow
async def test_rejected_credentials_say_run_auth_login_not_401(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_auth_error()
    with pytest.raises(ApiError) as info:
        await run(provider, ask("hi"))

    assert info.value.status == 503
    assert info.value.should_retry is False
    assert "meridian auth login" in info.value.message


async def test_not_logged_in_fails_fast_without_a_process(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(tmp_path, fake_anthropic, api_key=False)
    provider = ClaudeCodeProvider("claude", config)

    assert await provider.ready() == (False, "not logged in: run `meridian auth login`")
    err = await _error(provider)
    assert isinstance(err, ApiError) and err.status == 503 and err.should_retry is False
    assert "meridian auth login" in err.message
    assert fake_anthropic.requests == []
    assert provider.in_flight == 0


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("oauth", (True, "ok")),
        ("expired-with-refresh", (True, "ok")),
        ("expired-without-refresh", (False, "login expired")),
        ("env-key", (True, "ok (credentials from the provider's env)")),
        ("nothing", (False, "not logged in: run `meridian auth login`")),
    ],
)
async def test_ready_reports_the_login_without_calling_anything(
    tmp_path: Path, setup: str, expected: tuple[bool, str]
) -> None:
    env = {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-long-lived"} if setup == "env-key" else {}
    config = ClaudeCodeProviderConfig(type="claude-code", config_dir=tmp_path, env=env)
    if setup == "oauth":
        write_oauth_login(tmp_path)
    elif setup == "expired-with-refresh":
        write_oauth_login(tmp_path, expires_in_s=-60)
    elif setup == "expired-without-refresh":
        write_oauth_login(tmp_path, expires_in_s=-60, refreshToken=None)
    ok, reason = await ClaudeCodeProvider("claude", config).ready()
    assert (ok, reason[: len(expected[1])]) == expected


async def test_a_cli_that_dies_at_start_is_a_502_and_leaves_nothing(
    tmp_path: Path, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    cli = tmp_path / "broken-claude"
    cli.write_text("#!/bin/sh\necho 'segfault in the CLI' >&2\nexit 3\n")
    cli.chmod(0o755)
    config = make_config(tmp_path, fake_anthropic)
    provider = ClaudeCodeProvider(
        "claude", config, processes=ClaudeProcesses(config, cli_path=str(cli))
    )
    err = await _error(provider)

    assert isinstance(err, ApiError) and err.status == 502
    assert "segfault" not in err.message  # stderr is for the server's log, not the client
    assert "segfault in the CLI" in caplog.text
    assert provider.in_flight == 0
    assert list((tmp_path / "claude").iterdir()) == []
