"""A real redis-server for tests: its own temp dir, a unix socket, no persistence.

server = RedisServer(tmp_path).start()
settings = {"limits": {"redis_url": server.url}}
server.kill()      # SIGKILL, mid-run
server.start()     # the same socket again, empty
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


class RedisServer:
    def __init__(self, root: Path, password: str | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket = root / "redis.sock"
        self.password = password
        self.url = f"unix://{self.socket}" + (f"?password={password}" if password else "")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: run scripts/install-services")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.root),
             "--logfile", str(self.root / "redis.log"),
             *(["--requirepass", self.password] if self.password else [])],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        return self.command("PING") == "+PONG"

    def command(self, *words: str) -> str:
        """One command over a raw socket (no client library): a bulk string's value, or the
        first line of any other reply (``+OK``, ``:42``)."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(self.socket))
                if self.password:
                    sock.sendall(_encode("AUTH", self.password))
                    sock.recv(65536)
                sock.sendall(_encode(*words))
                lines = sock.recv(65536).decode().split("\r\n")
                # A bulk string: its value; anything else: the reply's first line.
                return lines[1] if lines[0].startswith("$") and lines[0] != "$-1" else lines[0]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.socket.unlink(missing_ok=True)

    def pause(self) -> None:
        """A Redis that hangs: accepts connections, answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.socket.unlink(missing_ok=True)


def _encode(*words: str) -> bytes:
    return "".join([f"*{len(words)}\r\n"] + [f"${len(w)}\r\n{w}\r\n" for w in words]).encode()
