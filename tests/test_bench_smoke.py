"""Keeps the benchmark runnable: a tiny `bench/run.py` run, checked for shape, never for speed.

It really starts the fake upstream and meridian and drives them (wrk when installed, the
Python load generator otherwise), so a change that breaks the bench fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATH_LABELS = {
    "openai": "OpenAI pass-through",
    "anthropic": "Anthropic pass-through",
    "translated": "Translated (OpenAI client → Anthropic upstream)",
}
CONNS = 2
PATH_METRICS = [
    f"req/s, {CONNS} conns",
    f"p50 ms, {CONNS} conns",
    f"p99 ms, {CONNS} conns",
    f"CPU ms/req, {CONNS} conns",
    f"stream req/s, {CONNS} conns",
    f"stream CPU ms/req, {CONNS} conns",
    "stream first chunk p50 ms, 1 conn",
]
PROCESS_METRICS = ["RSS idle MB", "RSS after load MB", "cold start s (median)"]
NUMBER = re.compile(r"^[+-]?[0-9][0-9,]*(\.[0-9]+)?( ms|\u00d7)?$")


def run_bench(tmp_path: Path, *extra: str) -> tuple[dict[tuple[str, str], list[str]], dict]:
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--no-install",
           "--conns", str(CONNS), "--stream-conns", str(CONNS), "--duration", "1",
           "--ttft-samples", "5", "--cold-runs", "1", "--out", str(tmp_path), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    table = (tmp_path / "latest.md").read_text()
    assert table.strip() in done.stdout  # what is printed is what is saved
    rows: dict[tuple[str, str], list[str]] = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| path |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
    return rows, json.loads((tmp_path / "latest.json").read_text())


def assert_numeric(cell: str, row: tuple[str, str], column: str) -> None:
    assert NUMBER.match(cell), f"{column} of {row} is not a number: {cell!r}"


def check_path_rows(rows: dict[tuple[str, str], list[str]], label: str) -> None:
    for metric in PATH_METRICS:
        row = (label, metric)
        assert row in rows, f"missing row {row}"
        direct, meridian, versus, _litellm, _target = rows[row]
        assert_numeric(meridian, row, "meridian")
        if "CPU" in metric:  # proxy CPU only: the direct column has none
            assert direct == "\u2013"
        else:
            assert_numeric(direct, row, "direct")
            assert_numeric(versus, row, "meridian vs direct")


def check_cells(results: dict, paths: list[str]) -> None:
    meridian = results["targets"]["meridian"]["paths"]
    assert sorted(meridian) == sorted(paths)
    for path in paths:
        cells = [*meridian[path]["load"].values(), meridian[path]["stream"]]
        for cell in cells:
            assert cell["errors"] == 0
            assert cell["requests"] > 0
            # Every answer came from the upstream: meridian neither cached nor invented one.
            assert cell["upstream_calls"] >= cell["requests"]


@pytest.mark.slow
def test_bench_smoke_has_every_row(tmp_path: Path) -> None:
    tool = "wrk" if shutil.which("wrk") else "python"
    rows, results = run_bench(tmp_path, "--tool", tool)
    assert results["tool"] == tool
    assert "litellm" not in results["targets"]
    for label in PATH_LABELS.values():
        check_path_rows(rows, label)
    for metric in PROCESS_METRICS:
        row = ("Process", metric)
        assert row in rows, f"missing row {row}"
        assert_numeric(rows[row][1], row, "meridian")
    assert len(rows) == len(PATH_LABELS) * len(PATH_METRICS) + len(PROCESS_METRICS)
    check_cells(results, list(PATH_LABELS))


@pytest.mark.slow
def test_bench_python_load_generator(tmp_path: Path) -> None:
    """The fallback for machines without wrk keeps working too (one path, to stay quick)."""
    rows, results = run_bench(tmp_path, "--tool", "python", "--paths", "translated")
    assert results["tool"] == "python"
    check_path_rows(rows, PATH_LABELS["translated"])
    assert not any(label == PATH_LABELS["openai"] for label, _ in rows)
    check_cells(results, ["translated"])
