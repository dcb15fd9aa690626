"""``server.workers: 2``: a supervisor and two worker processes on one listener. Real
processes, real signals, a real fake upstream; what each worker did is read from the
merged ``/metrics`` (every sample labelled with its worker) and from the shared ledger."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from served import KEY, MERIDIAN, Served, env, free_port, write_config

from fakes import FakeAnthropic

MODELS = {"m": {"provider": "ant", "model": "claude-haiku-4-5"}}


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_for(what: str, cond: Callable[[], Any], within_s: float = 60) -> Any:
    """Poll ``cond`` until it is truthy; the bound is generous (2 loaded cores), never timed."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def call(url: str, body: Any = None, **headers: str) -> tuple[int, bytes]:
    """One request on a new connection (so the kernel may hand it to either worker)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def scrape(url: str) -> str:
    status, body = call(f"{url}/metrics")
    assert status == 200
    return body.decode()


def two_workers(served: Served) -> set[int]:
    """The supervisor's two worker pids, once both are forked."""
    pids: set[int] = wait_for(
        "two workers", lambda: len(children(served.proc.pid)) == 2 and children(served.proc.pid)
    )
    return pids


def generations(url: str) -> dict[str, float]:
    text = scrape(url)
    return {w: float(v) for w, v in re.findall(r'config_generation\{worker="(\d+)"\} (\S+)', text)}


def requests_by_worker(url: str, alias: str | None = None) -> dict[str, float]:
    """Calls each worker answered (of ``alias``, or all), from the merged /metrics."""
    text = scrape(url)
    out: dict[str, float] = {}
    for labels, value in re.findall(r"^meridian_requests_total\{(.*)\} (\S+)$", text, re.M):
        if alias is not None and f'alias="{alias}"' not in labels:
            continue
        worker = re.search(r'worker="(\d+)"', labels)
        assert worker is not None, labels
        out[worker.group(1)] = out.get(worker.group(1), 0) + float(value)
    return out


def ask(url: str, model: str = "m", key: str = KEY) -> int:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    return call(f"{url}/v1/messages", body, **headers)[0]


