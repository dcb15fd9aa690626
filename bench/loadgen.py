"""Load generation: wrk for throughput and latency, a small aiohttp client for the rest.

wrk (C, epoll) is the default so that the load generator does not eat the CPU it measures;
its Lua ``done()`` hook prints the summary as one JSON line, so nothing is scraped from its
human-readable output. The aiohttp fallback (``--tool python``) exists for machines without
wrk; its numbers are lower and say so in the table. Time to first streamed chunk is always
measured with aiohttp, one request at a time, since wrk only sees whole responses.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from payloads import Request, check_response


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class TtftResult:
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    samples: int


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of non-empty `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ensure_wrk(install: bool) -> bool:
    """True when wrk is on PATH, installing Debian's package first if allowed and possible."""
    if shutil.which("wrk"):
        return True
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print("wrk not found: apt-get install -y wrk", flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            print(done.stderr[-2000:], flush=True)
            return False
    return shutil.which("wrk") is not None


_LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%.0f,"p99_us":%.0f}}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(req: Request, workdir: Path) -> Path:
    headers = "\n".join(f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in req.headers.items())
    path = workdir / f"req-{abs(hash((req.url, req.body))):x}.lua"
    path.write_text(_LUA.format(body=req.body.decode(), headers=headers))
    return path


def run_wrk(req: Request, conns: int, seconds: float, threads: int, workdir: Path) -> LoadResult:
    script = wrk_script(req, workdir)
    cmd = ["wrk", f"-t{max(1, min(threads, conns))}", f"-c{conns}", f"-d{max(1, round(seconds))}s",
           "--timeout", "10s", "-s", str(script), req.url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): "
                           f"{done.stdout[-800:]}{done.stderr[-800:]}")
    data = orjson.loads(line.removeprefix("BENCHJSON "))
    return LoadResult(requests=int(data["requests"]), seconds=data["duration_us"] / 1e6,
                      p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                      errors=int(data["errors"]))


async def _python_load(req: Request, conns: int, seconds: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(req.url, data=req.body, headers=req.headers) as resp:
                        await resp.read()
                        ok = resp.status < 400
                except (aiohttp.ClientError, OSError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - start
    if not latencies:
        return LoadResult(0, elapsed, 0.0, 0.0, errors)
    ms = [x * 1000 for x in latencies]
    return LoadResult(len(ms) + errors, elapsed, pct(ms, 50), pct(ms, 99), errors)


def run_python(req: Request, conns: int, seconds: float) -> LoadResult:
    return asyncio.run(_python_load(req, conns, seconds))


async def _ttft(req: Request, samples: int) -> TtftResult:
    firsts: list[float] = []
    totals: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(samples):
            t0 = time.perf_counter()
            first = 0.0
            buf = bytearray()
            async with session.post(req.url, data=req.body, headers=req.headers) as resp:
                async for chunk in resp.content.iter_any():
                    if not first and b"data:" in chunk:
                        first = time.perf_counter()
                    buf += chunk
                status = resp.status
            end = time.perf_counter()
            check_response(req, status, bytes(buf))
            firsts.append((first - t0) * 1000)
            totals.append((end - t0) * 1000)
    return TtftResult(pct(firsts, 50), pct(firsts, 99), statistics.median(totals), samples)


def measure_ttft(req: Request, samples: int) -> TtftResult:
    return asyncio.run(_ttft(req, samples))


async def _fetch(req: Request) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            req.url, data=req.body, headers=req.headers) as resp:
        return resp.status, await resp.read()


def sanity_check(req: Request) -> None:
    """One request, validated: the bench must not time error pages."""
    status, data = asyncio.run(_fetch(req))
    check_response(req, status, data)
