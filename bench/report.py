"""Turn the measurements into one markdown table, with ratios and the issue's targets.

`results` is the plain-JSON shape that run.py fills and saves beside the table:

    {"targets": {"direct"|"meridian"|"litellm": {
        "paths": {path: {"load": {conns: cell}, "stream": cell, "ttft": {...}}},
        "rss_idle_mb": x, "rss_load_mb": x, "cold_start_s": [..]}},
     "conns": [...], "stream_conns": n, "paths": [...], "tool": "wrk", ...}

where a cell is ``{"rps", "p50_ms", "p99_ms", "cpu_ms", "errors", "requests"}``. The direct
target is keyed by upstream format ("openai", "anthropic"): a translated path's baseline is
its upstream's pass-through.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from payloads import PATHS

DASH = "\u2013"  # en dash: an empty cell
TIMES = "\u00d7"
# Issue 2's targets, for the pass-through non-streaming path on this 2-core kind of machine.
TARGET_RPS_32 = 3000
TARGET_ADDED_P50_MS = 1.0
TARGET_RSS_MB = 80
TARGET_COLD_S = 1.0

Row = tuple[str, str, Callable[[dict[str, Any], str], float | None], str, str]
# (path key or "" for process rows, metric label, getter(target results, path key) -> value,
#  kind, target)
# kind picks the format and the "vs direct" column: rps | ms | cpu | mb | s.


def _cell(key: str, conns: int | None, field: str) -> Callable[[dict[str, Any], str], float | None]:
    def get(t: dict[str, Any], path: str) -> float | None:
        p = t.get("paths", {}).get(path)
        if p is None:
            return None
        cell = p.get("stream") if conns is None else p.get("load", {}).get(str(conns))
        if cell is None:
            return None
        value = p.get("ttft", {}).get(field) if key == "ttft" else cell.get(field)
        return None if value is None else float(value)

    return get


def _proc(field: str) -> Callable[[dict[str, Any], str], float | None]:
    def get(t: dict[str, Any], _path: str) -> float | None:
        value = t.get(field)
        if isinstance(value, list):
            return statistics.median(value) if value else None
        return value

    return get


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    conns: list[int] = results["conns"]
    sc: int = results["stream_conns"]
    for key in results["paths"]:
        label = key
        passthrough = not PATHS[key].translated
        for c in conns:
            unit = "conn" if c == 1 else "conns"
            rps_target = f"≥ {TARGET_RPS_32:,}" if passthrough and c == 32 else ""
            p50_target = f"≤ +{TARGET_ADDED_P50_MS:g} ms" if passthrough and c == 1 else ""
            out += [
                (label, f"req/s, {c} {unit}", _cell("load", c, "rps"), "rps", rps_target),
                (label, f"p50 ms, {c} {unit}", _cell("load", c, "p50_ms"), "ms", p50_target),
                (label, f"p99 ms, {c} {unit}", _cell("load", c, "p99_ms"), "ms", ""),
                (label, f"CPU ms/req, {c} {unit}", _cell("load", c, "cpu_ms"), "cpu", ""),
            ]
        out += [
            (label, f"stream req/s, {sc} conns", _cell("load", None, "rps"), "rps", ""),
            (label, f"stream CPU ms/req, {sc} conns", _cell("load", None, "cpu_ms"), "cpu", ""),
            (label, "stream first chunk p50 ms, 1 conn", _cell("ttft", None, "ttft_p50_ms"),
             "ms", ""),
        ]
    out += [
        ("", "RSS idle MB", _proc("rss_idle_mb"), "mb", f"< {TARGET_RSS_MB}"),
        ("", "RSS after load MB", _proc("rss_load_mb"), "mb", f"< {TARGET_RSS_MB}"),
        ("", "cold start s (median)", _proc("cold_start_s"), "s", f"< {TARGET_COLD_S:g}"),
    ]
    return out


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return DASH
    if kind == "rps":
        return f"{value:,.0f}"
    if kind == "cpu":
        return f"{value:.3f}"
    if kind in ("mb",):
        return f"{value:.1f}"
    return f"{value:.2f}"


def _versus(m: float | None, d: float | None, kind: str) -> str:
    if m is None or d is None or kind in ("cpu", "mb", "s"):
        return DASH
    if kind == "rps":
        return f"{m / d:.2f}{TIMES}" if d else DASH
    return f"{m - d:+.2f} ms"


def _verdict(target: str, m: float | None, d: float | None, kind: str) -> str:
    if not target or m is None:
        return target
    number = float(re.sub(r"[^0-9.]", "", target.replace(",", "")))
    if kind == "rps":
        ok = m >= number
    elif kind == "ms":
        ok = d is not None and m - d <= number
    else:
        ok = m < number
    return f"{target} {'✅' if ok else '❌'}"


def table(results: dict[str, Any]) -> str:
    targets = results["targets"]
    direct = targets.get("direct", {})
    floor = targets.get("floor", {})
    meridian = targets.get("meridian", {})
    litellm = targets.get("litellm")
    head = ["path", "metric", "direct", "floor", "meridian", "meridian vs direct",
            "meridian vs floor", "LiteLLM", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path_key, metric, get, kind, target in rows(results):
        label = PATHS[path_key].name if path_key else "Process"
        upstream = PATHS[path_key].upstream if path_key else ""
        d = None if kind == "cpu" or not path_key else get(direct, upstream)
        f = get(floor, path_key) if floor else None
        m = get(meridian, path_key)
        lv = get(litellm, path_key) if litellm is not None else None
        cells = [label, metric, fmt(d, kind), fmt(f, kind),
                 fmt(m, kind) + _flag(meridian, path_key, metric), _versus(m, d, kind),
                 _against_floor(m, f, kind), fmt(lv, kind), _verdict(target, m, d, kind)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Issue 8's goal: the pass-through at this share of the floor's req/s (32 connections).
FLOOR_GOAL = 0.75


def _against_floor(m: float | None, f: float | None, kind: str) -> str:
    """meridian ÷ floor for throughput and CPU, meridian minus floor for latency."""
    if m is None or f is None or kind in ("mb", "s"):
        return DASH
    if kind in ("rps", "cpu"):
        return f"{m / f:.2f}{TIMES}" if f else DASH
    return f"{m - f:+.2f} ms"


def _flag(t: dict[str, Any], path: str, metric: str) -> str:
    """A warning mark on a cell whose run saw errors, so a fast 4xx never reads as a result."""
    p = t.get("paths", {}).get(path, {})
    cells = [*p.get("load", {}).values(), p.get("stream") or {}]
    return " ⚠" if metric.startswith("req/s") and any(c.get("errors") for c in cells) else ""


def summary(results: dict[str, Any]) -> str:
    """A few sentences under the table: LiteLLM comparison and errors."""
    out = []
    t = results["targets"]
    if "litellm" in t and "meridian" in t and 32 in results["conns"]:
        for key in results["paths"]:
            m = _cell("load", 32, "rps")(t["meridian"], key)
            lv = _cell("load", 32, "rps")(t["litellm"], key)
            if m and lv:
                out.append(f"- {PATHS[key].name}: meridian does {m / lv:.0f}{TIMES} "
                           "LiteLLM's req/s at 32 connections.")
    if "floor" in t and "meridian" in t and 32 in results["conns"]:
        for key in t["floor"].get("paths", {}):
            m = _cell("load", 32, "rps")(t["meridian"], key)
            f = _cell("load", 32, "rps")(t["floor"], key)
            if m and f:
                ok = "✅" if m / f >= FLOOR_GOAL else "❌"
                out.append(f"- {PATHS[key].name}: meridian does {m / f:.2f}{TIMES} the Python "
                           f"floor's req/s at 32 connections (goal ≥ {FLOOR_GOAL}{TIMES}) {ok}.")
    out += overhead_summary(results)
    out += other_work_summary(results)
    errors = {name: sum(c.get("errors", 0) for p in tr.get("paths", {}).values()
                        for c in [*p.get("load", {}).values(), p.get("stream") or {}])
              for name, tr in t.items()}
    over = results.get("overhead", {}).get("paths", {})
    for variant in ("bare", "full"):
        n = sum(c["errors"] for p in over.values() for c in p[variant].values())
        if n:
            errors[f"meridian {variant}"] = n
    bad = {k: v for k, v in errors.items() if v}
    out.append(f"- Errors during load: {bad}." if bad else "- No errors during load.")
    return "\n".join(out) + "\n"


# Issue 4: with a client key and the usage ledger, the pass-through stays within this of the
# same pass-through with the master key and no ledger.
OVERHEAD_TOLERANCE = 0.15
OVERHEAD_HEADER = ["client key + ledger", "metric", "bare: master key, no ledger",
                   "full: client key + ledger", "full vs bare", "target"]
# (cell field, label, kind, whether full must stay below bare: latency and CPU; else above)
_OVERHEAD_METRICS = [("rps", "req/s", "rps", False), ("p50_ms", "p50 ms", "ms", True),
                     ("p99_ms", "p99 ms", "ms", None), ("cpu_ms", "CPU ms/req", "cpu", True)]


def overhead_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per row of the client key + ledger table (for the table, summary and tests)."""
    over = results.get("overhead")
    if not over:
        return []
    out = []
    for key, variants in over["paths"].items():
        for field, label, kind, lower in _OVERHEAD_METRICS:
            for c in over["conns"]:
                bare = variants["bare"][str(c)].get(field)
                full = variants["full"][str(c)].get(field)
                ratio = full / bare if bare and full is not None else None
                ok = None
                if lower is not None and ratio is not None:
                    ok = (ratio <= 1 + OVERHEAD_TOLERANCE if lower
                          else ratio >= 1 - OVERHEAD_TOLERANCE)
                unit = "conn" if c == 1 else "conns"
                out.append({"path": key, "metric": f"{label}, {c} {unit}", "kind": kind,
                            "bare": bare, "full": full, "ratio": ratio, "lower": lower, "ok": ok})
    return out


