"""The processes under test: spawn, wait for health, read CPU and RSS from /proc, stop.

CPU and RSS are summed over the process and its descendants, so a server that forks workers
(or a console-script shim that execs one) is measured whole.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / TICK


def machine_busy_s() -> float:
    """CPU seconds the machine has been busy so far (``/proc/stat``: user, nice, system,
    irq and softirq: the kernel charges a process for some of its network interrupts and
    not for others; steal left out)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / TICK


def own_cpu_s() -> float:
    """CPU seconds of this process and of its finished children (wrk runs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rss_mb(pid: int) -> float:
    """VmRSS of the process tree, in MB (2**20 bytes)."""
    kb = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        except OSError:
            continue
    return kb / 1024


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int:
    """Status of a plain GET on 127.0.0.1, or 0 if nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                      .encode())
            head = s.recv(64)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


@dataclass
class Server:
    """A server under test. `launch(port)` writes any config it needs and returns argv."""

    name: str
    launch: Callable[[int], list[str]]
    health: str
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> float:
        """Spawn on a fresh port and wait for health; returns spawn-to-200 in seconds."""
        self.port = free_port()
        cmd = self.launch(self.port)
        with self.log.open("ab") as log:
            t0 = time.perf_counter()
            # A new session, so that stop() signals exactly this group and nothing else.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if http_get_status(self.port, self.health) == 200:
                return time.perf_counter() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not answer GET {self.health} with 200 "
                           f"(exit {self.proc.returncode}); log {self.log}:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
