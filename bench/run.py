"""One command: direct-to-upstream vs through meridian (and LiteLLM, when installed).

    python bench/run.py            # full run, ~3-4 minutes
    python bench/run.py --quick    # ~1 minute
    python bench/run.py --smoke    # seconds; what the CI smoke test runs

Starts the fake upstream, then meridian (and the LiteLLM proxy if its venv is found), drives
each with wrk, and prints one markdown table, also written to bench/results/latest.md (with
the raw numbers in latest.json). ``--update-docs`` puts it into docs/bench.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

import loadgen
import overhead
import report
import targets
from payloads import PATHS, Request, build
from procs import Server, cpu_seconds, machine_busy_s, own_cpu_s, rss_mb

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"duration": 5, "warmup": 1, "conns": "1,32,64", "stream_conns": 32,
             "ttft_samples": 200, "cold_runs": 3, "overhead_conns": "1,32", "overhead_reps": 2},
    "quick": {"duration": 2, "warmup": 1, "conns": "1,32", "stream_conns": 32,
              "ttft_samples": 50, "cold_runs": 2, "overhead_conns": "1,32", "overhead_reps": 2},
    "smoke": {"duration": 1, "warmup": 0, "conns": "4", "stream_conns": 4,
              "ttft_samples": 10, "cold_runs": 1, "overhead_conns": "1,4", "overhead_reps": 1},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="meridian benchmark: direct vs through meridian")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter cells, 1 and 32 conns")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny run that only proves the bench works (no LiteLLM)")
    ap.add_argument("--duration", type=int, help="seconds per measured cell (wrk -d)")
    ap.add_argument("--warmup", type=int, help="seconds of unmeasured load per path and target")
    ap.add_argument("--conns", help="comma-separated connection counts, e.g. 1,32,64")
    ap.add_argument("--stream-conns", type=int, help="connections for the streaming cell")
    ap.add_argument("--ttft-samples", type=int, help="sequential streamed requests for TTFT")
    ap.add_argument("--cold-runs", type=int, help="process starts for the cold-start median")
    ap.add_argument("--overhead-conns",
                    help="connection counts for the client key + ledger comparison")
    ap.add_argument("--overhead-reps", type=int,
                    help="interleaved bare/full cell pairs per connection count in that comparison")
    ap.add_argument("--no-overhead", action="store_true",
                    help="skip the client key + ledger comparison (issue 4)")
    ap.add_argument("--paths", default="openai,anthropic,translated",
                    help=f"comma-separated subset of {','.join(PATHS)}")
    ap.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator (auto: wrk, installed with apt-get if missing and root)")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    ap.add_argument("--wrk-threads", type=int, default=1,
                    help="wrk threads (1 leaves the most CPU to the server under test)")
    ap.add_argument("--meridian-cmd", help="how to run meridian (default: the venv's script)")
    ap.add_argument("--no-meridian", action="store_true", help="measure the direct path only")
    ap.add_argument("--litellm", help="LiteLLM venv dir or executable "
                    "(default: bench/litellm-venv, then /tmp/litellm-venv)")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM column")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the Python floor (a bare Starlette + uvicorn + aiohttp proxy)")
    ap.add_argument("--delta-delay-ms", type=float, default=0.0,
                    help="fake upstream pause between streamed events")
    ap.add_argument("--out", type=Path, default=targets.BENCH / "results",
                    help="directory for latest.md and latest.json")
    ap.add_argument("--update-docs", action="store_true", help="rewrite docs/bench.md's table")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.conns = [int(c) for c in str(args.conns).split(",") if c]
    args.overhead_conns = [int(c) for c in str(args.overhead_conns).split(",") if c]
    if args.overhead_reps < 1 or not args.overhead_conns:
        ap.error("--overhead-reps must be at least 1 and --overhead-conns non-empty")
    args.paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        ap.error(f"unknown path(s) {unknown}; choose from {list(PATHS)}")
    if args.smoke:
        args.no_litellm = True
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, tool: str) -> None:
        self.args = args
        self.workdir = workdir
        self.tool = tool
        self.upstream: Server | None = None

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def load(self, req: Request, conns: int, seconds: int) -> loadgen.LoadResult:
        if self.tool == "wrk":
            return loadgen.run_wrk(req, conns, seconds, self.args.wrk_threads, self.workdir)
        return loadgen.run_python(req, conns, seconds)

    def served(self) -> int:
        """Requests the fake upstream has answered so far."""
        import urllib.request

        assert self.upstream is not None
        with urllib.request.urlopen(self.upstream.base + "/_stats", timeout=5) as resp:
            return int(orjson.loads(resp.read())["served"])

    def cell(self, req: Request, conns: int, proxy: Server | None) -> dict[str, Any]:
        """One measured load run; CPU is the proxy's (or, direct, the upstream's)."""
        assert self.upstream is not None
        watched = proxy or self.upstream
        # Everything else that ran meanwhile (other users of these shared cores) is the busy
        # time of the whole machine minus ours: the bench, wrk, the upstream and the proxy.
        ours = [self.upstream.pid] + ([proxy.pid] if proxy else [])
        busy0, own0 = machine_busy_s(), own_cpu_s() + sum(map(cpu_seconds, ours))
        t0 = time.perf_counter()
        cpu0, served0 = cpu_seconds(watched.pid), self.served()
        res = self.load(req, conns, self.args.duration)
        cpu = cpu_seconds(watched.pid) - cpu0
        other = (machine_busy_s() - busy0) - (own_cpu_s() + sum(map(cpu_seconds, ours)) - own0)
        other_cores = max(0.0, other / (time.perf_counter() - t0))
        upstream_calls = self.served() - served0
        ok = res.requests - res.errors
        if proxy is not None and upstream_calls < ok:
            self.log(f"  warning: {ok} answers but only {upstream_calls} upstream calls")
        cell = {"rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
                "cpu_ms": cpu * 1000 / res.requests if res.requests else None,
                "errors": res.errors, "requests": res.requests, "upstream_calls": upstream_calls,
                "other_cores": other_cores}
        kind = "stream" if req.stream else "json"
        self.log(f"  {kind:6} {conns:3} conns: {res.rps:9,.0f} req/s  p50 {res.p50_ms:.2f} ms  "
                 f"p99 {res.p99_ms:.2f} ms  cpu {cell['cpu_ms'] or 0:.3f} ms/req  "
                 f"errors {res.errors}  other work {other_cores:.2f} cores")
        return cell

    def measure_paths(
        self, base: str, proxy: Server | None, only: list[str] | None = None
    ) -> dict[str, Any]:
        direct = proxy is None
        out: dict[str, Any] = {}
        keys = only if only is not None else self.args.paths
        if direct:  # the baseline is per upstream format
            keys = list(dict.fromkeys(PATHS[k].upstream for k in keys))
        for key in keys:
            path = PATHS[key]
            self.log(f" {path.name}")
            plain = build(path, base, direct=direct, stream=False)
            stream = build(path, base, direct=direct, stream=True)
            loadgen.sanity_check(plain)
            loadgen.sanity_check(stream)
            if self.args.warmup:
                self.load(plain, max(self.args.conns), self.args.warmup)
            res: dict[str, Any] = {"load": {str(c): self.cell(plain, c, proxy)
                                            for c in self.args.conns}}
            res["stream"] = self.cell(stream, self.args.stream_conns, proxy)
            res["ttft"] = asdict(loadgen.measure_ttft(stream, self.args.ttft_samples))
            self.log(f"  first chunk p50 {res['ttft']['ttft_p50_ms']:.2f} ms")
            out[key] = res
        return out

    def measure_proxy(self, server: Server, only: list[str] | None = None) -> dict[str, Any]:
        self.log(f"{server.name}: starting")
        colds = [server.start()]
        time.sleep(0.5)  # let start-up allocations settle before calling it idle
        result: dict[str, Any] = {"rss_idle_mb": rss_mb(server.pid)}
        self.log(f" up in {colds[0]:.2f} s, idle RSS {result['rss_idle_mb']:.1f} MB")
        try:
            result["paths"] = self.measure_paths(server.base, server, only)
            result["rss_load_mb"] = rss_mb(server.pid)
        finally:
            server.stop()
        for _ in range(self.args.cold_runs - 1):
            colds.append(server.start())
            server.stop()
        result["cold_start_s"] = colds
        self.log(f" RSS after load {result['rss_load_mb']:.1f} MB, cold starts "
                 + ", ".join(f"{c:.2f}" for c in colds) + " s")
        return result


def machine_note(tool: str) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    load = os.getloadavg()[0]
    tool_v = tool
    if tool == "wrk":
        ver = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        tool_v = (ver.stdout or ver.stderr).split("Copyright")[0].strip() or "wrk"
    return (f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.0f} GiB RAM, Linux "
            f"{platform.release()}, Python {platform.python_version()}, load generator "
            f"{tool_v}, 1-minute load average before the run {load:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tool = args.tool
    if tool in ("auto", "wrk"):
        if loadgen.ensure_wrk(install=not args.no_install):
            tool = "wrk"
        elif tool == "wrk":
            print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
            return 2
        else:
            print("warning: wrk not available, using the slower Python load generator",
                  file=sys.stderr)
            tool = "python"
    litellm_exe = None if args.no_litellm else targets.find_litellm(args.litellm)
    if args.litellm and litellm_exe is None:
        print(f"no litellm executable at {args.litellm}", file=sys.stderr)
        return 2
    note = machine_note(tool)
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f} before the run: other work "
              "on this machine will skew the numbers", file=sys.stderr)
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    bench = Bench(args, workdir, tool)
    results: dict[str, Any] = {"conns": args.conns, "stream_conns": args.stream_conns,
                               "paths": args.paths, "tool": tool, "duration_s": args.duration,
                               "machine": note, "targets": {}}
    upstream = targets.upstream_server(workdir, args.delta_delay_ms)
    bench.upstream = upstream
    try:
        upstream.start()
        bench.log(f"fake upstream on {upstream.base}; direct")
        results["targets"]["direct"] = {"paths": bench.measure_paths(upstream.base, None)}
        passthrough = [p for p in args.paths if not PATHS[p].translated]
        if not args.no_floor and passthrough:
            # The Python floor passes bytes through; it has no translated path.
            floor = targets.floor_server(workdir, upstream.port)
            results["targets"]["floor"] = bench.measure_proxy(floor, passthrough)
        if not args.no_meridian:
            cmd = targets.meridian_command(args.meridian_cmd)
            targets.byte_compile()
            server = targets.meridian_server(workdir, upstream.port, cmd)
            results["targets"]["meridian"] = bench.measure_proxy(server)
            if not args.no_overhead and overhead.passthrough_paths(args.paths):
                results["overhead"] = overhead.measure(bench, upstream.port, cmd)
        if litellm_exe is not None:
            server = targets.litellm_server(workdir, upstream.port, litellm_exe)
            results["targets"]["litellm"] = bench.measure_proxy(server)
    except BaseException:
        print(f"bench failed; logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        upstream.stop()
    results["elapsed_s"] = time.time() - started
    return finish(args, results, workdir, litellm_exe)


def finish(args: argparse.Namespace, results: dict[str, Any], workdir: Path,
           litellm_exe: Path | None) -> int:
    shown = [a for a in args.argv if a != "--update-docs"]
    cmd = " ".join(["python bench/run.py", *shown])
    if litellm_exe:
        lite = (f"LiteLLM: proxy {targets.litellm_version(litellm_exe)} with 1 worker, "
                f"{litellm_exe}")
    elif args.no_litellm:
        lite = "LiteLLM: skipped (--no-litellm)"
    else:
        lite = "LiteLLM: not installed (see docs/bench.md), column empty"
    block = (f"Command: `{cmd}` ({time.strftime('%Y-%m-%d')}, {results['elapsed_s']:.0f} s, "
             f"{args.duration} s per cell).\n\nMachine: {results['machine']}. {lite}.\n\n"
             + report.table(results) + "\n" + report.overhead_table(results)
             + report.summary(results))
    print("\n" + block)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(block)
    (args.out / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.update_docs:
        report.update_docs(targets.ROOT / "docs" / "bench.md", block)
        print("docs/bench.md updated")
    shutil.rmtree(workdir, ignore_errors=True)
    errors = sum(c.get("errors", 0) for t in results["targets"].values()
                 for p in t.get("paths", {}).values()
                 for c in [*p["load"].values(), p["stream"]])
    errors += sum(c["errors"] for p in results.get("overhead", {}).get("paths", {}).values()
                  for v in p.values() for c in v.values())
    if "overhead" in results and not results["overhead"]["ledger_ok"]:
        print("the usage ledger is missing rows for the client key's requests", file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
