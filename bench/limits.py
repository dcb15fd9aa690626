"""What a limited key's admission costs: admit + settle per call, in memory and through Redis.

    python bench/limits.py                          # in memory only
    python bench/limits.py --redis-url unix:///tmp/redis.sock
    python bench/limits.py --baseline REF --reps 3  # now vs a git ref, runs interleaved

In process, no HTTP: a key with rpm, tpm and max_parallel (so every limit is checked), calls
admitted and settled one after another. Prints microseconds per call for the in-memory
`Limiter` and, with ``--redis-url``, for the `SharedLimiter` (one round trip to admit, one
to settle) and for one cooldown sync (what each replica pays every 0.5 s). Compare the
in-memory figure with another checkout's by running this file with its ``src`` on
``PYTHONPATH``, or let ``--baseline REF`` do it: it unpacks REF's ``src`` (as
bench/hardening.py does), starts a Redis of its own unless given ``--redis-url``, and runs
this file on REF and on the working tree in turn (before, now, now, before, ...), so that a
change in the machine's load falls on both; it prints the mean of each and now ÷ before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meridian.keys import KeyStore
from meridian.limits import Limiter
from meridian.model import Usage
from meridian.storage.sqlite import SQLiteStore

LIMITS = {"rpm": 10**9, "tpm": 10**12, "max_parallel": 1000}


async def per_call_us(
    limiter: Any, principal: Any, n: int, drain: bool = False
) -> tuple[float, float]:
    """(wall, CPU of this process) in µs per call."""
    usage = Usage(input_tokens=10, output_tokens=20)
    for _ in range(50):  # warm up (the month read, script loading)
        limiter.settle(principal, await limiter.admit(principal, "m", tokens=30), usage)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        limiter.settle(principal, await limiter.admit(principal, "m", tokens=30), usage)
    if drain:
        await limiter.drain()
    wall = (time.perf_counter() - started) / n * 1e6
    return wall, (time.process_time() - cpu) / n * 1e6


def compare(args: argparse.Namespace) -> None:
    """``--baseline``: this file on REF's source and on the working tree, interleaved."""
    import hardening
    from report import TIMES
    from targets import ROOT

    sys.path.insert(0, str(ROOT / "tests"))
    from redisserver import RedisServer

    work = Path(tempfile.mkdtemp(prefix="meridian-limits-"))
    sources = {"before": hardening.unpack(args.baseline, work), "now": ROOT / "src"}
    redis = None if args.redis_url else RedisServer(work / "redis").start()
    url = args.redis_url or (redis.url if redis else "")
    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, list[float]]]] = {v: [] for v in sources}
    try:
        for rep in range(args.reps):
            for v in list(sources) if rep % 2 == 0 else list(sources)[::-1]:
                done = subprocess.run(
                    [sys.executable, __file__, "--json", "--calls", str(args.calls),
                     "--redis-url", url],
                    env={**os.environ, "PYTHONPATH": str(sources[v])},
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                runs[v].append(json.loads(done.stdout))
    finally:
        if redis is not None:
            redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"`python bench/limits.py --baseline {args.baseline} --reps {args.reps} --calls "
        f"{args.calls}` ({time.strftime('%Y-%m-%d')}, load average before {load:.2f}): "
        "µs per call, mean of the runs\n"
    )
    print("| what | before | now | now ÷ before | CPU before | CPU now | CPU now ÷ before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what in runs["now"][0]:
        mean = {v: [sum(r[what][i] for r in runs[v]) / len(runs[v]) for i in (0, 1)]
                for v in sources}  # fmt: skip
        b, n = mean["before"], mean["now"]
        print(
            f"| {what} | {b[0]:,.1f} | {n[0]:,.1f} | {n[0] / b[0]:.2f}{TIMES} "
            f"| {b[1]:,.1f} | {n[1]:,.1f} | {n[1] / b[1]:.2f}{TIMES} |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--redis-url")
    parser.add_argument("--baseline", help="git ref to compare the working tree with")
    parser.add_argument("--reps", type=int, default=2, help="runs of each, with --baseline")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    if args.baseline:
        return compare(args)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "meridian.db").open()
        keys = KeyStore(store)
        _, info = keys.create("bench", **LIMITS)  # type: ignore[arg-type]
        principal = info.principal()
        rows = [
            ("in memory: admit + settle", await per_call_us(Limiter(keys), principal, args.calls))
        ]
        if args.redis_url:
            from meridian.config import Cooldown
            from meridian.cooldowns import SharedCooldowns
            from meridian.health import Health
            from meridian.limits.redis import client, connect
            from meridian.limits.shared import SharedLimiter

            shared = SharedLimiter(
                keys, connect(args.redis_url, timeout_s=5), where="bench", on_error="closed",
                hold_s=610,
            )  # fmt: skip
            n = max(1, args.calls // 10)
            rows.append(("Redis: admit + settle", await per_call_us(shared, principal, n, True)))
            await shared.aclose()
            cooldowns = SharedCooldowns(
                client(args.redis_url, timeout_s=5), Health(Cooldown()), timeout_s=5
            )
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await cooldowns.sync()
            wall = (time.perf_counter() - started) / n * 1e6
            rows.append(("Redis: one cooldown sync", (wall, (time.process_time() - cpu) / n * 1e6)))
            await cooldowns.aclose()
        store.close()
    if args.json:
        print(json.dumps(dict(rows)))
        return
    print("| what | µs per call | CPU µs per call |\n|---|---:|---:|")
    for what, (wall, cpu) in rows:
        print(f"| {what} | {wall:,.1f} | {cpu:,.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
