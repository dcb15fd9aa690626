"""``meridian serve`` as a child process, for the tests that signal, reload and kill it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import yaml

MERIDIAN = [sys.executable, "-m", "meridian"]
KEY = "sk-lifecycle-master-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def write_config(
    path: Path,
    port: int,
    fake_url: str,
    models: dict[str, Any],
    limits: dict[str, Any] | None = None,
    **server: Any,
) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": [f"127.0.0.1:{port}"], "master_key": KEY, **server},
                "limits": limits or {},
                "storage": {"path": str(path.parent / "meridian.db")},
                "providers": {
                    "ant": {"type": "anthropic", "api_key": "sk-a", "base_url": fake_url}
                },
                "models": models,
            }
        )
    )


class Served:
    """``meridian serve`` as a child process, its output collected."""

    def __init__(self, config: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*MERIDIAN, "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        )  # fmt: skip
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"meridian exited: {self.stderr}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("meridian did not come up")

    @staticmethod
    def _drain(pipe: Any, into: list[bytes]) -> None:
        for line in pipe:
            into.append(line)

    @property
    def stdout(self) -> str:
        return b"".join(self.out).decode()

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode()

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        for t in self._threads:
            t.join(5)
        return code

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=KEY, max_retries=0)
