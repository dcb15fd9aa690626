"""CPU per request as instructions, counted by callgrind: meridian now against a baseline.

    python bench/instructions.py                    # baseline: the last commit before issue 7
    python bench/instructions.py --baseline REF --requests 400

Wall-clock CPU time swings with whatever else the machine runs (this one is shared); the
number of instructions a request executes does not. Each meridian runs under
``valgrind --tool=callgrind`` with instrumentation off; after a warm-up the bench turns it
on, sends ``--requests`` requests one after another on one kept-alive connection for each
pass-through path (plain and streamed), dumps the counts per path and divides. Everything
the process executes is counted: the event loop, the ledger's writer thread, the metrics.
Prints instructions per request, now ÷ before, against issue 7's bound of 5%.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import hardening
import targets
from payloads import ANTHROPIC_ALIAS, MASTER_KEY, OPENAI_ALIAS
from procs import Server

TOLERANCE = 0.05
CASES = {
    "OpenAI pass-through": ("/v1/chat/completions", OPENAI_ALIAS, False),
    "OpenAI pass-through, streamed": ("/v1/chat/completions", OPENAI_ALIAS, True),
    "Anthropic pass-through": ("/v1/messages", ANTHROPIC_ALIAS, False),
    "Anthropic pass-through, streamed": ("/v1/messages", ANTHROPIC_ALIAS, True),
}


def send(port: int, path: str, model: str, stream: bool, n: int) -> None:
    body = orjson.dumps(
        {"model": model, "max_tokens": 64, "stream": stream,
         "messages": [{"role": "user", "content": "Reply with the single word: pong"}]}
    )  # fmt: skip
    headers = {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json",
               "anthropic-version": "2023-06-01"}  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path} answered {resp.status}: {data[:200]!r}")
    finally:
        conn.close()


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def total_ir(dump: Path) -> int:
    out = subprocess.run(["callgrind_annotate", str(dump)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for line in out.splitlines():
        if "PROGRAM TOTALS" in line:
            return int(line.split()[0].replace(",", ""))
    raise RuntimeError(f"no totals in {dump}")


def measure(server: Server, out_dir: Path, requests: int, warmup: int) -> dict[str, float]:
    server.start(timeout=600)  # valgrind starts Python some 30-50 times slower
    pid = str(server.pid)
    try:
        per_request: dict[str, float] = {}
        for label, (path, model, stream) in CASES.items():
            send(server.port, path, model, stream, warmup)
            before = set(out_dir.glob("callgrind.*"))
            control("--zero", pid)
            control("--instr=on", pid)
            send(server.port, path, model, stream, requests)
            control("--instr=off", pid)
            control("--dump", pid)
            for _ in range(100):
                new = sorted(set(out_dir.glob("callgrind.*")) - before)
                if new and new[-1].stat().st_size:
                    break
                time.sleep(0.1)
            per_request[label] = total_ir(new[-1]) / requests
        return per_request
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=hardening.DEFAULT_BASELINE)
    ap.add_argument("--requests", type=int, default=300, help="counted requests per path")
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="meridian-instructions-"))
    started = time.time()
    upstream = targets.upstream_server(workdir, 0.0)
    results: dict[str, dict[str, float]] = {}
    try:
        baseline_src = hardening.unpack(args.baseline, workdir)
        upstream.start()
        for variant, env in (("before", {"PYTHONPATH": str(baseline_src)}), ("now", {})):
            out_dir = workdir / variant
            out_dir.mkdir()
            grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={out_dir}/callgrind.%p",
                     sys.executable, "-m", "meridian"]  # fmt: skip
            server = targets.meridian_server(workdir, upstream.port, grind,
                                             name=f"meridian-{variant}", env=env)  # fmt: skip
            print(f"{variant}: starting under callgrind", flush=True)
            results[variant] = measure(server, out_dir, args.requests, args.warmup)
    finally:
        upstream.stop()
    print(f"\nCommand: `python bench/instructions.py {' '.join(argv or sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s, "
          f"{args.requests} requests per path).\n")
    print(f"Instructions per request (callgrind), now vs `{args.baseline}`; bound "
          f"≤ {1 + TOLERANCE:.2f}.\n")
    print("| path | before | now | now ÷ before |")
    print("|---|---|---|---|")
    for label in CASES:
        b, n = results["before"][label], results["now"][label]
        ok = "✅" if n / b <= 1 + TOLERANCE else "❌"
        print(f"| {label} | {b:,.0f} | {n:,.0f} | {n / b:.3f} {ok} |")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
