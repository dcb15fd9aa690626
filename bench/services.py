"""PostgreSQL and Redis for the scaling bench: started from Debian's binaries the way the
tests start them (`tests/pgserver.py`, `tests/redisserver.py`), with their CPU readable.

Each server's CPU is that of its process tree: the postmaster and its backends (one per
pooled connection, plus the WAL writer, checkpointer and the like), or redis-server alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType

from procs import cpu_seconds
from targets import ROOT

sys.path.insert(0, str(ROOT / "tests"))

from pgserver import PostgresServer
from redisserver import RedisServer


class Services:
    """One PostgreSQL cluster and one Redis, up for the whole run."""

    def __init__(self, workdir: Path) -> None:
        self.redis = RedisServer(workdir / "redis")
        self.postgres = PostgresServer()

    def __enter__(self) -> Services:
        try:
            self.redis.start()
            self.postgres.init()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.redis.stop()
        self.postgres.destroy()

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def database(self) -> str:
        """The URL of a fresh, empty database (one per meridian: each migrates its own)."""
        return self.postgres.url(self.postgres.new_database())

    def _postmaster(self) -> int:
        # postmaster.pid's first line is the postmaster's pid; its backends are its children.
        return int((self.postgres.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by each server."""
        assert self.redis.proc is not None
        redis = cpu_seconds(self.redis.proc.pid)
        return {"postgres": cpu_seconds(self._postmaster()), "redis": redis}
