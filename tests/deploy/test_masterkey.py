"""The master key file is written by one explicit, logged step (``meridian serve`` at its first
start), never as a side effect of building the app or of a read-only command."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from meridian import config, masterkey, server


def settings(tmp_path: Path, **server_conf: str) -> config.Settings:
    raw = {"server": server_conf, "storage": {"path": str(tmp_path / "state" / "m.db")}}
    return config.validate(raw, "<test>")


def test_building_the_app_never_writes_the_key_file(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(masterkey.MasterKeyMissing, match="generates it on first start"):
        server.build(s)
    assert not (tmp_path / "state" / "master_key").exists()
    assert masterkey.describe(s).startswith("none yet")


def test_ensure_generates_once_and_logs_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="meridian.masterkey"):
        key = masterkey.ensure(s)
    path = tmp_path / "state" / "master_key"
    assert [r.path for r in caplog.records] == [str(path)]  # type: ignore[attr-defined]
    assert key not in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == key + "\n"
    caplog.clear()
    assert masterkey.ensure(s) == key == masterkey.load(s) == server.master_key(s)
    assert not caplog.records  # the second start finds it: nothing generated, nothing logged
    assert masterkey.describe(s) == str(path)
    server.build(s)  # and the app builds on it


def test_a_configured_key_wins_and_no_file_is_written(tmp_path: Path) -> None:
    s = settings(tmp_path, master_key="sk-configured-0123456789")
    assert masterkey.ensure(s) == "sk-configured-0123456789" == masterkey.load(s)
    assert masterkey.describe(s) == "server.master_key"
    assert not (tmp_path / "state").exists()