def overhead_table(results: dict[str, Any]) -> str:
    """The client key + ledger comparison, or nothing when it was not measured."""
    rows_ = overhead_rows(results)
    if not rows_:
        return ""
    over = results["overhead"]
    pct = f"{OVERHEAD_TOLERANCE:.0%}"
    lines = [
        f"Client key + usage ledger (issue 4: within {pct} of the bare numbers): two meridians "
        "side by side, *bare* (master key, `storage.usage_ledger: false`) and *full* (a client "
        "key made with `POST /admin/keys`, ledger on); logs and metrics on in both. Cells "
        f"interleaved, {over['reps']} per variant and row, summed.",
        "",
        "| " + " | ".join(OVERHEAD_HEADER) + " |",
        "|" + "---|" * len(OVERHEAD_HEADER),
    ]
    for r in rows_:
        if r["lower"] is None:
            target = ""
        else:
            bound = 1 + OVERHEAD_TOLERANCE if r["lower"] else 1 - OVERHEAD_TOLERANCE
            target = f"{'≤' if r['lower'] else '≥'} {bound:.2f}{TIMES}"
            if r["ok"] is not None:
                target += " ✅" if r["ok"] else " ❌"
        ratio = DASH if r["ratio"] is None else f"{r['ratio']:.2f}{TIMES}"
        cells = [PATHS[r["path"]].name, r["metric"], fmt(r["bare"], r["kind"]),
                 fmt(r["full"], r["kind"]), ratio, target]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def overhead_summary(results: dict[str, Any]) -> list[str]:
    over = results.get("overhead")
    if not over:
        return []
    checked = [r for r in overhead_rows(results) if r["ok"] is not None]
    bad = [f"{PATHS[r['path']].name} {r['metric']}" for r in checked if not r["ok"]]
    pct = f"{OVERHEAD_TOLERANCE:.0%}"
    verdict = (f"within {pct} on all {len(checked)} checked rows ✅" if not bad
               else f"more than {pct} off on: {'; '.join(bad)} ❌")
    rows_written = over["ledger_rows"]["full"].get(over["key"], 0)
    ledger = (f"the full meridian's ledger holds {rows_written:,} rows for its client key"
              if over["ledger_ok"] else
              f"⚠ the full meridian's ledger holds only {rows_written:,} rows for its client key")
    return [f"- Client key + ledger vs master key without ledger: {verdict}; {ledger}."]


