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
MAIN_HEADER = "| path | metric |"
# Issue 4's table: client key + ledger against master key without ledger, pass-through only.
OVERHEAD_HEADER = "| client key + ledger | metric |"
OVERHEAD_CONNS = [1, 2]
OVERHEAD_METRICS = [
    f"{m}, {c} {'conn' if c == 1 else 'conns'}"
    for m in ("req/s", "p50 ms", "p99 ms", "CPU ms/req")
    for c in OVERHEAD_CONNS
]
OVERHEAD_TARGET = re.compile(r"^[\u2264\u2265] [01]\.[0-9]{2}\u00d7 [\u2705\u274c]$")

Rows = dict[tuple[str, str], list[str]]


def run_bench(tmp_path: Path, *extra: str) -> tuple[dict[str, Rows], dict]:
    """Runs the smoke bench; returns its tables (by header) as {(path, metric): cells}."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--smoke",
        "--no-install",
        "--conns",
        str(CONNS),
        "--stream-conns",
        str(CONNS),
        "--duration",
        "1",
        "--ttft-samples",
        "5",
        "--cold-runs",
        "1",
        "--overhead-conns",
        ",".join(map(str, OVERHEAD_CONNS)),
        "--out",
        str(tmp_path),
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    text = (tmp_path / "latest.md").read_text()
    assert text.strip() in done.stdout  # what is printed is what is saved
    tables: dict[str, Rows] = {}
    rows: Rows | None = None
    for line in text.splitlines():
        if line.startswith((MAIN_HEADER, OVERHEAD_HEADER)):
            header = MAIN_HEADER if line.startswith(MAIN_HEADER) else OVERHEAD_HEADER
            assert header not in tables, f"two tables headed {header}"
            rows = tables[header] = {}
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            assert rows is not None, f"table row before any header: {line}"
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(cells[0], cells[1])] = cells[2:]
        else:
            rows = None  # a table ends at the first line that is not a row
    return tables, json.loads((tmp_path / "latest.json").read_text())


def assert_numeric(cell: str, row: tuple[str, str], column: str) -> None:
    assert NUMBER.match(cell), f"{column} of {row} is not a number: {cell!r}"


def check_path_rows(rows: Rows, label: str, *, floor: bool) -> None:
    for metric in PATH_METRICS:
        row = (label, metric)
        assert row in rows, f"missing row {row}"
        direct, floor_cell, meridian, versus, versus_floor, _litellm, _target = rows[row]
        assert_numeric(meridian, row, "meridian")
        if "CPU" in metric:  # proxy CPU only: the direct column has none
            assert direct == "\u2013"
        else:
            assert_numeric(direct, row, "direct")
            assert_numeric(versus, row, "meridian vs direct")
        # The Python floor passes bytes through: it has no translated path.
        if floor:
            assert_numeric(floor_cell, row, "floor")
            assert_numeric(versus_floor, row, "meridian vs floor")
        else:
            assert floor_cell == versus_floor == "\u2013"


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


def check_overhead(tables: dict[str, Rows], results: dict, text: str) -> None:
    """Issue 4's rows: both pass-through paths, every metric, a ratio, and a verdict where
    the 15% target applies (never whether it is met: this run is far too short)."""
    rows = tables[OVERHEAD_HEADER]
    labels = [PATH_LABELS["openai"], PATH_LABELS["anthropic"]]
    assert set(rows) == {(label, metric) for label in labels for metric in OVERHEAD_METRICS}
    for row, (bare, full, ratio, target) in rows.items():
        for column, cell in (("bare", bare), ("full", full), ("full vs bare", ratio)):
            assert_numeric(cell, row, column)
        if row[1].startswith("p99"):
            assert target == ""  # shown, not judged
        else:
            assert OVERHEAD_TARGET.match(target), f"target of {row}: {target!r}"
    assert "- Client key + ledger vs master key without ledger:" in text
    over = results["overhead"]
    assert sorted(over["paths"]) == ["anthropic", "openai"]
    answered = 0
    for variants in over["paths"].values():
        for variant in ("bare", "full"):
            assert sorted(variants[variant], key=int) == [str(c) for c in OVERHEAD_CONNS]
            for cell in variants[variant].values():
                assert cell["errors"] == 0 and cell["requests"] > 0
                assert cell["upstream_calls"] >= cell["requests"]
        answered += sum(c["requests"] for c in variants["full"].values())
    # The full meridian's ledger really recorded its client key's calls; the bare one none.
    assert over["ledger_ok"] is True
    assert over["ledger_rows"]["full"][over["key"]] >= answered
    assert over["ledger_rows"]["bare"] == {}


@pytest.mark.slow
def test_bench_smoke_has_every_row(tmp_path: Path) -> None:
    tool = "wrk" if shutil.which("wrk") else "python"
    tables, results = run_bench(tmp_path, "--tool", tool)
    assert set(tables) == {MAIN_HEADER, OVERHEAD_HEADER}
    rows = tables[MAIN_HEADER]
    assert results["tool"] == tool
    assert "litellm" not in results["targets"]
    for key, label in PATH_LABELS.items():
        check_path_rows(rows, label, floor=key != "translated")
    assert sorted(results["targets"]["floor"]["paths"]) == ["anthropic", "openai"]
    for metric in PROCESS_METRICS:
        row = ("Process", metric)
        assert row in rows, f"missing row {row}"
        assert_numeric(rows[row][2], row, "meridian")
    assert len(rows) == len(PATH_LABELS) * len(PATH_METRICS) + len(PROCESS_METRICS)
    check_cells(results, list(PATH_LABELS))
    check_overhead(tables, results, (tmp_path / "latest.md").read_text())


@pytest.mark.slow
def test_bench_python_load_generator(tmp_path: Path) -> None:
    """The fallback for machines without wrk keeps working too (one path, to stay quick)."""
    tables, results = run_bench(tmp_path, "--tool", "python", "--paths", "translated")
    # No pass-through path selected: no client key + ledger comparison either.
    assert set(tables) == {MAIN_HEADER}
    assert "overhead" not in results
    rows = tables[MAIN_HEADER]
    assert results["tool"] == "python"
    check_path_rows(rows, PATH_LABELS["translated"], floor=False)
    assert "floor" not in results["targets"]
    assert not any(label == PATH_LABELS["openai"] for label, _ in rows)
    check_cells(results, ["translated"])


def test_soak_runs_and_the_ledger_is_exact_under_faults() -> None:
    """A short soak: every fault and every kind of client at once. Checked for shape and for
    the one exact property it reports: each API request that reached a handler (served,
    failed, refused or left) is one call row in the ledger."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.2", "--clients", "8"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT / "bench",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "| after the load |" in out
    ledger = next(line for line in out.splitlines() if line.startswith("Ledger:"))
    assert ledger.endswith("✅."), ledger
    for scenario in ("plain: 200", "fallback: 200", "slowloris: 408", "big_head: 431",
                     "deep_json: 400", "no_key: 401"):  # fmt: skip
        assert f"| {scenario} |" in out, scenario