def test_more_than_one_worker_without_shared_limits_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "meridian.yaml"
    write_config(config, free_port(), "http://127.0.0.1:9", MODELS, workers=2)
    out = subprocess.run(
        [*MERIDIAN, "serve", "--config", str(config)],
        capture_output=True, text=True, env=env(), timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "server.workers: 2 needs limits.redis_url" in out.stderr
    assert "Traceback" not in out.stderr
    check = subprocess.run(
        [*MERIDIAN, "check", "--config", str(config)],
        capture_output=True, text=True, env=env(), timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 2 and "needs limits.redis_url" in check.stderr, check.stderr


def test_two_workers_share_the_listener_the_ledger_and_one_scrape(
    tmp_path: Path, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    write_config(config, port, fake_anthropic.url, MODELS, {"redis_url": redis_url}, workers=2)
    served = Served(config, port)
    try:
        workers = two_workers(served)
        # Both workers answer one scrape: each has written its snapshot.
        wait_for("both workers in /metrics", lambda: set(generations(served.url)) == {"0", "1"})
        assert [ask(served.url) for _ in range(30)] == [200] * 30
        assert len(fake_anthropic.requests) == 30
        # Every call counted once, by whichever worker served it (a sibling's count is at most
        # a second old in the scrape).
        wait_for(
            "30 calls in the merged counters",
            lambda: sum(requests_by_worker(served.url).values()) == 30,
        )

        # A worker that dies is replaced, and the service keeps answering meanwhile.
        victim = min(workers)
        served_before = fake_anthropic.requests.copy()
        replaced = replace_one(served, victim)
        assert workers - {victim} <= replaced  # the other worker was left alone
        assert [ask(served.url) for _ in range(10)] == [200] * 10
        assert len(fake_anthropic.requests) == len(served_before) + 10
        assert any("starting another" in r.get("msg", "") for r in served.logs())
    finally:
        assert served.stop() == 0, served.stderr
    # A clean stop: the supervisor and every worker are gone, the ledger has every call once.
    assert not any(alive(p) for p in replaced)
    with sqlite3.connect(tmp_path / "meridian.db") as db:
        (rows,) = db.execute("SELECT count(*) FROM usage WHERE status = 200").fetchone()
    assert rows == 40


def test_a_reload_reaches_every_worker_by_signal_or_by_admin_call(
    tmp_path: Path, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    # A Redis command late by more than limits.timeout_s counts as Redis failing (then each
    # worker limits alone); on 2 loaded cores an event loop can lag past the default 1 s,
    # and this test checks one key's rpm across the workers, exactly: 5 s.
    limits = {"redis_url": redis_url, "timeout_s": 5}
    write_config(config, port, fake_anthropic.url, MODELS, limits, workers=2)
    served = Served(config, port)
    try:
        wait_for("both workers in /metrics", lambda: set(generations(served.url)) == {"0", "1"})
        assert ask(served.url, "later") == 404
        write_config(
            config, port, fake_anthropic.url, {**MODELS, "later": MODELS["m"]}, limits, workers=2
        )
        served.proc.send_signal(signal.SIGHUP)
        wait_for("SIGHUP reloads both", lambda: generations(served.url) == {"0": 2.0, "1": 2.0})
        assert [ask(served.url, "later") for _ in range(10)] == [200] * 10

        # POST /admin/reload reaches one worker; it tells the supervisor, which reloads the
        # other (and not the first one twice).
        status, body = call(f"{served.url}/admin/reload", {}, authorization=f"Bearer {KEY}")
        assert status == 200 and json.loads(body)["generation"] == 3
        wait_for("the sibling reloads too", lambda: generations(served.url) == {"0": 3.0, "1": 3.0})

        # A key made on one worker works on both; revoked on one, both refuse it.
        admin = {"authorization": f"Bearer {KEY}"}
        status, body = call(f"{served.url}/admin/keys", {"name": "team"}, **admin)
        assert status == 201, body
        secret = json.loads(body)["secret"]
        status, body = call(f"{served.url}/admin/keys", {"name": "capped", "rpm": 6}, **admin)
        assert status == 201, body
        capped = json.loads(body)["secret"]
        wait_for(
            "the new keys everywhere",
            lambda: all(ask(served.url, key=secret) == 200 for _ in range(10)),
        )
        # One key's limit holds across the workers (they share it through Redis): of 20 calls
        # on new connections, spread over both, exactly rpm reach the upstream.
        before = len(fake_anthropic.requests)
        statuses = [ask(served.url, key=capped) for _ in range(20)]
        assert statuses.count(200) == 6 and statuses.count(429) == 14, statuses
        assert len(fake_anthropic.requests) == before + 6
        req = urllib.request.Request(
            f"{served.url}/admin/keys/team", headers=admin, method="DELETE"
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        wait_for(
            "the revocation everywhere",
            lambda: all(ask(served.url, key=secret) == 401 for _ in range(10)),
        )
    finally:
        assert served.stop() == 0, served.stderr


def test_a_worker_started_after_a_reload_serves_the_reloaded_config(
    tmp_path: Path, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    limits = {"redis_url": redis_url}
    write_config(config, port, fake_anthropic.url, MODELS, limits, workers=2)
    served = Served(config, port)
    try:
        workers = two_workers(served)
        wait_for("both workers in /metrics", lambda: set(generations(served.url)) == {"0", "1"})
        write_config(
            config, port, fake_anthropic.url, {**MODELS, "later": MODELS["m"]}, limits, workers=2
        )
        served.proc.send_signal(signal.SIGHUP)
        wait_for("SIGHUP reloads both", lambda: generations(served.url) == {"0": 2.0, "1": 2.0})

        # A worker dies and is replaced: every worker answers the alias the reload added, the
        # replacement too, although the supervisor read the file before that reload.
        replaced = replace_one(served, min(workers))
        statuses: list[int] = []

        def both_answer_later() -> bool:
            statuses.extend(ask(served.url, "later") for _ in range(10))
            return len(requests_by_worker(served.url, "later")) == 2

        wait_for("both workers to answer `later`", both_answer_later)
        assert set(statuses) == {200}, statuses

        # A reload sent while a replacement starts waits for it, instead of ending it.
        again = replace_one(served, min(workers - {min(workers)}))
        served.proc.send_signal(signal.SIGHUP)
        wait_for("both reload again", lambda: all(g >= 3 for g in generations(served.url).values()))
        assert children(served.proc.pid) == again != replaced  # the SIGHUP ended no worker
    finally:
        assert served.stop() == 0, served.stdout[-3000:]
    assert served.stdout.count("starting another") == 2


def replace_one(served: Served, victim: int) -> set[int]:
    """Kill ``victim``; the two workers once its replacement is forked."""
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    pids: set[int] = wait_for(
        "a replacement worker",
        lambda: (now := children(served.proc.pid)) and len(now) == 2 and victim not in now and now,
    )
    return pids


def test_workers_stop_when_their_supervisor_is_killed(
    tmp_path: Path, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    write_config(config, port, fake_anthropic.url, MODELS, {"redis_url": redis_url}, workers=2)
    served = Served(config, port)
    workers = two_workers(served)
    served.proc.kill()
    wait_for("orphaned workers to stop", lambda: not any(alive(p) for p in workers))
    served.stop()
    assert served.stdout.count("the supervisor is gone: this worker stops") == 2


def test_a_worker_that_does_not_stop_is_killed_and_the_stop_says_so(
    tmp_path: Path, fake_anthropic: FakeAnthropic, redis_url: str
) -> None:
    port = free_port()
    config = tmp_path / "meridian.yaml"
    limits = {"redis_url": redis_url}
    write_config(config, port, fake_anthropic.url, MODELS, limits, workers=2, shutdown_grace_s=0)
    served = Served(config, port)
    workers = two_workers(served)
    # Both started: SIGTERM has uvicorn's handler in each. Before that its default action
    # would end even a stopped process, and the stop would not be stuck at all.
    wait_for("both workers in /metrics", lambda: set(generations(served.url)) == {"0", "1"})
    frozen = min(workers)
    subprocess.run(["kill", "-STOP", str(frozen)], check=True)  # it cannot act on SIGTERM
    served.proc.send_signal(signal.SIGTERM)
    code = served.proc.wait(120)  # the deadline: grace 0 + abort grace 5 + margin 20 s
    served.stop()
    assert code == 1
    assert not any(alive(p) for p in workers)
    assert any("did not stop within" in r.get("msg", "") for r in served.logs()), served.stdout
