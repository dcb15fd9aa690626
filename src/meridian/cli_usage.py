"""``meridian usage``: what was spent, per key, per model or per day, from the ledger.

Reads the database directly (SQLite's WAL, or PostgreSQL: safe while the server runs and
writes). A table on a
terminal; ``--csv`` writes machine-readable rows (raw numbers, no formatting) for export.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from meridian.config import Settings
from meridian.ledger import GROUP_COLUMNS, SummaryRow, usage_summary
from meridian.storage import StoreError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_NUMBERS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced",
    "avg_latency_ms",
)


def parse_since(text: str, now: float) -> float:
    """``7d``/``24h``/``30m``/``2w`` ago, or a local date/time in ISO form (``2025-06-01``)."""
    text = text.strip()
    unit = _UNITS.get(text[-1:].lower())
    if unit is not None:
        try:
            amount = float(text[:-1])
        except ValueError:
            amount = -1
        if amount >= 0:
            return now - amount * unit
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 7d, 24h, 30m, 2w or a date like 2025-06-01, got {text!r}"
        ) from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "usage",
        help="requests, tokens and estimated cost from the usage ledger",
        description="Totals from the usage ledger. Costs are estimates at API list prices "
        "(subscription calls at the API-dollar figure the Claude CLI reports).",
    )
    p.add_argument(
        "--since",
        default="7d",
        metavar="WHEN",
        help="a duration ago (7d, 24h, 30m, 2w) or a local date (2025-06-01); default 7d",
    )
    p.add_argument(
        "--by", choices=("key", "model", "day"), default="key", help="group rows (default: key)"
    )
    p.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    p.set_defaults(handler=handler)


def handler(settings: Settings, args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_since(args.since, now)
    except argparse.ArgumentTypeError as exc:
        print(f"meridian usage: --since: {exc}", file=sys.stderr)
        return 2
    path = settings.storage.path
    rows: list[SummaryRow] = []
    if settings.storage.url is not None or path.exists():
        try:
            store = settings.storage.store().open()
        except StoreError as exc:
            print(f"meridian usage: {exc}", file=sys.stderr)
            return 2
        try:
            rows = usage_summary(store, since, args.by)
        finally:
            store.close()
    elif not args.csv:
        print(f"no usage recorded yet ({path} does not exist)", file=sys.stderr)
    if args.csv:
        write_csv(rows, args.by, sys.stdout)
    else:
        print_table(rows, args.by, since)
    return 0


def write_csv(rows: list[SummaryRow], by: str, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*GROUP_COLUMNS[by], *_NUMBERS])
    for r in rows:
        latency = "" if r.avg_latency_ms is None else f"{r.avg_latency_ms:.1f}"
        writer.writerow(
            [
                *r.group,
                r.requests,
                r.errors,
                r.input_tokens,
                r.output_tokens,
                r.cache_read_tokens,
                r.cache_creation_tokens,
                r.reasoning_tokens,
                f"{r.cost_usd:.6f}",
                r.unpriced,
                latency,
            ]
        )


def print_table(rows: list[SummaryRow], by: str, since: float) -> None:
    from rich.console import Console
    from rich.table import Table

    when = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M")
    table = Table(title=f"usage since {when}, by {by}", title_justify="left")
    for name in GROUP_COLUMNS[by]:
        table.add_column(name.replace("_", " "), no_wrap=True)
    for name in ("requests", "errors", "input", "output", "cache read", "cache write"):
        table.add_column(name, justify="right")
    table.add_column("cost (USD)", justify="right")
    table.add_column("avg latency", justify="right")
    for r in rows:
        table.add_row(*r.group, *_cells(r))
    if len(rows) > 1:
        total = _total(rows)
        table.add_section()
        table.add_row("total", *[""] * (len(GROUP_COLUMNS[by]) - 1), *_cells(total))
    # Wide when piped (rich would wrap at 80 columns and split the numbers).
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    if any(r.unpriced for r in rows):
        console.print("* calls to models without a known price are not in the cost")


def _cells(r: SummaryRow) -> list[str]:
    if r.unpriced == r.requests:
        cost = "n/a*"  # nothing priced: "0.0000" would claim it was free
    else:
        cost = f"{r.cost_usd:,.4f}" + ("*" if r.unpriced else "")
    latency = "" if r.avg_latency_ms is None else f"{r.avg_latency_ms:,.0f} ms"
    counts: list[Any] = [
        r.requests,
        r.errors,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_creation_tokens,
    ]
    return [f"{n:,}" for n in counts] + [cost, latency]


def _total(rows: list[SummaryRow]) -> SummaryRow:
    requests = sum(r.requests for r in rows)
    weighted = sum((r.avg_latency_ms or 0) * r.requests for r in rows if r.avg_latency_ms)
    timed = sum(r.requests for r in rows if r.avg_latency_ms is not None)
    return SummaryRow(
        group=("total",),
        requests=requests,
        errors=sum(r.errors for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cache_read_tokens=sum(r.cache_read_tokens for r in rows),
        cache_creation_tokens=sum(r.cache_creation_tokens for r in rows),
        reasoning_tokens=sum(r.reasoning_tokens for r in rows),
        cost_usd=sum(r.cost_usd for r in rows),
        unpriced=sum(r.unpriced for r in rows),
        avg_latency_ms=weighted / timed if timed else None,
    )
