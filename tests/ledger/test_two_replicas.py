"""Two meridian replicas on one PostgreSQL database, over real HTTP.

A key created through one replica's admin API works on the other at once; revoked through
the other, it is refused by the first within its one-second refresh; every answered request
is in the shared ledger exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
from ledgerhelpers import MASTER_KEY, LoopbackServer, settings, upstreams, wire

from fakes import FakeAnthropic, FakeOpenAI
from meridian.storage import make_store
from pgserver import PostgresServer


def admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def ask(url: str, key: str) -> str:
    """'ok', or the refusal's message."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)
    try:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError as exc:
        return str(exc)
    finally:
        client.close()
    return "ok"


def test_a_key_is_shared_and_revoked_across_replicas(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    postgres: PostgresServer,
) -> None:
    url = postgres.url(postgres.new_database())
    raw = {**upstreams(fake_openai.url, fake_anthropic.url), "storage": {"url": url}}
    one, two = wire(settings(raw, tmp_path)), wire(settings(raw, tmp_path))
    with LoopbackServer(one.app) as a, LoopbackServer(two.app) as b:
        secret = admin(a.url, "POST", "/admin/keys", {"name": "pulse"})["secret"]
        assert ask(b.url, secret) == "ok"  # created on A, known to B at once
        assert ask(a.url, secret) == "ok"
        assert ask(b.url, secret) == "ok"
        admin(b.url, "DELETE", "/admin/keys/pulse")
        assert "revoked" in ask(b.url, secret)  # at once where it was revoked
        deadline = time.monotonic() + 30
        while (answer := ask(a.url, secret)) == "ok":  # within about a second on A
            assert time.monotonic() < deadline, "A never saw the revocation"
            time.sleep(0.1)
        assert "revoked" in answer
    store = make_store(url).open()
    try:
        count, distinct, answered = store.query(
            "SELECT COUNT(*), COUNT(DISTINCT request_id), "
            "COUNT(CASE WHEN status = 200 THEN 1 END) FROM usage"
        )[0]
    finally:
        store.close()
    assert count == distinct
    assert answered == len([r for r in fake_openai.requests if r.reply])
