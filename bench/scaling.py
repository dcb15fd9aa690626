"""Scaling (issue 11): PostgreSQL + Redis against SQLite + in-memory limits, and workers.

    .venv/bin/python bench/scaling.py                 # ~3 minutes
    .venv/bin/python bench/scaling.py --smoke         # seconds: what the smoke test runs
    .venv/bin/python bench/scaling.py --update-docs   # also rewrites docs/bench.md's table

Starts the fake upstream, a PostgreSQL cluster and a Redis (Debian's binaries, as the tests
start them), then two pairs of meridians, each pair side by side and measured with wrk in
interleaved cells (a, b, b, a, ...) so that a change in the machine's load falls on both:

1. **storage**: ``sqlite`` (the SQLite file, limits in memory) against ``pg_redis``
   (``storage.url`` on PostgreSQL, ``limits.redis_url`` on Redis), OpenAI pass-through
   plain and streamed at ``--conns``;
2. **workers**: ``server.workers: 1`` against ``2``, both on SQLite and Redis limits, plain
   pass-through at ``--worker-conns``.

Every meridian is called with a client key created through the admin API with an rpm and a
tpm too large to refuse anything, so the limiter (and for ``pg_redis`` its two Redis round
trips) and the usage ledger are on every request's path. CPU per request is meridian's
process tree (all workers), and separately PostgreSQL's and Redis's. Prints two markdown
tables, also written to bench/results/scaling.md (raw numbers in scaling.json).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

import loadgen
import overhead
import report
import scaling_report
import targets
from payloads import PATHS, build
from procs import Server
from run import Bench, machine_note
from services import Services

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"duration": 5, "warmup": 1, "reps": 2, "conns": "1,32", "worker_conns": "32,64"},
    "smoke": {"duration": 1, "warmup": 0, "reps": 1, "conns": "2", "worker_conns": "2"},
}
# Never refused: the limiter does all its work and admits every call.
LIMITS = {"rpm": 10**9, "tpm": 10**12}
MARKS = ("<!-- bench:scaling:start -->", "<!-- bench:scaling:end -->")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, proves it runs")
    ap.add_argument("--duration", type=int, help="seconds per measured cell")
    ap.add_argument("--warmup", type=int, help="seconds of unmeasured load per variant")
    ap.add_argument("--reps", type=int, help="cells per variant and row (interleaved)")
    ap.add_argument("--conns", help="connection counts of the storage comparison")
    ap.add_argument("--worker-conns", help="connection counts of the workers comparison")
    ap.add_argument("--parts", default="storage,workers", help="storage, workers or both")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    ap.add_argument("--out", type=Path, default=targets.BENCH / "results")
    ap.add_argument("--update-docs", action="store_true", help="rewrite docs/bench.md's table")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for key, value in PRESETS["smoke" if args.smoke else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.conns = [int(c) for c in str(args.conns).split(",") if c]
    args.worker_conns = [int(c) for c in str(args.worker_conns).split(",") if c]
    args.parts = [p for p in args.parts.split(",") if p]
    args.wrk_threads = 1
    return args


def storage_servers(bench: Bench, services: Services, cmd: list[str]) -> dict[str, Server]:
    assert bench.upstream is not None
    port, work = bench.upstream.port, bench.workdir
    shared = {"storage": {"url": services.database()}, "limits": {"redis_url": services.redis_url}}
    return {
        "sqlite": targets.meridian_server(work, port, cmd, name="meridian-sqlite"),
        "pg_redis": targets.meridian_server(work, port, cmd, name="meridian-pg", sections=shared),
    }


def worker_servers(bench: Bench, services: Services, cmd: list[str]) -> dict[str, Server]:
    assert bench.upstream is not None
    port, work = bench.upstream.port, bench.workdir
    return {
        f"workers_{n}": targets.meridian_server(
            work, port, cmd, name=f"meridian-w{n}",
            sections={"server": {"workers": n}, "limits": {"redis_url": services.redis_url}},
        )
        for n in (1, 2)
    }  # fmt: skip


def cell(bench: Bench, services: Services, req: Any, conns: int, server: Server) -> dict[str, Any]:
    """Bench.cell, plus the database servers' CPU during it (which Bench.cell would count as
    other work: taken out of that figure here)."""
    before, t0 = services.cpu_s(), time.perf_counter()
    out = bench.cell(req, conns, server)
    elapsed, after = time.perf_counter() - t0, services.cpu_s()
    used = {name: after[name] - before[name] for name in after}
    for name, seconds in used.items():
        out[f"{name}_s"] = seconds
    out["other_cores"] = max(0.0, out["other_cores"] - sum(used.values()) / elapsed)
    if used["postgres"] or used["redis"]:
        bench.log(f"  PostgreSQL {used['postgres']:.2f} s, Redis {used['redis']:.2f} s of CPU")
    return out


def combine(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """overhead.combine, with the servers' CPU per request and the mean other work."""
    out = overhead.combine(cells)
    for name in ("postgres", "redis"):
        seconds = sum(c[f"{name}_s"] for c in cells)
        out[f"{name}_ms"] = seconds * 1000 / out["requests"] if out["requests"] else None
    out["other_cores"] = sum(c["other_cores"] for c in cells) / len(cells)
    return out


