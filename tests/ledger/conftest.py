"""Fixtures for the ledger, metrics, logs and dashboard tests (helpers: `ledgerhelpers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meridian.storage import Store, make_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meridian.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated store on each backend (see `store_url` in tests/conftest.py)."""
    s = make_store(store_url).open()
    yield s
    s.close()
