"""``meridian migrate`` and ``meridian check`` against real databases: SQLite files and a real
PostgreSQL server (wrong password, no server, no database, a unix socket)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from meridian import cli
from meridian.storage import MIGRATIONS, make_store
from pgserver import PASSWORD, PASSWORD_ROLE, PostgresServer
from redisserver import RedisServer

RAW = {
    "providers": {"oai": {"type": "openai", "api_key": "sk-x", "base_url": "http://127.0.0.1:9"}},
    "models": {"gpt-test": {"provider": "oai", "model": "gpt-4o-mini"}},
}


def config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "meridian.yaml"
    path.write_text(json.dumps({**RAW, "storage": {"url": url}}), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_migrate_an_empty_database_then_again(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store_url: str
) -> None:
    cfg = str(config_file(tmp_path, store_url))
    code, out, err = run(capsys, "migrate", "--config", cfg)
    latest = len(MIGRATIONS)
    assert (code, err) == (0, "")
    assert f"schema version 0 -> {latest} ({latest} migrations run)" in out
    code, out, _ = run(capsys, "migrate", "--config", cfg)
    assert code == 0 and f"schema version {latest}, up to date" in out
    store = make_store(store_url).open(migrate=False)
    try:
        assert store.schema_version() == latest
        assert store.query("SELECT COUNT(*) FROM keys")[0][0] == 0
    finally:
        store.close()


def test_check_says_the_database_is_reachable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store_url: str
) -> None:
    make_store(store_url).open().close()
    code, out, _ = run(capsys, "check", "--config", str(config_file(tmp_path, store_url)))
    assert code == 0
    assert f"connected, schema version {len(MIGRATIONS)}" in out


def test_check_with_a_wrong_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres: PostgresServer
) -> None:
    wrong = "not-the-" + PASSWORD
    url = f"postgresql://{PASSWORD_ROLE}:{wrong}@127.0.0.1:{postgres.port}/postgres"
    code, out, err = run(capsys, "check", "--config", str(config_file(tmp_path, url)))
    assert code == 1
    assert "password authentication failed" in out
    assert "check the user name and password in storage.url" in out
    assert wrong not in out + err
    # The right one connects.
    url = url.replace(wrong, PASSWORD)
    code, out, _ = run(capsys, "check", "--config", str(config_file(tmp_path, url)))
    assert code == 0 and "connected" in out and PASSWORD not in out


def test_check_with_no_server_or_no_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, postgres: PostgresServer
) -> None:
    closed = postgres.url("postgres").replace(str(postgres.port), "9")  # nothing listens on 9
    code, out, _ = run(capsys, "check", "--config", str(config_file(tmp_path, closed)))
    assert code == 1
    assert "is the PostgreSQL server running and listening there?" in out
    code, out, _ = run(
        capsys, "check", "--config", str(config_file(tmp_path, postgres.url("no_such_db")))
    )
    assert code == 1
    assert 'database "no_such_db" does not exist' in out and "createdb" in out


def test_a_unix_socket_url(postgres: PostgresServer) -> None:
    store = make_store(postgres.socket_url(postgres.new_database())).open()
    try:
        assert store.schema_version() == len(MIGRATIONS)
    finally:
        store.close()


def test_without_the_driver_the_message_says_what_to_install(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    # A real `meridian check` in a Python where psycopg cannot be imported.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['psycopg'] = None\nsys.modules['psycopg_pool'] = None\n"
    )
    cfg = config_file(tmp_path, postgres.url("postgres"))
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    done = subprocess.run(
        [sys.executable, "-m", "meridian", "check", "--config", str(cfg)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "pip install 'meridian[postgres]'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.url(postgres.new_database())
    errors: list[BaseException] = []

    def start() -> None:
        try:
            make_store(url).open().close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    store = make_store(url).open()
    try:
        versions = [r[0] for r in store.query("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        store.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_serve_refuses_an_unreachable_database_in_one_line(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = f"postgresql://{PASSWORD_ROLE}:not-it@127.0.0.1:{postgres.port}/postgres"
    cfg = config_file(tmp_path, url)
    done = subprocess.run(
        [sys.executable, "-m", "meridian", "serve", "--config", str(cfg), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "password authentication failed" in done.stderr
    assert "Traceback" not in done.stderr and "not-it" not in done.stderr


def test_check_pings_the_redis_of_shared_limits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / "meridian.yaml"
    store = f"sqlite:///{tmp_path / 'meridian.db'}"
    guarded = RedisServer(tmp_path / "guarded", password="the-password").start()
    try:
        wrong = guarded.url.replace("the-password", "not-it")
        cases = (
            (redis_url, 0, "(connected)"),
            (f"unix://{tmp_path / 'no-redis.sock'}", 1, "error cannot use Redis: ConnectionError"),
            (wrong, 1, "error cannot use Redis: ConnectionError: invalid username-password pair"),
        )
        for url, code_wanted, words in cases:
            _check_redis(capsys, path, store, url, code_wanted, words)
    finally:
        guarded.stop()


def _check_redis(
    capsys: pytest.CaptureFixture[str],
    path: Path,
    store: str,
    url: str,
    code_wanted: int,
    words: str,
) -> None:
    path.write_text(
        json.dumps({**RAW, "storage": {"url": store}, "limits": {"redis_url": url}}),
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "check", "--config", str(path))
    assert code == code_wanted, out
    assert words in " ".join(out.split()), out
    assert "limits: unix://" in out and "not-it" not in out and "the-password" not in out
