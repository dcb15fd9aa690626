"""The Claude subscription login: ``meridian auth status | login | refresh-token``.

The login is the official CLI's own OAuth login, stored in the provider's ``config_dir``
(``.credentials.json``, mode 0600). meridian never reads the tokens out for its own use: it
only looks at whether they exist and when the access token expires, and every command here
runs the bundled CLI with the same scrubbed environment as a request does.

`login_state` is the cheap check behind ``/ready`` and the provider's fail-fast (no process,
no model call); `LoginWatch` runs it in a worker thread at most once every few seconds, so
no call reads files on the event loop. `status` asks the CLI (``claude auth status --json``)
and adds the expiry.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.config import ClaudeCodeProviderConfig
from meridian.providers.claude.command import default_cli, scrubbed_env

NOT_LOGGED_IN = "not logged in: run `meridian auth login`"
# Credentials the CLI accepts from its environment instead of a stored login.
ENV_CREDENTIALS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


@dataclass(frozen=True, slots=True)
class AuthStatus:
    logged_in: bool
    method: str  # "claude.ai" (subscription), "api_key", "oauth_token", "none"
    config_dir: Path
    subscription: str | None = None  # "pro", "max", ...
    plan: str | None = None  # e.g. "max_5x"
    email: str | None = None
    # The access token's expiry; the CLI renews it with the refresh token when needed.
    access_token_expires_at: datetime | None = None
    refreshable: bool = False
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["config_dir"] = str(self.config_dir)
        expiry = self.access_token_expires_at
        out["access_token_expires_at"] = expiry.isoformat() if expiry else None
        return out

    def table(self) -> str:
        expiry = self.access_token_expires_at
        rows = [
            ("logged in", "yes" if self.logged_in else "no"),
            ("method", self.method),
            ("subscription", self.subscription or "-"),
            ("plan", self.plan or "-"),
            ("email", self.email or "-"),
            ("access token expires", _when(expiry) if expiry else "-"),
            ("refresh token", "yes (renewed automatically)" if self.refreshable else "no"),
            ("config dir", str(self.config_dir)),
        ]
        if self.detail:
            rows.append(("note", self.detail))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def login_state(config: ClaudeCodeProviderConfig) -> tuple[bool, str]:
    """(usable?, reason) from the files alone: no process, no network."""
    if any(config.env.get(k) for k in ENV_CREDENTIALS):
        return True, "ok (credentials from the provider's env)"
    oauth = _oauth(config)
    if oauth.get("accessToken"):
        expiry = _expiry(oauth)
        if oauth.get("refreshToken") or expiry is None or expiry > datetime.now(UTC):
            return True, "ok"
        return False, "login expired and cannot be renewed: run `meridian auth login`"
    if _read_json(config.config_dir / ".claude.json").get("primaryApiKey"):
        return True, "ok (API key login)"
    return False, NOT_LOGGED_IN


class LoginWatch:
    """`login_state`, read off the event loop and kept for ``ttl_s``: a login made (or lost)
    while meridian runs shows within that time; `forget` makes the next call read again (an
    upstream that rejected the credentials)."""

    def __init__(
        self,
        config: ClaudeCodeProviderConfig,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.ttl_s, self._clock = config, ttl_s, clock
        self._state: tuple[bool, str] | None = None
        self._read_at = 0.0
        self._reading: asyncio.Future[tuple[bool, str]] | None = None

    async def state(self) -> tuple[bool, str]:
        if self._state is not None and self._clock() - self._read_at < self.ttl_s:
            return self._state
        if self._reading is None:  # one read at a time, however many calls wait for it
            self._reading = asyncio.ensure_future(asyncio.to_thread(login_state, self.config))
        reading = self._reading
        try:
            state = await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None
        self._state, self._read_at = state, self._clock()
        return state

    def forget(self) -> None:
        self._state = None


def status(config: ClaudeCodeProviderConfig, *, cli_path: str | None = None) -> AuthStatus:
    """What the CLI reports for the configured login, plus the access token's expiry."""
    oauth = _oauth(config)
    base = AuthStatus(
        logged_in=False,
        method="none",
        config_dir=config.config_dir,
        access_token_expires_at=_expiry(oauth),
        refreshable=bool(oauth.get("refreshToken")),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="meridian-auth-") as home:
            (Path(home) / "tmp").mkdir()  # the CLI's TMPDIR: gone with the home
            proc = subprocess.run(
                [cli_path or default_cli(), "auth", "status", "--json"],
                env=scrubbed_env(config, Path(home)),
                cwd=home,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        report = json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        ok, reason = login_state(config)
        return replace(base, logged_in=ok, detail=f"the CLI could not be asked ({exc}); {reason}")
    method = str(report.get("authMethod") or "none")  # claude.ai, oauth_token, api_key
    logged_in = bool(report.get("loggedIn"))
    return AuthStatus(
        logged_in=logged_in,
        method=method,
        config_dir=config.config_dir,
        subscription=report.get("subscriptionType"),
        plan=report.get("planTier"),
        email=report.get("email"),
        access_token_expires_at=base.access_token_expires_at,
        refreshable=base.refreshable,
        detail="" if logged_in else NOT_LOGGED_IN,
    )


def login(config: ClaudeCodeProviderConfig, *, cli_path: str | None = None) -> int:
    """The CLI's own interactive login (a URL to open anywhere, a code to paste back: works
    over SSH), writing into ``config_dir``. Returns the exit code."""
    config.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(
        f"Signing in to Claude for {config.config_dir}.\n"
        "Open the URL the CLI prints in any browser, sign in with the subscription's "
        "account, and paste the code back here.\n",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="meridian-auth-") as home:
        (Path(home) / "tmp").mkdir()  # the CLI's TMPDIR: gone with the home
        code = subprocess.call(
            [cli_path or default_cli(), "auth", "login", "--claudeai"],
            env=scrubbed_env(config, Path(home)),
            cwd=home,
        )
    if code == 0:
        print("\n" + status(config, cli_path=cli_path).table(), file=sys.stderr)
    return code


def refresh_token(config: ClaudeCodeProviderConfig, *, cli_path: str | None = None) -> int:
    """Make the CLI renew an expired access token now, by sending it one tiny request (the CLI
    refreshes before calling the API; there is no separate command for it). Exit code 0 when
    the login works afterwards."""
    before = _expiry(_oauth(config))
    with tempfile.TemporaryDirectory(prefix="meridian-auth-") as home:
        (Path(home) / "tmp").mkdir()  # the CLI's TMPDIR: gone with the home
        env = scrubbed_env(config, Path(home))
        env.update(CLAUDE_CODE_MAX_OUTPUT_TOKENS="16", CLAUDE_CODE_DISABLE_THINKING="1")
        argv = [
            cli_path or default_cli(),
            "-p",
            "Reply with the single word OK.",
            "--model",
            "haiku",
            "--tools",
            "",
            "--setting-sources=",
            "--strict-mcp-config",
            "--no-session-persistence",
            "--output-format",
            "json",
        ]
        try:
            proc = subprocess.run(
                argv, env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False
            )
            result = json.loads(proc.stdout or "{}")
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            print(f"refresh failed: {exc}", file=sys.stderr)
            return 1
    after = _expiry(_oauth(config))
    if proc.returncode != 0 or result.get("is_error"):
        print(f"refresh failed: {result.get('result') or proc.stderr.strip()}", file=sys.stderr)
        return 1
    renewed = after is not None and (before is None or after > before)
    print(
        f"login works; access token {'renewed' if renewed else 'still valid'}"
        + (f", expires {_when(after)}" if after else ""),
        file=sys.stderr,
    )
    return 0


def _oauth(config: ClaudeCodeProviderConfig) -> dict[str, Any]:
    oauth = _read_json(config.config_dir / ".credentials.json").get("claudeAiOauth")
    return oauth if isinstance(oauth, dict) else {}


def _expiry(oauth: dict[str, Any]) -> datetime | None:
    ms = oauth.get("expiresAt")
    return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, int | float) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _when(moment: datetime) -> str:
    minutes = (moment.timestamp() - time.time()) / 60
    rel = f"in {minutes:.0f} min" if minutes >= 0 else f"{-minutes:.0f} min ago"
    return f"{moment.isoformat(timespec='seconds')} ({rel})"
