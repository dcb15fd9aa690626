"""Fixtures shared by every test suite. Keep this file small: one fixture, one purpose.
The real servers a test needs (PostgreSQL, Redis) are started here once per session.

``tests/`` is on ``sys.path`` (pytest's rootdir-less ``prepend`` import mode puts this
file's directory there), so test modules import the fakes as ``from fakes import ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from pgserver import PostgresServer
from redisserver import RedisServer


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A loopback OpenAI-compatible server; configure ``base_url=fake_openai.url``."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A loopback Anthropic Messages server; configure ``base_url=fake_anthropic.url``."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that kill theirs start their own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    assert redis_server.command("FLUSHALL") == "+OK"
    return redis_server.url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run, started the first time a test asks."""
    server = PostgresServer().init()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meridian.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(server.new_database())
