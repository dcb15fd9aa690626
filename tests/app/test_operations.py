"""What an operator sees while things go wrong, in-process: /ready when the ledger's disk
fails, a reload seen by /ready, /metrics and /v1/models, a key no date can hold, and no
keep-alive after a stream's last event."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes import FakeAnthropic, FakeOpenAI
from harness import MASTER_KEY, Gateway, two_upstreams


def get(gw: Gateway, path: str, key: str | None = MASTER_KEY) -> tuple[int, Any]:
    req = urllib.request.Request(gw.url + path, headers={"x-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def post(gw: Gateway, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        gw.url + path, method="POST", headers={"authorization": f"Bearer {MASTER_KEY}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def gateway(fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path) -> Any:
    with Gateway.start(two_upstreams(fake_openai.url, fake_anthropic.url), tmp_path) as gw:
        yield gw


def test_a_failing_ledger_makes_ready_degraded_until_the_disk_recovers(gateway: Gateway) -> None:
    """Another process holds the database's write lock (as a stuck backup might): the
    ledger's writes fail after SQLite's 5 s busy timeout; then the lock goes away."""
    blocker = sqlite3.connect(gateway.settings.storage.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        get(gateway, "/v1/models")  # not a call: nothing to write yet
        oai_call(gateway)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and gateway.built.ledger.healthy:
            time.sleep(0.05)
        status, ready = get(gateway, "/ready")
        assert status == 200  # still serving
        assert ready["status"] == "degraded"
        assert ready["ledger"]["ok"] is False and ready["ledger"]["pending"] >= 1
        assert get(gateway, "/ready", key=None) == (200, {"status": "degraded"})
        metrics = get(gateway, "/metrics", key=None)[1]
        assert "meridian_ledger_healthy 0.0" in metrics
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not gateway.built.ledger.healthy:
        time.sleep(0.05)
    assert get(gateway, "/ready")[1]["status"] == "ready"
    assert len(gateway.usage_rows()) == 1  # the row kept in memory was written


def oai_call(gw: Gateway) -> None:
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})
    req = urllib.request.Request(
        gw.url + "/v1/chat/completions", data=body.encode(), method="POST",
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_a_reload_is_what_ready_metrics_and_models_report(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    path = tmp_path / "meridian.yaml"
    raw["server"] = {"master_key": MASTER_KEY, "listen": ["127.0.0.1:0"]}
    raw["storage"] = {"path": str(tmp_path / "meridian.db")}
    path.write_text(yaml.safe_dump(raw))
    from meridian import config

    settings = config.load(path)
    gw = Gateway(settings)
    gw._thread.start()
    while not gw._server.started:
        time.sleep(0.01)
    try:
        assert sorted(get(gw, "/ready")[1]["providers"]) == ["ant", "oai"]
        raw["providers"] = {"solo": raw["providers"]["oai"]}
        raw["models"] = {"only-one": {"provider": "solo", "model": "gpt-4o"}}
        path.write_text(yaml.safe_dump(raw))
        status, done = post(gw, "/admin/reload")
        assert status == 200 and done["generation"] == 2 and done["models"] == ["only-one"]
        status, ready = get(gw, "/ready")
        assert list(ready["providers"]) == ["solo"] and ready["generation"] == 2
        assert ready["servable"] == ["only-one"]
        metrics = get(gw, "/metrics", key=None)[1]
        assert 'meridian_provider_ready{provider="solo"} 1.0' in metrics
        assert 'provider="oai"' not in metrics.split("meridian_provider_ready", 1)[1][:400]
        assert "meridian_config_generation 2.0" in metrics
        assert [m["id"] for m in get(gw, "/v1/models")[1]["data"]] == ["only-one"]
        # An invalid file: a 400 that says why, and the generation in force stays.
        path.write_text("models: [not, a, mapping")
        status, error = post(gw, "/admin/reload")
        assert status == 400 and "not reloaded" in error["error"]["message"]
        assert get(gw, "/ready")[1]["generation"] == 2
    finally:
        gw.stop()


def test_a_key_with_an_impossible_expiry_does_not_break_listing(gateway: Gateway) -> None:
    """Stored before expiry dates were bounded: listing must still work, for good."""
    store = gateway.built.runtime.store
    assert store is not None
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO keys (name, prefix, hash, created_at, expires_at) VALUES (?,?,?,?,?)",
            ("ancient", "mk-zzzzzz", b"x" * 32, time.time(), 1e18),
        )
    status, keys = get(gateway, "/admin/keys")
    assert status == 200
    entry = next(k for k in keys["data"] if k["name"] == "ancient")
    assert entry["expires_at"] == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize(
    ("path", "alias", "done", "ping"),
    [
        ("/v1/messages", "claude-test", b"event: message_stop", b"event: ping"),
        ("/v1/chat/completions", "gpt-test", b"data: [DONE]", b": keep-alive"),
    ],
)
def test_no_keepalive_after_the_last_event(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path,
    path: str, alias: str, done: bytes, ping: bytes,
) -> None:  # fmt: skip
    """The upstream keeps its connection open a while after its last event: meridian must
    not send keep-alives after the stream's end meanwhile."""
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["server"] = {"keepalive_s": 0.1}
    for fake in (fake_openai, fake_anthropic):
        fake.reply_text("short", linger_s=1.0)
    with Gateway.start(raw, tmp_path) as gw:
        body = json.dumps({"model": alias, "max_tokens": 5, "stream": True,
                           "messages": [{"role": "user", "content": "x"}]}).encode()  # fmt: skip
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {gw.key}\r\n"
                f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body
            )
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
    assert done in got
    assert ping not in got.split(done, 1)[1]
