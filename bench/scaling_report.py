"""The tables of bench/scaling.py: storage and limits backends, then workers."""

from __future__ import annotations

from typing import Any

from report import DASH, TIMES

STORAGE = ("sqlite", "pg_redis")
WORKERS = ("workers_1", "workers_2")
STORAGE_HEADER = (
    "| OpenAI pass-through | conns | req/s SQLite + memory | req/s PostgreSQL + Redis | ratio "
    "| meridian CPU ms/req SQLite + memory | meridian CPU ms/req PostgreSQL + Redis | ratio "
    "| PostgreSQL CPU ms/req | Redis CPU ms/req | p50 ms SQLite + memory "
    "| p50 ms PostgreSQL + Redis |"
)
WORKERS_HEADER = (
    "| OpenAI pass-through | conns | req/s workers: 1 | req/s workers: 2 | ratio "
    "| meridian CPU ms/req workers: 1 | meridian CPU ms/req workers: 2 "
    "| Redis CPU ms/req workers: 1 | Redis CPU ms/req workers: 2 |"
)


def _ms(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def _ratio(new: float | None, old: float | None) -> str:
    return f"{new / old:.2f}{TIMES}" if new and old else DASH


def storage_table(rows: dict[str, Any]) -> list[str]:
    lines = [STORAGE_HEADER, "|" + "---|" * STORAGE_HEADER.count(" | ") + "---|"]
    for label, v in rows.items():
        kind, conns = label.split("|")
        a, b = v["sqlite"], v["pg_redis"]
        lines.append(
            f"| {kind} | {conns} | {a['rps']:,.0f} | {b['rps']:,.0f} "
            f"| {_ratio(b['rps'], a['rps'])} "
            f"| {_ms(a['cpu_ms'])} | {_ms(b['cpu_ms'])} | {_ratio(b['cpu_ms'], a['cpu_ms'])} "
            f"| {_ms(b['postgres_ms'])} | {_ms(b['redis_ms'])} "
            f"| {a['p50_ms']:.2f} | {b['p50_ms']:.2f} |"
        )
    return lines


def workers_table(rows: dict[str, Any]) -> list[str]:
    lines = [WORKERS_HEADER, "|" + "---|" * WORKERS_HEADER.count(" | ") + "---|"]
    for label, v in rows.items():
        kind, conns = label.split("|")
        a, b = v["workers_1"], v["workers_2"]
        lines.append(
            f"| {kind} | {conns} | {a['rps']:,.0f} | {b['rps']:,.0f} "
            f"| {_ratio(b['rps'], a['rps'])} "
            f"| {_ms(a['cpu_ms'])} | {_ms(b['cpu_ms'])} "
            f"| {_ms(a['redis_ms'])} | {_ms(b['redis_ms'])} |"
        )
    return lines


def _other(results: dict[str, Any], part: str) -> str:
    seen = [c["other_cores"] for row in results.get(part, {}).values() for c in row.values()]
    if not seen:
        return ""
    return f"{sum(seen) / len(seen):.2f} cores on average, at most {max(seen):.2f}"


def errors(results: dict[str, Any]) -> int:
    return sum(
        c["errors"]
        for part in ("storage", "workers")
        for row in results.get(part, {}).values()
        for c in row.values()
    )


def block(results: dict[str, Any], command: str, date: str) -> str:
    lines = [
        f"Command: `{command}` ({date}, {results['elapsed_s']:.0f} s, {results['duration_s']} s "
        f"per cell, {results['reps']} interleaved cells per variant and row, summed).",
        "",
        f"Machine: {results['machine']}.",
        "",
    ]
    if "storage" in results:
        lines += [
            "**Storage and limits.** One meridian on SQLite with limits in memory against one "
            "on PostgreSQL with limits in Redis, side by side, each called with a client key "
            "that has an rpm and a tpm (too large to refuse anything). PostgreSQL's and "
            "Redis's CPU per request are their own processes', not meridian's.",
            "",
            *storage_table(results["storage"]),
            "",
            f"- Other work on the machine during these cells (±0.15): "
            f"{_other(results, 'storage')}.",
            "",
        ]
    if "workers" in results:
        lines += [
            "**Workers.** `server.workers: 1` against `2`, both on SQLite with limits in "
            "Redis, the same kind of client key. wrk, the fake upstream, Redis and every "
            "worker share the machine's 2 cores: the ceiling here is the machine, not "
            "meridian.",
            "",
            *workers_table(results["workers"]),
            "",
            f"- Other work on the machine during these cells (±0.15): "
            f"{_other(results, 'workers')}.",
            "",
        ]
    lines.append(f"- Failed requests: {errors(results)}.")
    return "\n".join(lines) + "\n"
