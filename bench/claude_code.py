"""The Claude subscription provider's cost per request: a cold CLI spawn against a live
process continuing its conversation (and warm spares for first turns), against the same
instant fake upstream reached directly, at 1 and 4 concurrent clients, in one run.

    .venv/bin/python bench/claude_code.py [--requests 8] [--update-docs]

Per streamed request: time to the first text token (p50, max) and CPU (meridian's process
plus its CLI children, from /proc and rusage, the fake upstream excluded). Rows:

- direct: the fake upstream over aiohttp, the floor;
- cold spawn: every request starts its own CLI (``continuation_ttl_s: 0``);
- live continuation: each client's follow-up turns, served by the process that answered
  its previous turn (each client warms one up first, outside the measurement);
- warm spare: each client's first turns of new conversations, one a second (a user's
  pace), answered by a spare started after the previous one (``warm_spares``).

Prints one markdown table; ``--update-docs`` also puts it into docs/claude-code.md between
the bench markers. Every spawn costs ~0.3-0.7 CPU-s here: the defaults make ~60.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from procs import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from meridian.config import ClaudeCodeProviderConfig  # noqa: E402
from meridian.model import BlockDelta, Message, Request, TextBlock  # noqa: E402
from meridian.providers.base import CallContext  # noqa: E402
from meridian.providers.claude import ClaudeCodeProvider  # noqa: E402
from meridian.providers.claude.command import BUNDLED_CLI  # noqa: E402

DOC = ROOT / "docs" / "claude-code.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TICK = os.sysconf("SC_CLK_TCK")
SYSTEM = "You are the house assistant. Answer in one short sentence."
PACE_S = 1.0  # between a client's first turns in the warm-spare rows


@dataclass
class Cell:
    path: str
    concurrency: int
    ttft: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    cli_cpu_s: float = 0.0

    def row(self) -> str:
        ms = [t * 1000 for t in self.ttft]
        n = len(ms)
        direct = self.path == "direct"  # the only process is the load generator
        cpu = "-" if direct else _num(self.cpu_s / n * 1000)
        cli = "-" if direct else _num(self.cli_cpu_s / n * 1000)
        return (
            f"| {self.path} | {self.concurrency} | {n} | {_num(statistics.median(ms))} | "
            f"{_num(max(ms))} | {cpu} | {cli} |"
        )


def _num(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class Cpu:
    """CPU seconds of this process and its children over a window, the fake excluded:
    children still alive are read from /proc, children reaped meanwhile from rusage."""

    def __init__(self, exclude: int) -> None:
        self.exclude = exclude

    def _children(self) -> dict[int, float]:
        me, out = os.getpid(), {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.exclude:
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                out[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
        return out

    def __enter__(self) -> Cpu:
        self._own = _rusage(resource.RUSAGE_SELF)
        self._reaped = _rusage(resource.RUSAGE_CHILDREN)
        self._live = self._children()
        return self

    def __exit__(self, *exc: object) -> None:
        live = self._children()
        reaped = _rusage(resource.RUSAGE_CHILDREN) - self._reaped
        # A child alive at the start and reaped since counts its whole life in rusage.
        reaped -= sum(t for pid, t in self._live.items() if pid not in live)
        self.children = reaped + sum(t - self._live.get(pid, 0.0) for pid, t in live.items())
        self.total = _rusage(resource.RUSAGE_SELF) - self._own + self.children


def _rusage(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def direct(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[float]]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "Say something."}],
    }
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01"}

    async def one() -> float:
        start = time.perf_counter()
        async with session.post(url + "/v1/messages", json=body, headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                if b"text_delta" in chunk:
                    ttft = time.perf_counter() - start
                    async for _ in resp.content.iter_any():
                        pass
                    return ttft
        raise RuntimeError("no text from the fake upstream")

    return one


class Client:
    """One caller (a client key) talking to the provider; keeps its conversation."""

    def __init__(self, provider: ClaudeCodeProvider, n: int) -> None:
        self.provider, self.caller = provider, f"key:bench{n}"
        self.messages: tuple[Message, ...] = ()

    async def turn(self, text: str, *, new: bool = False) -> float:
        if new:
            self.messages = ()
        self.messages += (Message("user", (TextBlock(text),)),)
        request = Request(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=self.messages,
            system=(TextBlock(SYSTEM),),
        )
        start = time.perf_counter()
        ttft, parts = 0.0, []
        ctx = CallContext("bench", caller=self.caller)
        async for event in self.provider.stream(request, ctx):
            if isinstance(event, BlockDelta) and hasattr(event.delta, "text"):
                ttft = ttft or time.perf_counter() - start
                parts.append(event.delta.text)
        self.messages += (Message("assistant", (TextBlock("".join(parts)),)),)
        return ttft


async def cell(
    name: str,
    c: int,
    fake: int,
    clients: list[Client],
    one: Callable[[Client, int], Awaitable[float]],
    rounds: int,
) -> Cell:
    out = Cell(name, c)
    with Cpu(fake) as cpu:
        for r in range(rounds):
            out.ttft += await asyncio.gather(*(one(client, r) for client in clients[:c]))
    out.cpu_s, out.cli_cpu_s = cpu.total, cpu.children
    return out


def provider(url: str, tmp: str, **fields: Any) -> ClaudeCodeProvider:
    config = ClaudeCodeProviderConfig(
        type="claude-code",
        config_dir=Path(tmp) / "claude",
        env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "dummy"},
        **fields,
    )
    return ClaudeCodeProvider("claude", config)


async def bench(requests: int, url: str, fake: int) -> list[Cell]:
    cells: list[Cell] = []
    async with aiohttp.ClientSession() as session:
        one = direct(session, url)
        await one()  # warm the connection pool
        for c in (1, 4):
            out = Cell("direct", c)
            for _ in range(requests * 4 // c):
                out.ttft += await asyncio.gather(*(one() for _ in range(c)))
            cells.append(out)
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        cold = provider(url, tmp, max_concurrency=4, continuation_ttl_s=0)
        live = provider(url, tmp, max_concurrency=4)
        spare = provider(url, tmp, max_concurrency=8, warm_spares=4)
        for p in (cold, live, spare):
            await p.start()
        try:
            await Client(cold, 99).turn("warm up")  # page cache, config dir
            for c in (1, 4):
                clients = [Client(cold, i) for i in range(c)]
                cells.append(
                    await cell(
                        "cold spawn",
                        c,
                        fake,
                        clients,
                        lambda cl, r: cl.turn(f"q{r}", new=True),
                        requests // c,
                    )
                )
            for c in (1, 4):
                clients = [Client(live, 10 * c + i) for i in range(c)]
                await asyncio.gather(*(cl.turn("hello") for cl in clients))  # a live process each
                cells.append(
                    await cell(
                        "live continuation",
                        c,
                        fake,
                        clients,
                        lambda cl, r: cl.turn(f"and then {r}?"),
                        2 * requests // c,
                    )
                )
            for c in (1, 4):
                clients = [Client(spare, 20 * c + i) for i in range(c)]
                await asyncio.gather(*(cl.turn("first", new=True) for cl in clients))

                async def paced(cl: Client, r: int) -> float:
                    await asyncio.sleep(PACE_S)
                    return await cl.turn(f"new topic {r}", new=True)

                before = spare.processes.counts["spare_hits"]
                out = await cell("warm spare", c, fake, clients, paced, max(2, requests // c))
                hits = spare.processes.counts["spare_hits"] - before
                out.path = f"warm spare ({hits} of {len(out.ttft)} from a spare)"
                cells.append(out)
        finally:
            for p in (cold, live, spare):
                await p.aclose()
    return cells


def table(cells: list[Cell]) -> str:
    cpu = platform.processor() or platform.machine()
    version = (BUNDLED_CLI.parent / "claude.version").read_text().split()[0]
    return "\n".join(
        [
            f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Claude CLI "
            f"{version}, upstream: bench/fake_upstream.py (instant, 20 text deltas).",
            "",
            "| path | concurrent | requests | first token p50 ms | max | CPU ms / request "
            "(meridian + CLI) | of which CLI |",
            "|---|---|---|---|---|---|---|",
            *(c.row() for c in cells),
        ]
    )


def update_docs(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="measured requests per cell")
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "fake_upstream.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()  # "fake upstream on ...": listening
        cells = asyncio.run(bench(args.requests, f"http://127.0.0.1:{port}", upstream.pid))
    finally:
        upstream.terminate()
        upstream.wait(10)
    text = table(cells)
    print(text)
    if args.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