def other_work_summary(results: dict[str, Any]) -> list[str]:
    """How much CPU other processes took during the timed cells: what makes a p99 jump."""
    seen: list[tuple[float, str]] = []
    for name, t in results["targets"].items():
        for key, p in t.get("paths", {}).items():
            for c, cell in [*p.get("load", {}).items(), ("stream", p.get("stream") or {})]:
                if cell.get("other_cores") is not None:
                    seen.append((cell["other_cores"], f"{name}, {key}, {c}"))
    for key, variants in results.get("overhead", {}).get("paths", {}).items():
        for variant, cells in variants.items():
            for c, cell in cells.items():
                for run in cell.get("runs", []):
                    if run.get("other_cores") is not None:
                        seen.append((run["other_cores"], f"{variant}, {key}, {c}"))
    if not seen:
        return []
    mean = sum(v for v, _ in seen) / len(seen)
    worst, where = max(seen)
    return [f"- Other work on the machine during the timed cells (±0.15): {mean:.2f} cores on "
            f"average, at most {worst:.2f} ({where} conns). Cells that share the cores with "
            "other work show it first in p99."]


MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"


def update_docs(doc: Path, block: str, marks: tuple[str, str] = (MARK_START, MARK_END)) -> None:
    """Replace a block of docs/bench.md (between the markers `marks`, the results' by
    default) with `block`."""
    first, last = marks
    text = doc.read_text() if doc.exists() else f"# Benchmark\n\n{first}\n{last}\n"
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        text = text.rstrip() + f"\n\n{first}\n{last}\n"
        start, end = text.find(first), text.find(last)
    doc.write_text(text[: start + len(first)] + "\n" + block.strip() + "\n" + text[end:])
