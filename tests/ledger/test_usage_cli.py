"""``meridian usage``: a table or CSV from the ledger, read while the server may be writing."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledgerhelpers import rec

from meridian import cli
from meridian.cli_usage import parse_since
from meridian.ledger import Ledger
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.records import CallRecord
from meridian.storage import Store

HOUR = 3600.0


@pytest.fixture
def config_file(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "meridian.yaml"
    path.write_text(f"storage:\n  url: {store_url}\n", encoding="utf-8")
    return path


@pytest.fixture
def sqlite_config(tmp_path: Path, db_path: Path) -> Path:
    path = tmp_path / "meridian.yaml"
    path.write_text(f"storage:\n  path: {db_path}\n", encoding="utf-8")
    return path


@pytest.fixture
async def records(store: Store) -> list[CallRecord]:
    now = time.time()
    out = [
        rec(1, started_at=now - 1 * HOUR, key_name="pulse", usage=Usage(1000, 200)),
        rec(2, started_at=now - 2 * HOUR, key_name="pulse", usage=Usage(3000, 100, 50)),
        rec(3, started_at=now - 3 * HOUR, key_name="notes", alias="claude-test", provider="ant",
            upstream_model="claude-haiku-4-5", usage=Usage(500, 500)),
        rec(4, started_at=now - 5 * HOUR, key_name="notes", status=429, error_type="rate_limit",
            usage=Usage()),
        rec(5, started_at=now - 10 * 86_400, key_name="old", usage=Usage(9, 9)),
        rec(6, started_at=now - 4 * HOUR, key_name="pulse", alias="local", provider="ollama",
            upstream_model="llama3.1:8b", usage=Usage(70, 30)),
    ]  # fmt: skip
    ledger = Ledger(store, PriceTable())
    for r in out:
        ledger.record(r)
    await ledger.aclose()
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["usage", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_by_model(
    capsys: pytest.CaptureFixture[str], config_file: Path, records: list[CallRecord]
) -> None:
    code, out, _ = run_cli(capsys, "--config", str(config_file), "--by", "model", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    recent = [r for r in records if r.key_name != "old"]
    got = {(r["alias"], r["provider"], r["upstream_model"]): r for r in rows}
    assert set(got) == {(r.alias, r.provider, r.upstream_model) for r in recent}
    for model_key, row in got.items():
        mine = [r for r in recent if (r.alias, r.provider, r.upstream_model) == model_key]
        assert int(row["requests"]) == len(mine)
        assert int(row["errors"]) == sum(r.status >= 400 for r in mine)
        assert int(row["input_tokens"]) == sum(r.usage.input_tokens for r in mine)
        assert int(row["output_tokens"]) == sum(r.usage.output_tokens for r in mine)
        assert int(row["cache_read_tokens"]) == sum(r.usage.cache_read_tokens for r in mine)
        costs = [PriceTable().estimate(r.upstream_model, r.usage) for r in mine]
        assert float(row["cost_usd"]) == pytest.approx(sum(c or 0 for c in costs), abs=1e-6)
        assert int(row["unpriced"]) == sum(c is None for c in costs)


def test_since_limits_the_window(
    capsys: pytest.CaptureFixture[str], config_file: Path, records: list[CallRecord]
) -> None:
    _, out, _ = run_cli(capsys, "-c", str(config_file), "--since", "150m", "--csv")
    rows = {r["key"]: int(r["requests"]) for r in csv.DictReader(io.StringIO(out))}
    assert rows == {"pulse": 2}
    _, out, _ = run_cli(capsys, "-c", str(config_file), "--since", "30d", "--csv")
    rows = {r["key"]: int(r["requests"]) for r in csv.DictReader(io.StringIO(out))}
    assert rows == {"pulse": 3, "notes": 2, "old": 1}


def test_table_by_key(
    capsys: pytest.CaptureFixture[str], config_file: Path, records: list[CallRecord]
) -> None:
    code, out, _ = run_cli(capsys, "--config", str(config_file))
    assert code == 0
    lines = out.splitlines()
    assert "by key" in lines[0]
    pulse = next(line for line in lines if "pulse" in line)
    # pulse: 3 requests, 1000+3000+70 input tokens.
    assert "4,070" in pulse and " 3 " in pulse
    total = next(line for line in lines if line.startswith("│ total"))
    assert "4,570" in total  # every input token of the window
    assert "old" not in out  # ten days ago, outside the default 7d
    assert "not in the cost" in out  # llama has no price


def test_by_day(
    capsys: pytest.CaptureFixture[str], config_file: Path, records: list[CallRecord]
) -> None:
    _, out, _ = run_cli(capsys, "-c", str(config_file), "--by", "day", "--since", "30d", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    days: dict[str, int] = {}
    for r in records:
        day = time.strftime("%Y-%m-%d", time.localtime(r.started_at))
        days[day] = days.get(day, 0) + 1
    assert {r["day"]: int(r["requests"]) for r in rows} == days


def test_bad_since(capsys: pytest.CaptureFixture[str], sqlite_config: Path) -> None:
    code, _, err = run_cli(capsys, "-c", str(sqlite_config), "--since", "last tuesday")
    assert code == 2
    assert "--since" in err and "7d" in err


def test_no_database_yet(
    capsys: pytest.CaptureFixture[str], sqlite_config: Path, db_path: Path
) -> None:
    code, out, err = run_cli(capsys, "-c", str(sqlite_config), "--csv")
    assert code == 0
    assert out.splitlines()[0].startswith("key,requests,errors,input_tokens")
    assert not db_path.exists()
    code, _, err = run_cli(capsys, "-c", str(sqlite_config))
    assert code == 0 and "no usage recorded yet" in err


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("24h", now) == now - 86_400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2w", now) == now - 14 * 86_400
    assert parse_since("2025-06-01", now) == time.mktime((2025, 6, 1, 0, 0, 0, 0, 0, -1))


def test_as_a_real_command(config_file: Path, records: list[CallRecord]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "meridian", "usage", "--config", str(config_file), "--csv"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: int(r["requests"]) for r in csv.DictReader(io.StringIO(proc.stdout))}
    assert rows == {"pulse": 3, "notes": 2}
