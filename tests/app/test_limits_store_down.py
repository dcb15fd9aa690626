"""Redis gone, hung and back, under two replicas and ``limits.on_store_error``: ``open``
admits under each replica's own limits, ``closed`` refuses limited keys with a 503 in the
caller's format; either way ``/ready``, the metrics and one log line say so, and Redis coming
back is used again without a restart. Each test has a Redis of its own, with a password the
log must not show."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import MASTER_KEY, Gateway, two_upstreams
from redisserver import RedisServer

PASSWORD = "redis-pass-0123456789"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def start(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path, redis: RedisServer
) -> Iterator[Callable[[str], Gateway]]:
    started: list[Gateway] = []

    def run(on_store_error: str) -> Gateway:
        raw = two_upstreams(fake_openai.url, fake_anthropic.url)
        raw["limits"] = {"redis_url": redis.url, "on_store_error": on_store_error}
        gw = Gateway.start(raw, tmp_path)
        started.append(gw)
        return gw

    yield run
    for gw in started:
        gw.stop()


def http(
    gw: Gateway, path: str, body: dict[str, Any] | None = None, key: str = MASTER_KEY
) -> tuple[int, Any]:
    req = urllib.request.Request(
        gw.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"x-api-key": key, "content-type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def chat(gw: Gateway, key: str) -> tuple[int, Any]:
    body = {"model": "gpt-test", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    return http(gw, "/v1/chat/completions", body, key)


def message(gw: Gateway, key: str) -> tuple[int, Any]:
    body = {
        "model": "claude-test",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return http(gw, "/v1/messages", body, key)


def new_key(gw: Gateway, **limits: Any) -> str:
    status, body = http(gw, "/admin/keys", {"name": f"k{time.monotonic_ns()}", **limits})
    assert status == 201, body
    return str(body["secret"])


def metric(gw: Gateway, name: str) -> float:
    _, text = http(gw, "/metrics")
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def limits_up(gw: Gateway) -> float:
    return metric(gw, "meridian_limits_store_up")


def poll(condition: Callable[[], bool], what: str, bound_s: float = 60) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound_s} s: {what}")
        time.sleep(0.2)


def test_open_admits_under_the_replicas_own_limits_and_recovers(
    start: Callable[[str], Gateway], redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meridian.limits")
    gw, other = start("open"), start("open")
    key = new_key(gw, rpm=3)
    assert chat(gw, key)[0] == 200  # counted in Redis
    assert http(gw, "/ready")[1]["limits"]["ok"] is True
    assert limits_up(gw) == 1
    assert metric(gw, "meridian_limits_store_errors_total") == 0
    redis.kill()
    # Each replica alone now, with its own fresh window of 3: together, twice the limit.
    assert [chat(gw, key)[0] for _ in range(4)] == [200, 200, 200, 429]
    assert [chat(other, key)[0] for _ in range(4)] == [200, 200, 200, 429]
    status, ready = http(gw, "/ready")
    assert status == 200 and ready["status"] == "degraded"
    assert ready["limits"]["ok"] is False and ready["limits"]["on_store_error"] == "open"
    assert ready["limits"]["error"]
    assert limits_up(gw) == 0
    assert metric(gw, "meridian_limits_store_errors_total") >= 1
    warned = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warned) == 2  # once per replica
    assert all("admitting under this process's own limits" in w for w in warned)
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(ready)
    redis.start()  # empty: the window starts afresh
    poll(lambda: http(gw, "/ready")[1]["status"] == "ready", "/ready sees Redis again")
    assert limits_up(gw) == 1
    assert [chat(gw, key)[0] for _ in range(4)] == [200, 200, 200, 429]
    # The other replica comes back too, and counts against the same shared window.
    poll(lambda: http(other, "/ready")[1]["status"] == "ready", "the other replica too")
    assert chat(other, key)[0] == 429
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 2  # one each


def test_closed_refuses_limited_keys_with_a_503_on_both_apis(
    start: Callable[[str], Gateway], redis: RedisServer
) -> None:
    gw, other = start("closed"), start("closed")
    key = new_key(gw, tpm=100_000)
    assert chat(gw, key)[0] == 200
    redis.kill()
    for replica in (gw, other):
        status, body = chat(replica, key)
        assert status == 503
        assert "limits store (Redis) does not answer" in body["error"]["message"]
        status, body = message(replica, key)
        assert status == 503 and body["type"] == "error"
        assert body["error"]["type"] == "api_error"
        assert "limits.on_store_error is closed" in body["error"]["message"]
    # A key without limits and the master key need no store.
    assert chat(gw, new_key(gw))[0] == 200
    assert chat(gw, MASTER_KEY)[0] == 200
    assert http(gw, "/ready")[1]["status"] == "degraded"
    redis.start()
    poll(lambda: chat(gw, key)[0] == 200, "limited calls are admitted again")
    poll(lambda: chat(other, key)[0] == 200, "on the other replica too")


def test_a_hung_redis_does_not_hang_calls(
    start: Callable[[str], Gateway], redis: RedisServer
) -> None:
    gw = start("open")
    key = new_key(gw, max_parallel=1)
    assert chat(gw, key)[0] == 200
    redis.pause()
    try:
        # Answered (under the local limits) although Redis accepts and never replies: the
        # client's own 60 s timeout is the bound, the store's 1 s is what it takes.
        assert chat(gw, key)[0] == 200
        assert http(gw, "/ready")[1]["limits"]["error"] == "no answer in time"
    finally:
        redis.resume()
    poll(lambda: http(gw, "/ready")[1]["status"] == "ready", "/ready sees Redis again")
    # The admission that timed out reached Redis all the same, and reserved the key's one
    # place when Redis woke up: the replica released it, so the key is not stuck for the
    # reservation's whole hold (the call deadline, 600 s).
    poll(lambda: chat(gw, key)[0] == 200, "the timed-out admission holds nothing")


def test_redis_failing_or_back_shows_with_no_limited_call(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cooldown sync's round trip is the replica's heartbeat on Redis: a wrong password
    is in /ready and the log from the start, and an outage and its end show in /ready and
    the metrics with no call made meanwhile."""
    caplog.set_level(logging.WARNING, logger="meridian.limits")
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["limits"] = {"redis_url": redis.url.replace(PASSWORD, "not-the-password")}
    (tmp_path / "wrong").mkdir()
    (tmp_path / "right").mkdir()
    with Gateway.start(raw, tmp_path / "wrong") as gw:
        poll(lambda: http(gw, "/ready")[1]["limits"]["ok"] is False, "the refusal in /ready")
        status, ready = http(gw, "/ready")
        assert status == 200 and ready["status"] == "degraded", ready
        assert "invalid username-password" in ready["limits"]["error"]
        assert limits_up(gw) == 0
        assert len(fake_openai.requests) == len(fake_anthropic.requests) == 0
    warned = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warned) == 1 and "invalid username-password" in warned[0], warned
    assert PASSWORD not in caplog.text and "not-the-password" not in caplog.text

    raw["limits"] = {"redis_url": redis.url}
    with Gateway.start(raw, tmp_path / "right") as gw:
        assert http(gw, "/ready")[1]["status"] == "ready"
        redis.kill()
        poll(lambda: limits_up(gw) == 0, "the outage in the metrics")
        assert http(gw, "/ready")[1]["limits"]["ok"] is False
        redis.start()
        poll(lambda: limits_up(gw) == 1, "Redis back in the metrics")
        assert http(gw, "/ready")[1]["status"] == "ready"
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1
