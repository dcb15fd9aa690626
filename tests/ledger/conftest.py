"""Fixtures for the ledger, metrics, logs and dashboard tests (helpers: `ledgerhelpers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.store import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meridian.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path).open()
    yield s
    s.close()
