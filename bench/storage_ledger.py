"""The usage ledger's write path on SQLite and on PostgreSQL, and the async alternative.

    .venv/bin/python bench/storage_ledger.py --postgres postgresql://USER@HOST/DB [--batches 200]

Each row writes ``--batches`` batches of 1,024 usage rows (the ledger's default batch) from
an event loop, as the ledger's writer task does, and reports batches/s, rows/s and the CPU
of this process per batch:

- sqlite: `SQLiteStore.append` through ``asyncio.to_thread`` (what meridian does);
- postgresql, sync pool: `PostgresStore.append` (COPY) through ``asyncio.to_thread`` (what
  meridian does);
- postgresql, async: the same COPY on psycopg's ``AsyncConnection``, on the loop itself (the
  alternative that was not built: see docs/scaling.md).

The PostgreSQL database must be empty or a meridian one; the rows are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from meridian.ledger import COLUMNS  # noqa: E402
from meridian.storage import make_store  # noqa: E402

BATCH = 1024


def rows(batch: int) -> list[tuple[Any, ...]]:
    now = time.time()
    return [
        (now + i, f"req_{batch}_{i}", 1, "pulse", "openai", "/v1/chat/completions", "gpt-test",
         "oai", "gpt-4o-mini", 200, 100 + i, 20, 0, 0, 0, 0.0001, 120.5, None, 0, None, "relay",
         1)
        for i in range(BATCH)
    ]  # fmt: skip


async def measure(write: Callable[[list[tuple[Any, ...]]], Awaitable[None]], n: int) -> str:
    batches = [rows(b) for b in range(n)]
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches:
        await write(batch)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return f"{n / wall:,.0f} | {n * BATCH / wall:,.0f} | {cpu / n * 1000:.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", required=True, metavar="URL")
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    print("| store | batches/s | rows/s | CPU ms/batch |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(str(Path(tmp) / "bench.db")).open()
        result = await measure(
            lambda b: asyncio.to_thread(store.append, "usage", COLUMNS, b), args.batches
        )
        store.close()
        print(f"| sqlite (to_thread) | {result} |")
    pg = make_store(args.postgres).open()
    try:
        result = await measure(
            lambda b: asyncio.to_thread(pg.append, "usage", COLUMNS, b), args.batches
        )
        print(f"| postgresql, sync pool (to_thread) | {result} |")
        import psycopg

        async with await psycopg.AsyncConnection.connect(args.postgres, autocommit=True) as conn:
            sql = f"COPY usage ({', '.join(COLUMNS)}) FROM STDIN"

            async def write(batch: list[tuple[Any, ...]]) -> None:
                async with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                    for row in batch:
                        await copy.write_row(row)

            result = await measure(write, args.batches)
        print(f"| postgresql, async connection (on the loop) | {result} |")
    finally:
        with pg.transaction() as c:
            c.execute("DELETE FROM usage WHERE request_id LIKE 'req\\_%'")
        pg.close()


if __name__ == "__main__":
    asyncio.run(main())
