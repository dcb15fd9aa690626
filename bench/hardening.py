"""What the hardening of issue 7 costs: meridian now against meridian before it, side by side.

    python bench/hardening.py                       # baseline: the last commit before it
    python bench/hardening.py --baseline v0.1.0 --duration 5 --reps 3

Both run on the same fake upstream, the same config (master key, ledger on), from the same
virtualenv: the baseline is the source of ``--baseline`` (a git ref), unpacked with
``git archive`` into a temporary directory and run with ``PYTHONPATH`` pointing at it. The
pass-through paths (OpenAI and Anthropic, plain and streamed) are measured with wrk, cells
interleaved (before, now, now, before, ...) so that a change in the machine's load falls on
both alike, then summed. Prints one markdown table: req/s, p50, p99 and CPU per request,
now ÷ before, against issue 7's bound of 5% (req/s ≥ 0.95, CPU ≤ 1.05).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen
import overhead
import targets
from payloads import PATHS, build
from procs import Server
from report import TIMES
from run import Bench

# The commit before the issue-7 work landed.
DEFAULT_BASELINE = "79c9d4b"
TOLERANCE = 0.05


def unpack(ref: str, into: Path) -> Path:
    """The source tree of ``ref`` under ``into``; returns its ``src`` directory."""
    archive = subprocess.run(
        ["git", "-C", str(targets.ROOT), "archive", ref, "src"],
        capture_output=True, check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def measure(bench: Bench, baseline_src: Path, conns: list[int], reps: int) -> dict[str, Any]:
    assert bench.upstream is not None
    port = bench.upstream.port
    now_cmd = targets.meridian_command(None)
    before_cmd = [sys.executable, "-m", "meridian"]
    servers: dict[str, Server] = {
        "before": targets.meridian_server(
            bench.workdir, port, before_cmd, name="meridian-before",
            env={"PYTHONPATH": str(baseline_src)},
        ),
        "now": targets.meridian_server(bench.workdir, port, now_cmd, name="meridian-now"),
    }  # fmt: skip
    variants = ("before", "now")
    out: dict[str, Any] = {}
    try:
        for server in servers.values():
            server.start()
        for key in ("openai", "anthropic"):
            path = PATHS[key]
            for stream in (False, True):
                label = f"{path.name}{', streamed' if stream else ''}"
                bench.log(f" {label}")
                reqs = {v: build(path, servers[v].base, direct=False, stream=stream)
                        for v in variants}
                for v in variants:
                    loadgen.sanity_check(reqs[v])
                    if bench.args.warmup:
                        bench.load(reqs[v], max(conns), bench.args.warmup)
                for n in conns:
                    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
                    for rep in range(reps):
                        for v in variants if rep % 2 == 0 else variants[::-1]:
                            bench.log(f"  {v}:")
                            runs[v].append(bench.cell(reqs[v], n, servers[v]))
                    out[f"{label}|{n}"] = {v: overhead.combine(runs[v]) for v in variants}
    finally:
        for server in servers.values():
            server.stop()
    return out


def table(results: dict[str, Any], baseline: str) -> str:
    lines = [
        f"meridian now vs before the hardening (`{baseline}`), same run; cells interleaved and "
        f"summed. Bound: req/s ≥ {1 - TOLERANCE:.2f}{TIMES}, CPU/request ≤ "
        f"{1 + TOLERANCE:.2f}{TIMES}.",
        "",
        "| path | conns | req/s before | req/s now | ratio | CPU ms/req before | now | ratio |"
        " p50 ms before | now | p99 ms before | now |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, v in results.items():
        label, conns = cell.split("|")
        b, n = v["before"], v["now"]
        rps_ratio = n["rps"] / b["rps"] if b["rps"] else 0.0
        cpu_ratio = n["cpu_ms"] / b["cpu_ms"] if b["cpu_ms"] and n["cpu_ms"] else 0.0
        ok_rps = "✅" if rps_ratio >= 1 - TOLERANCE else "❌"
        ok_cpu = "✅" if cpu_ratio <= 1 + TOLERANCE else "❌"
        lines.append(
            f"| {label} | {conns} | {b['rps']:,.0f} | {n['rps']:,.0f} "
            f"| {rps_ratio:.3f}{TIMES} {ok_rps} "
            f"| {b['cpu_ms']:.3f} | {n['cpu_ms']:.3f} | {cpu_ratio:.3f}{TIMES} {ok_cpu} "
            f"| {b['p50_ms']:.2f} | {n['p50_ms']:.2f} | {b['p99_ms']:.2f} | {n['p99_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare against")
    ap.add_argument("--duration", type=int, default=4, help="seconds per cell")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--conns", default="1,32")
    ap.add_argument("--reps", type=int, default=2, help="cells per variant and row")
    args = ap.parse_args(argv)
    args.wrk_threads = 1
    conns = [int(c) for c in args.conns.split(",")]
    if not loadgen.ensure_wrk(install=True):
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="meridian-hardening-"))
    bench = Bench(args, workdir, "wrk")
    bench.upstream = targets.upstream_server(workdir, 0.0)
    started = time.time()
    try:
        baseline_src = unpack(args.baseline, workdir)
        bench.upstream.start()
        results = measure(bench, baseline_src, conns, args.reps)
    finally:
        bench.upstream.stop()
    print()
    print(f"Command: `python bench/hardening.py {' '.join(argv or sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s, "
          f"{args.duration} s per cell, load average before {os.getloadavg()[0]:.2f}).\n")
    print(table(results, args.baseline))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
