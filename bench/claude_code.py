"""The Claude subscription provider's cost: provider -> real CLI -> instant fake upstream,
against the same fake upstream reached directly, at 1 and 4 concurrent requests.

    .venv/bin/python bench/claude_code.py [--requests 8] [--update-docs]

Measures, per streamed request: time to the first text token and to the end of the answer
(p50 and max), CPU seconds (meridian's process plus the CLI children it reaped), and the
peak RSS of each CLI process (VmHWM, sampled from /proc while it runs). Prints one markdown
table; ``--update-docs`` also puts it into docs/claude-code.md between the bench markers.

Every CLI spawn costs ~0.4 CPU-s on this kind of machine: the defaults make ~40 of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from procs import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from meridian.config import ClaudeCodeProviderConfig  # noqa: E402
from meridian.model import BlockDelta, Message, MessageStop, Request, TextBlock  # noqa: E402
from meridian.providers.base import CallContext  # noqa: E402
from meridian.providers.claude import ClaudeCodeProvider  # noqa: E402
from meridian.providers.claude.command import BUNDLED_CLI  # noqa: E402

DOC = ROOT / "docs" / "claude-code.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Sample:
    ttft: float
    total: float


@dataclass
class Cell:
    path: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    cpu_s: float = 0.0
    cli_cpu_s: float = 0.0
    peak_rss_mb: list[float] = field(default_factory=list)

    def row(self) -> str:
        ttft = [s.ttft * 1000 for s in self.samples]
        total = [s.total * 1000 for s in self.samples]
        n = len(self.samples)
        rss = f"{statistics.mean(self.peak_rss_mb):.0f}" if self.peak_rss_mb else "-"
        # Direct: the only process is the load generator, whose CPU is not the point.
        cpu = _num(self.cpu_s / n * 1000) if self.path != "direct" else "-"
        cli = _num(self.cli_cpu_s / n * 1000) if self.path != "direct" else "-"
        ms = [statistics.median(ttft), max(ttft), statistics.median(total), max(total)]
        cols = " | ".join(_num(v) for v in ms)
        return (f"| {self.path} | {self.concurrency} | {n} | {cols} | "
                f"{cpu} | {cli} | {rss} |")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _num(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class RssSampler:
    """Peak RSS (VmHWM) of every child of this process, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.02):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    status = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
                if f"\nPPid:\t{me}\n" not in status or "VmHWM:" not in status:
                    continue
                kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                self.peaks[int(entry)] = max(self.peaks.get(int(entry), 0), kb / 1024)


async def measure(
    cell: Cell, one: Callable[[], Awaitable[Sample]], requests: int
) -> Cell:
    own, kids = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    with RssSampler() as rss:
        for _ in range(0, requests, cell.concurrency):
            batch = min(cell.concurrency, requests - len(cell.samples))
            cell.samples += await asyncio.gather(*(one() for _ in range(batch)))
    # Children count once reaped: every CLI is, before its request's generator ends.
    cell.cli_cpu_s = _cpu(resource.RUSAGE_CHILDREN) - kids
    cell.cpu_s = _cpu(resource.RUSAGE_SELF) - own + cell.cli_cpu_s
    cell.peak_rss_mb = list(rss.peaks.values())
    return cell


def direct(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[Sample]]:
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "Say something."}]}
    headers = {"x-api-key": "dummy", "anthropic-version": "2023-06-01"}

    async def one() -> Sample:
        start = time.perf_counter()
        ttft = 0.0
        async with session.post(url + "/v1/messages", json=body, headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                if not ttft and b"text_delta" in chunk:
                    ttft = time.perf_counter() - start
        return Sample(ttft, time.perf_counter() - start)

    return one


def through(provider: ClaudeCodeProvider) -> Callable[[], Awaitable[Sample]]:
    request = Request(model="haiku", max_tokens=64,
                      messages=(Message("user", (TextBlock("Say something."),)),))

    async def one() -> Sample:
        start = time.perf_counter()
        ttft = end = 0.0
        async for event in provider.stream(request, CallContext("bench")):
            if not ttft and isinstance(event, BlockDelta):
                ttft = time.perf_counter() - start
            if isinstance(event, MessageStop):
                end = time.perf_counter() - start  # the client has its whole answer
        return Sample(ttft, end)

    return one


async def bench(requests: int, url: str) -> list[Cell]:
    cells: list[Cell] = []
    async with aiohttp.ClientSession() as session:
        one = direct(session, url)
        await one()  # warm the connection pool
        for c in (1, 4):
            cells.append(await measure(Cell("direct", c), one, requests * 4))
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        config = ClaudeCodeProviderConfig(
            type="claude-code", config_dir=Path(tmp) / "claude", max_concurrency=4,
            env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "dummy"})
        provider = ClaudeCodeProvider("claude", config)
        await provider.start()
        try:
            await through(provider)()  # first start: page cache, config dir
            for c in (1, 4):
                cells.append(await measure(Cell("provider → CLI", c), through(provider),
                                           requests))
        finally:
            await provider.aclose()
    return cells


def table(cells: list[Cell]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"Claude CLI {(BUNDLED_CLI.parent / 'claude.version').read_text().split()[0]}, "
        "upstream: bench/fake_upstream.py (instant, 20 text deltas).",
        "",
        "| path | concurrent | requests | first token p50 ms | max | answer p50 ms | max "
        "| CPU ms / request (meridian + CLI) | of which CLI | CLI peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(c.row() for c in cells),
    ]
    return "\n".join(lines)


def update_docs(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="CLI runs per concurrency level")
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "fake_upstream.py"), "--port", str(port)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        upstream.stdout.readline()  # "fake upstream on ...": listening
        cells = asyncio.run(bench(args.requests, f"http://127.0.0.1:{port}"))
    finally:
        upstream.terminate()
        upstream.wait(10)
    text = table(cells)
    print(text)
    if args.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