def measure(
    bench: Bench,
    services: Services,
    servers: dict[str, Server],
    rows: list[tuple[bool, int]],
) -> dict[str, Any]:
    """Rows of (streamed?, connections) on the OpenAI pass-through, variants interleaved."""
    variants = list(servers)
    out: dict[str, Any] = {}
    try:
        for server in servers.values():
            server.start()
            bench.log(f"{server.name} up on {server.base}")
        secrets = {v: overhead.create_client_key(s.base, LIMITS) for v, s in servers.items()}
        time.sleep(1.5)  # every worker sees a new key within a second
        for stream, conns in rows:
            reqs = {v: build(PATHS["openai"], servers[v].base, direct=False, stream=stream,
                             key=secrets[v]) for v in variants}  # fmt: skip
            label = f"{'streamed' if stream else 'plain'}|{conns}"
            bench.log(f" {label}")
            for v in variants:
                loadgen.sanity_check(reqs[v])
                if bench.args.warmup:
                    bench.load(reqs[v], conns, bench.args.warmup)
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for rep in range(bench.args.reps):
                for v in variants if rep % 2 == 0 else variants[::-1]:
                    bench.log(f"  {v}:")
                    runs[v].append(cell(bench, services, reqs[v], conns, servers[v]))
            out[label] = {v: combine(runs[v]) for v in variants}
    finally:
        for server in servers.values():
            server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tool = "wrk" if loadgen.ensure_wrk(install=not args.no_install) else "python"
    note = machine_note(tool)
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="meridian-scaling-"))
    bench = Bench(args, workdir, tool)
    bench.upstream = targets.upstream_server(workdir, 0.0)
    cmd = targets.meridian_command(None)
    targets.byte_compile()
    results: dict[str, Any] = {"machine": note, "tool": tool, "duration_s": args.duration,
                               "reps": args.reps}  # fmt: skip
    try:
        bench.upstream.start()
        with Services(workdir) as services:
            if "storage" in args.parts:
                rows = [(s, c) for s in (False, True) for c in args.conns]
                servers = storage_servers(bench, services, cmd)
                results["storage"] = measure(bench, services, servers, rows)
            if "workers" in args.parts:
                rows = [(False, c) for c in args.worker_conns]
                servers = worker_servers(bench, services, cmd)
                results["workers"] = measure(bench, services, servers, rows)
    except BaseException:
        print(f"bench failed; logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        bench.upstream.stop()
    results["elapsed_s"] = time.time() - started
    shown = " ".join(["python bench/scaling.py", *[a for a in args.argv if a != "--update-docs"]])
    block = scaling_report.block(results, shown, time.strftime("%Y-%m-%d"))
    print("\n" + block)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.md").write_text(block)
    (args.out / "scaling.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.update_docs:
        report.update_docs(targets.ROOT / "docs" / "bench.md", block, MARKS)
        print("docs/bench.md updated")
    shutil.rmtree(workdir, ignore_errors=True)
    errors = scaling_report.errors(results)
    if errors:
        print(f"{errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.pop("MERIDIAN_CONFIG", None)
    sys.exit(main())
