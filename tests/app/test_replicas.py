"""Two meridian replicas on one Redis and one store (a SQLite file, or a PostgreSQL
database), as a load balancer would run them: a key's limits hold across both, judged by what
the upstream received, the shared ledger has every call exactly once, and a replica that dies
mid-call does not hold its reservation for ever."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from fakes import FakeAnthropic, FakeOpenAI
from harness import MASTER_KEY, Gateway, two_upstreams

N = 50
PER_CALL = 30  # tokens the fake reports for every call: 10 in, 20 out (= max_tokens)


@pytest.fixture
def replicas(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    redis_url: str,
    store_url: str,
) -> Iterator[tuple[Gateway, Gateway]]:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    # Two replicas, 50 clients and the fake upstream share one Python process here: its
    # event loops can lag past the default 1 s, which would count as Redis failing (and
    # fall back to per-replica limits). These tests are about the limits, so 5 s.
    raw["limits"] = {"redis_url": redis_url, "timeout_s": 5}
    raw["storage"] = {"url": store_url}  # both replicas on the same database
    with Gateway.start(raw, tmp_path) as one, Gateway.start(raw, tmp_path) as two:
        yield one, two


def new_key(gw: Gateway, **limits: Any) -> str:
    req = urllib.request.Request(
        gw.url + "/admin/keys",
        data=json.dumps({"name": f"k{time.monotonic_ns()}", **limits}).encode(),
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["secret"])


def call(url: str, key: str) -> int:
    """One chat call; its status."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    try:
        with client:
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], max_tokens=20
            )
    except openai.APIStatusError as err:
        return err.status_code
    return 200


def split_burst(one: Gateway, two: Gateway, key: str) -> list[int]:
    """N calls at once, every other one to each replica."""
    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(lambda i: call((one, two)[i % 2].url, key), range(N)))


LIMITS: dict[str, tuple[dict[str, Any], float, Callable[[int], bool]]] = {
    # limit: (key fields, upstream delay, what the upstream may have received)
    "rpm": ({"rpm": 10}, 0.0, lambda n: n == 10),
    "max_parallel": ({"max_parallel": 3}, 2.0, lambda n: n == 3),
    "tpm": ({"tpm": 100}, 0.3, lambda n: n >= 1 and n * PER_CALL <= 100 + PER_CALL),
    "budget_tokens_month": (
        {"budget_tokens_month": 100},
        0.3,
        lambda n: n >= 1 and n * PER_CALL <= 100 + PER_CALL,
    ),
    # gpt-4o-mini: 10 in + 20 out is $0.0000135 a call.
    "budget_usd_month": (
        {"budget_usd_month": 0.0001},
        0.3,
        lambda n: n >= 1 and n * 0.0000135 <= 0.0001 + 0.0000135,
    ),
}


@pytest.mark.parametrize("limit", list(LIMITS))
def test_a_limit_holds_across_two_replicas(
    replicas: tuple[Gateway, Gateway], fake_openai: FakeOpenAI, limit: str
) -> None:
    fields, delay, fits = LIMITS[limit]
    one, two = replicas
    for _ in range(N):
        fake_openai.reply_text("twenty", input_tokens=10, output_tokens=20, headers_delay_s=delay)
    key = new_key(one, **fields)
    statuses = split_burst(one, two, key)
    received = len(fake_openai.requests)
    assert fits(received), (limit, received)
    assert statuses.count(200) == received
    assert statuses.count(429) == N - received
    # Both replicas refused some: neither admitted on its own account.
    assert {statuses[i] for i in range(0, N, 2)} >= {429}
    assert {statuses[i] for i in range(1, N, 2)} >= {429}
    # The shared ledger: every call once, answered or refused, from whichever replica.
    two.flush_ledger()
    rows = one.usage_rows("key_name IS NOT NULL")
    assert sorted(r["status"] for r in rows) == sorted(statuses)
    assert len({r["request_id"] for r in rows}) == N


def poll(condition: Callable[[], bool], what: str, bound_s: float = 120) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound_s} s: {what}")
        time.sleep(0.2)


def test_a_reservation_of_a_replica_killed_mid_call_expires(
    replicas: tuple[Gateway, Gateway],
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    redis_url: str,
    store_url: str,
) -> None:
    one, _ = replicas
    key = new_key(one, max_parallel=1)
    # A third replica, a real process, whose one call hangs upstream until it is killed.
    # Its calls' deadline (20 s) bounds the reservation: 20 s + the 10 s margin.
    fake_openai.reply_text("never", headers_delay_s=300)
    config = tmp_path / "doomed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "listen": ["127.0.0.1:0"],
                    "master_key": MASTER_KEY,
                    "request_timeout_s": 20,
                },
                "storage": {"url": store_url},
                "limits": {"redis_url": redis_url},
                "providers": {
                    "oai": {"type": "openai", "api_key": "sk-o", "base_url": fake_openai.url}
                },
                "models": {"gpt-test": {"provider": "oai", "model": "gpt-4o-mini"}},
            }
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meridian", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
    )  # fmt: skip
    try:
        poll(lambda: _up(f"http://127.0.0.1:{port}"), "the doomed replica listens")
        threading.Thread(target=doomed_call, args=(port, key), daemon=True).start()
        poll(lambda: len(fake_openai.requests) == 1, "its call reached the upstream")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    fake_openai.reply_text("at last")
    # The dead call still holds the key's one slot...
    assert call(one.url, key) == 429
    # ...until its reservation expires; then the key works again, on any replica.
    poll(lambda: call(one.url, key) == 200, "the dead replica's reservation expired")
    assert len(fake_openai.requests) == 2


def doomed_call(port: int, key: str) -> None:
    with contextlib.suppress(openai.APIConnectionError):  # its replica is killed
        call(f"http://127.0.0.1:{port}", key)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def test_a_cooldown_set_by_one_replica_is_honoured_by_the_other(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path, redis_url: str
) -> None:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["limits"] = {"redis_url": redis_url}
    raw["router"] = {"retries": 0, "cooldown": {"failures": 1, "seconds": 300}}
    with Gateway.start(raw, tmp_path) as one, Gateway.start(raw, tmp_path) as two:
        fake_openai.reply_server_error()
        assert call(one.url, MASTER_KEY) == 500
        assert len(fake_openai.requests) == 1

        def cooling_on_two() -> bool:
            ready = _ready(two)
            return any(
                d["model"] == "gpt-4o-mini" and d["state"] == "open" for d in ready["deployments"]
            )

        poll(cooling_on_two, "replica two adopts the cooldown")
        # Replica two skips the deployment without calling it.
        assert call(two.url, MASTER_KEY) in (503, 529)
        assert len(fake_openai.requests) == 1


def _ready(gw: Gateway) -> dict[str, Any]:
    req = urllib.request.Request(gw.url + "/ready", headers={"x-api-key": MASTER_KEY})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))
