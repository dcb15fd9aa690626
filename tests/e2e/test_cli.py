"""The `meridian` command as an operator runs it: a real process, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fakes import FakeOpenAI

MERIDIAN = [sys.executable, "-m", "meridian"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MERIDIAN, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("MERIDIAN_")
    }
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path / "home"), **extra)
    return env


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"meridian exited with {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("meridian did not come up")


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("meridian ")


def test_init_then_check(tmp_path: Path) -> None:
    path = tmp_path / "meridian.yaml"
    assert run("init", str(path)).returncode == 0
    assert run("init", str(path)).returncode == 1  # never overwrites silently
    env = clean_env(tmp_path, MERIDIAN_MASTER_KEY="sk-x", OPENAI_API_KEY="sk-o")
    out = run("check", "--config", str(path), env=env)
    assert out.returncode == 0, out.stderr
    assert "o3-mini" in out.stdout and "gemini-2.5-flash" in out.stdout


def test_check_names_a_missing_variable(tmp_path: Path) -> None:
    path = tmp_path / "meridian.yaml"
    path.write_text("server:\n  master_key: ${MERIDIAN_MASTER_KEY}\n")
    out = run("check", "--config", str(path), env=clean_env(tmp_path))
    assert out.returncode == 2
    assert "MERIDIAN_MASTER_KEY" in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr


def test_check_reports_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "server: {listen: nope}\nproviders: {x: {type: openai, timeout_s: -1}}\n"
        "models: {a: {provider: y, model: m}}\n"
    )
    out = run("check", "--config", str(path), env=clean_env(tmp_path))
    assert out.returncode == 2
    assert "server.listen" in out.stderr and "providers.x.timeout_s" in out.stderr


def test_check_live_against_a_fake(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        json.dumps(
            {
                "server": {"master_key": "k"},
                "providers": {"oai": {"type": "openai", "base_url": fake_openai.url}},
                "models": {
                    "good": {"provider": "oai", "model": "gpt-4o"},
                    "bad": {"provider": "oai", "model": "gpt-4o-mini"},
                },
            }
        )
    )
    fake_openai.reply_text("pong")
    for _ in range(3):  # the first attempt and router.retries (2) more: the same core
        fake_openai.reply_server_error()
    out = run("check", "--live", "--config", str(path), env=clean_env(tmp_path))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any("good" in line and "ok" in line and "pong" in line for line in lines)
    assert any("bad" in line and "error" in line for line in lines)
    assert "oai/gpt-4o-mini" in out.stdout and "(api_error)" in out.stdout


def test_serve_on_defaults_two_listeners_and_sigterm(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    p1, p2 = free_port(), free_port()
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        json.dumps(
            {
                "server": {"listen": [f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"]},
                "storage": {"path": str(tmp_path / "db" / "m.db")},
                "providers": {"oai": {"type": "openai", "base_url": fake_openai.url}},
                "models": {"gpt-test": {"provider": "oai", "model": "gpt-4o"}},
            }
        )
    )
    proc = subprocess.Popen(
        [*MERIDIAN, "serve"],
        env=clean_env(tmp_path, MERIDIAN_CONFIG=str(cfg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_up(f"http://127.0.0.1:{p1}", proc)
        key_file = tmp_path / "db" / "master_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        for port in (p1, p2):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                data=json.dumps(
                    {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
                ).encode(),
                headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.load(resp)["choices"][0]["message"]["content"] == "pong from gpt-4o"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert key.encode() not in out + err


def test_serve_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        out = run("serve", "--port", str(port), env=clean_env(tmp_path), timeout=30)
    assert out.returncode == 1
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_auth_status_when_not_logged_in(tmp_path: Path) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        json.dumps(
            {
                "providers": {
                    "sub": {"type": "claude-code", "config_dir": str(tmp_path / "claude")}
                },
                "models": {"claude-haiku-4-5": {"provider": "sub", "model": "haiku"}},
            }
        )
    )
    out = run("auth", "status", "--json", "--config", str(cfg), env=clean_env(tmp_path))
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["logged_in"] is False and report["config_dir"] == str(tmp_path / "claude")
    assert "meridian auth login" in report["detail"]
    out = run("auth", "status", "--config", str(cfg), "--provider", "nope", env=clean_env(tmp_path))
    assert out.returncode == 2 and "no claude-code provider named 'nope'" in out.stderr


def test_defaults_include_the_subscription_aliases(tmp_path: Path) -> None:
    out = run("check", env=clean_env(tmp_path))
    assert out.returncode == 0, out.stderr
    for alias in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"):
        assert alias in out.stdout
