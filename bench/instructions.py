"""CPU per request as instructions, counted by callgrind: meridian now against a baseline.

    python bench/instructions.py                    # baseline: the last commit before issue 7
    python bench/instructions.py --baseline REF --requests 400

Wall-clock CPU time swings with whatever else the machine runs (this one is shared); the
number of instructions a request executes does not. Each meridian runs under
``valgrind --tool=callgrind`` with instrumentation off; after a warm-up the bench turns it
on, sends ``--requests`` requests one after another on one kept-alive connection for each
pass-through path (plain and streamed), dumps the counts per path and divides. Everything
the process executes is counted: the event loop, the ledger's writer thread, the metrics.
It measures three processes: meridian now, meridian at ``--baseline`` (the paths it has),
and the Python floor (``floor.py``, a bare Starlette + uvicorn + aiohttp pass-through; the
pass-through paths only). Prints instructions per request, and the ratios the issues set
bounds on: now ÷ before (issue 7: the hardening within 5%), now ÷ floor (issue 8's goal: the
floor's req/s at 0.75 of it or better, so about 1.33 of its instructions at most),
translated ÷ pass-through (issue 8: within 1.25) and the new endpoints ÷ chat pass-through.
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
from report import DASH, TIMES

TOLERANCE = 0.05
# label -> (path, model, stream, extra body, which variants serve it)
ALL, NEW = ("before", "now", "floor"), ("now",)
CASES: dict[str, tuple[str, str, bool, dict[str, object], tuple[str, ...]]] = {
    "OpenAI pass-through": ("/v1/chat/completions", OPENAI_ALIAS, False, {}, ALL),
    "OpenAI pass-through, streamed": ("/v1/chat/completions", OPENAI_ALIAS, True, {}, ALL),
    "Anthropic pass-through": ("/v1/messages", ANTHROPIC_ALIAS, False, {}, ALL),
    "Anthropic pass-through, streamed": ("/v1/messages", ANTHROPIC_ALIAS, True, {}, ALL),
    "Translated (OpenAI client, Anthropic upstream)":
        ("/v1/chat/completions", ANTHROPIC_ALIAS, False, {}, ("before", "now")),
    "Translated, streamed": ("/v1/chat/completions", ANTHROPIC_ALIAS, True, {}, ("before", "now")),
    "Responses pass-through": ("/v1/responses", OPENAI_ALIAS, False, {"input": "pong?"}, NEW),
    "Responses pass-through, streamed":
        ("/v1/responses", OPENAI_ALIAS, True, {"input": "pong?"}, NEW),
    "Embeddings pass-through": ("/v1/embeddings", OPENAI_ALIAS, False, {"input": "pong"}, NEW),
}  # fmt: skip


def send(
    port: int, path: str, model: str, stream: bool, extra: dict[str, object], n: int
) -> None:
    if extra:
        body = orjson.dumps({"model": model, **({"stream": True} if stream else {}), **extra})
    else:
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


def measure(
    server: Server, variant: str, out_dir: Path, requests: int, warmup: int
) -> dict[str, float]:
    server.start(timeout=600)  # valgrind starts Python some 30-50 times slower
    pid = str(server.pid)
    try:
        per_request: dict[str, float] = {}
        for label, (path, model, stream, extra, variants) in CASES.items():
            if variant not in variants:
                continue
            send(server.port, path, model, stream, extra, warmup)
            before = set(out_dir.glob("callgrind.*"))
            control("--zero", pid)
            control("--instr=on", pid)
            send(server.port, path, model, stream, extra, requests)
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


def _ratio(a: float | None, b: float | None, bound: float | None = None) -> str:
    if a is None or b is None:
        return DASH
    mark = "" if bound is None else (" ✅" if a / b <= bound else " ❌")
    return f"{a / b:.2f}{mark}"


def table(results: dict[str, dict[str, float]], baseline: str) -> str:
    now, before, floor = results["now"], results["before"], results["floor"]
    chat, chat_s = now["OpenAI pass-through"], now["OpenAI pass-through, streamed"]
    lines = [
        f"Instructions per request (callgrind). Bounds: now ÷ before (`{baseline}`) ≤ "
        f"{1 + TOLERANCE:.2f}; now ÷ floor ≤ {1 / 0.75:.2f} (0.75{TIMES} the floor's req/s); "
        "translated ÷ pass-through ≤ 1.25; a new endpoint ÷ chat pass-through ≤ 1.05.",
        "",
        "| path | floor | before | now | now ÷ before | now ÷ floor | vs pass-through |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in CASES:
        n, b, f = now.get(label), before.get(label), floor.get(label)
        versus = DASH
        if label.startswith("Translated"):
            base = now["Anthropic pass-through, streamed" if "streamed" in label
                       else "Anthropic pass-through"]  # fmt: skip
            versus = _ratio(n, base, 1.25)
        elif label.startswith(("Responses", "Embeddings")):
            versus = _ratio(n, chat_s if "streamed" in label else chat, 1.05)
        cells = [label, *(f"{v:,.0f}" if v else DASH for v in (f, b, n)),
                 _ratio(n, b, 1 + TOLERANCE), _ratio(n, f, 1 / 0.75), versus]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
        for variant in ("floor", "before", "now"):
            out_dir = workdir / variant
            out_dir.mkdir()
            grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={out_dir}/callgrind.%p", sys.executable]
            if variant == "floor":
                server = Server(
                    "floor",
                    lambda port, g=grind: [*g, str(targets.BENCH / "floor.py"), "--port",
                                           str(port), "--upstream",
                                           f"http://127.0.0.1:{upstream.port}"],
                    "/health", workdir / "floor.log",
                )  # fmt: skip
            else:
                env = {"PYTHONPATH": str(baseline_src)} if variant == "before" else {}
                server = targets.meridian_server(
                    workdir, upstream.port, [*grind, "-m", "meridian"],
                    name=f"meridian-{variant}", env=env, responses_api=variant == "now",
                )  # fmt: skip
            print(f"{variant}: starting under callgrind", flush=True)
            results[variant] = measure(server, variant, out_dir, args.requests, args.warmup)
    finally:
        upstream.stop()
    print(f"\nCommand: `python bench/instructions.py {' '.join(argv or sys.argv[1:])}` "
          f"({time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s, "
          f"{args.requests} requests per path).\n")
    print(table(results, args.baseline))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
