"""Helpers for the deployment tests: the `meridian` command as a process, in a clean
environment, and a served gateway waited for without sleeping blindly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

MERIDIAN = [sys.executable, "-m", "meridian"]
REPO = Path(__file__).resolve().parents[2]
ANSIBLE_BIN = REPO / ".venv-ansible" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any MERIDIAN_* or provider key variable, with a
    fresh HOME: what a new user on a new machine has."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_AUTH_TOKEN"))
        and not k.startswith(("MERIDIAN_", "XDG_", "ANTHROPIC_", "OPENAI_", "GEMINI_"))
    }
    env.update(HOME=str(home), **extra)
    return env


def meridian(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MERIDIAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until ``url``/health answers 200; fails at once if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"meridian exited with {proc.returncode}:\n{out}\n{err}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url}/health did not answer within {timeout} s")


@contextmanager
def serving(
    argv: Sequence[str], url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run ``argv`` (a meridian serve) until the block ends, then SIGTERM it and check that
    it stopped cleanly. Its output is on ``proc.output`` afterwards."""
    proc = subprocess.Popen(
        list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_healthy(url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        proc.output = out + err  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.output  # type: ignore[attr-defined]


def get(url: str, key: str | None = None, **headers: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    if key is not None:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ansible_env(home: Path, **extra: str) -> dict[str, str]:
    """A controller environment of its own: none of this machine's pip or proxy settings
    leaks into the target through the chroot connection."""
    return {
        "PATH": f"{ANSIBLE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANSIBLE_CONFIG": str(REPO / "deploy" / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        **extra,
    }
