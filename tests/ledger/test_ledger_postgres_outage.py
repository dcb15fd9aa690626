"""A PostgreSQL server that goes away under a running gateway, then comes back.

The gateway keeps answering, the master key and the client keys it had loaded alike; the
ledger keeps the rows in memory and says it is failing (/ready "degraded", its gauge at 0);
once the server is back, the rows are written, /ready says "ready" again and a revocation
takes effect. Every answered request is in the ledger exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from ledgerhelpers import MASTER_KEY, LoopbackServer, settings, upstreams, wire

from fakes import FakeAnthropic, FakeOpenAI
from meridian.keys import KeyStore
from meridian.storage import make_store
from pgserver import PostgresServer


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: the test stops and starts it."""
    server = PostgresServer().init()
    try:
        yield server
    finally:
        server.destroy()


def ready(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url + "/ready", headers={"x-api-key": MASTER_KEY})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())  # type: ignore[no-any-return]


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll until ``check`` holds; the deadline only keeps a broken test from hanging."""
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.2)


def chat(url: str, n: int, key: str = MASTER_KEY) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    try:
        for i in range(n):
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": f"hi {i}"}]
            )
    finally:
        client.close()


def refused(url: str, key: str) -> bool:
    try:
        chat(url, 1, key)
    except openai.AuthenticationError as exc:
        return "revoked" in str(exc)
    return False


def test_the_ledger_survives_a_postgresql_outage(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.url(own_postgres.new_database())
    raw = {**upstreams(fake_openai.url, fake_anthropic.url), "storage": {"url": url}}
    wired = wire(settings(raw, tmp_path))
    admin = make_store(url).open()  # `meridian keys` elsewhere
    client_key, _ = KeyStore(admin).create("pulse")
    with LoopbackServer(wired.app) as server:
        chat(server.url, 2)
        chat(server.url, 1, client_key)
        eventually(lambda: wired.ledger.written == 3, "the first rows are written")
        own_postgres.stop()
        try:
            chat(server.url, 3)  # still answered
            time.sleep(1.1)  # past the key cache's refresh: it must check, and cannot
            chat(server.url, 2, client_key)
            eventually(lambda: ready(server.url)["status"] == "degraded", "/ready degraded")
            details = ready(server.url)["ledger"]
            assert details["ok"] is False and details["pending"] > 0  # queued, a batch aside
            assert details["error"]
            assert metric(server.url, "meridian_ledger_healthy") == 0
        finally:
            own_postgres.start()
        eventually(lambda: ready(server.url)["status"] == "ready", "/ready ready again")
        assert metric(server.url, "meridian_ledger_healthy") == 1
        eventually(lambda: wired.ledger.pending == 0, "the kept rows are written")
        chat(server.url, 2, client_key)
        KeyStore(admin).revoke("pulse")
        eventually(lambda: refused(server.url, client_key), "the revocation applies")
    admin.close()
    # The server has stopped: the lifespan flushed the ledger.
    store = make_store(url).open()
    try:
        count, distinct, answered = store.query(
            "SELECT COUNT(*), COUNT(DISTINCT request_id), "
            "COUNT(CASE WHEN status = 200 THEN 1 END) FROM usage"
        )[0]
    finally:
        store.close()
    assert count == distinct  # each call once
    assert answered == len([r for r in fake_openai.requests if r.reply]) >= 10
