"""Issue 4's check: what a client key and the usage ledger cost on the pass-through paths.

Two meridians run side by side on the same fake upstream:

- **bare**: the master key, ``storage.usage_ledger: false`` (request logs and metrics on);
- **full**: a client key created through the admin API (``POST /admin/keys``), ledger on.

For each pass-through path and connection count their cells are interleaved, bare, full,
full, bare, ... (``--overhead-reps`` pairs), so that a change in the machine's load during
the run falls on both alike; a metric is then summed over its cells. Afterwards the full
meridian's SQLite file must hold a usage row per answer of its client key, and the bare one's
none: the ledger really wrote while it was measured.
"""

from __future__ import annotations

import sqlite3
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

import loadgen
import targets
from payloads import MASTER_KEY, PATHS, build

if TYPE_CHECKING:
    from run import Bench

KEY_NAME = "bench"
VARIANTS = ("bare", "full")


def passthrough_paths(paths: list[str]) -> list[str]:
    return [p for p in paths if not PATHS[p].translated]


def create_client_key(base: str, limits: dict[str, int] | None = None) -> str:
    """A client key, without limits unless given some (``{"rpm": ...}``), made the way an
    operator would: the admin API."""
    body = {"name": KEY_NAME, "rpm": None, **(limits or {})}
    req = urllib.request.Request(
        base + "/admin/keys", data=orjson.dumps(body), method="POST",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /admin/keys answered {resp.status}")
        secret = orjson.loads(resp.read())["secret"]
    if not (isinstance(secret, str) and secret.startswith("mk-")):
        raise RuntimeError(f"POST /admin/keys returned no client key: {secret!r}")
    return str(secret)


def usage_rows(db: Path) -> dict[str, int]:
    """Usage rows per key name in a stopped meridian's database."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COALESCE(key_name, '-'), COUNT(*) FROM usage GROUP BY 1")
        return {str(name): int(n) for name, n in rows}


def combine(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from several runs of the same request: totals for throughput and CPU, the
    mean of the latency percentiles."""
    requests = sum(c["requests"] for c in cells)
    seconds = sum(c["requests"] / c["rps"] for c in cells if c["rps"])
    cpu_s = sum((c["cpu_ms"] or 0) * c["requests"] / 1000 for c in cells)
    return {
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": sum(c["p50_ms"] for c in cells) / len(cells),
        "p99_ms": sum(c["p99_ms"] for c in cells) / len(cells),
        "cpu_ms": cpu_s * 1000 / requests if requests else None,
        "errors": sum(c["errors"] for c in cells),
        "requests": requests,
        "upstream_calls": sum(c["upstream_calls"] for c in cells),
        "runs": cells,
    }


def measure(bench: Bench, upstream_port: int, command: list[str]) -> dict[str, Any]:
    args = bench.args
    workdir = bench.workdir
    servers = {
        "bare": targets.meridian_server(workdir, upstream_port, command, ledger=False,
                                        name="meridian-bare"),
        "full": targets.meridian_server(workdir, upstream_port, command, ledger=True,
                                        name="meridian-full"),
    }
    out: dict[str, Any] = {"conns": args.overhead_conns, "reps": args.overhead_reps,
                           "key": KEY_NAME, "paths": {}}
    bench.log("meridian, bare (master key, no ledger) and full (client key + ledger): starting")
    try:
        for server in servers.values():
            server.start()
        secret = create_client_key(servers["full"].base)
        keys = {"bare": MASTER_KEY, "full": secret}
        for path_key in passthrough_paths(args.paths):
            path = PATHS[path_key]
            bench.log(f" {path.name}")
            reqs = {v: build(path, servers[v].base, direct=False, stream=False, key=keys[v])
                    for v in VARIANTS}
            for v in VARIANTS:
                loadgen.sanity_check(reqs[v])
                if args.warmup:
                    bench.load(reqs[v], max(args.overhead_conns), args.warmup)
            res: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
            for conns in args.overhead_conns:
                runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
                for rep in range(args.overhead_reps):
                    for v in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
                        bench.log(f"  {v}:")
                        runs[v].append(bench.cell(reqs[v], conns, servers[v]))
                for v in VARIANTS:
                    res[v][str(conns)] = combine(runs[v])
            out["paths"][path_key] = res
    finally:
        for server in servers.values():
            server.stop()  # graceful: the ledger writes what it still holds
    out["ledger_rows"] = {v: usage_rows(targets.db_path(workdir, s.port))
                          for v, s in servers.items()}
    answered = sum(c["requests"] - c["errors"] for p in out["paths"].values()
                   for c in p["full"].values())
    # Sanity checks and warm-up requests are recorded too: at least one row per answer.
    written = out["ledger_rows"]["full"].get(KEY_NAME, 0)
    out["ledger_ok"] = written >= answered and not out["ledger_rows"]["bare"]
    bench.log(f" ledger rows: full {written} for {answered} timed answers, "
              f"bare {sum(out['ledger_rows']['bare'].values())}")
    return out
