"""Keeps bench/scaling.py runnable: a tiny run, checked for its rows, never for speed.

It really starts PostgreSQL, Redis, the fake upstream and four meridians (one of them with two
workers), as tests/test_bench_smoke.py does for bench/run.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^[0-9][0-9,]*(\.[0-9]+)?\u00d7?$")
STORAGE = "| OpenAI pass-through | conns | req/s SQLite + memory |"
WORKERS = "| OpenAI pass-through | conns | req/s workers: 1 |"


def tables(text: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    rows: list[list[str]] | None = None
    for line in text.splitlines():
        if line.startswith((STORAGE, WORKERS)):
            rows = out[STORAGE if line.startswith(STORAGE) else WORKERS] = []
        elif line.startswith("|---"):
            continue
        elif line.startswith("| ") and rows is not None:
            rows.append([c.strip() for c in line.strip("|").split("|")])
        else:
            rows = None
    return out


@pytest.mark.slow
def test_scaling_bench_has_every_row(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "scaling.py"), "--smoke", "--no-install",
           "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = (tmp_path / "scaling.md").read_text()
    assert text.strip() in done.stdout
    found = tables(text)
    assert [r[:2] for r in found[STORAGE]] == [["plain", "2"], ["streamed", "2"]]
    assert [r[:2] for r in found[WORKERS]] == [["plain", "2"]]
    for row in found[STORAGE] + found[WORKERS]:
        for cell in row[2:]:
            assert NUMBER.match(cell), f"not a number in {row}: {cell!r}"
    results = json.loads((tmp_path / "scaling.json").read_text())
    for part, variants in (
        ("storage", {"sqlite", "pg_redis"}),
        ("workers", {"workers_1", "workers_2"}),
    ):
        for row in results[part].values():
            assert set(row) == variants
            for cell in row.values():
                assert cell["errors"] == 0 and cell["requests"] > 0
                assert cell["upstream_calls"] >= cell["requests"]
