"""The dashboard's routes on loopback: public page and assets, key-protected JSON."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from ledgerhelpers import MASTER_KEY, LoopbackServer, rec
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from meridian import config, dashboard, generation
from meridian.calls import Gateway
from meridian.generation import Generations
from meridian.health import Health
from meridian.ledger import Ledger
from meridian.metrics import Metrics
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.records import CallRecord
from meridian.runtime import Runtime
from meridian.storage import Store


class Subscription:
    queue_depth = 1
    in_flight = 4

    def __init__(self) -> None:
        self.limited_until = time.time() + 3600

    async def ready(self) -> tuple[bool, str]:
        return True, "logged in (claude.ai, Max)"


class Direct:
    async def ready(self) -> tuple[bool, str]:
        return False, "no API key"


def request(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def records(store: Store) -> list[CallRecord]:
    now = time.time()
    out = [
        rec(i, started_at=now - 60 * i, key_name=["pulse", "notes"][i % 2],
            alias=["gpt-test", "claude-test"][i % 3 % 2], usage=Usage(100 + i, 10 + i, i),
            status=502 if i % 5 == 4 else 200, error_type="api_error" if i % 5 == 4 else None,
            ttft_ms=5.0 + i if i % 2 else None, stream=bool(i % 2))
        for i in range(30)
    ]  # fmt: skip
    out.append(rec(99, started_at=now - 3 * 86_400, key_name="old"))

    async def fill() -> None:
        ledger = Ledger(store, PriceTable())
        for r in out:
            ledger.record(r)
        await ledger.aclose()

    asyncio.run(fill())
    return out


@pytest.fixture
def server(store: Store, records: list[CallRecord]) -> Iterator[LoopbackServer]:
    metrics = Metrics(CollectorRegistry())
    providers: dict[str, Any] = {"claude": Subscription(), "oai": Direct()}
    settings = config.validate({}, "<test>")
    health = Health(settings.router.cooldown)
    gen = generation.build(1, settings, MASTER_KEY, None, health, providers)
    runtime = Runtime(Gateway(Generations(gen), metrics=metrics, health=health), store=store)
    metrics.watch_providers(lambda: providers)
    routes = dashboard.routes(store, runtime, metrics)
    with LoopbackServer(Starlette(routes=routes)) as s:
        yield s


def test_page_and_assets_are_public_and_locked_down(server: LoopbackServer) -> None:
    status, headers, body = request(server.url + "/ui")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert b'id="login-form"' in body and b"ui/static/app.js" in body
    status, headers, body = request(server.url + "/ui/static/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"sessionStorage" in body
    assert request(server.url + "/ui/static/app.css")[0] == 200
    assert request(server.url + "/ui/static/index.html")[0] == 404


def test_api_refuses_without_the_master_key(server: LoopbackServer) -> None:
    url = server.url + "/ui/api/overview"
    for headers in ({}, {"x-api-key": "sk-wrong"}, {"Authorization": "Bearer nope"}):
        status, _, body = request(url, **headers)
        assert status == 401
        assert b"pulse" not in body


def test_overview(server: LoopbackServer, records: list[CallRecord]) -> None:
    status, headers, body = request(
        server.url + "/ui/api/overview?window=24h", **{"x-api-key": MASTER_KEY}
    )
    assert status == 200 and headers["cache-control"] == "no-store"
    d = json.loads(body)
    recent = [r for r in records if r.key_name != "old"]
    assert d["window"] == "24h"
    assert d["totals"]["requests"] == len(recent)
    assert d["totals"]["errors"] == sum(r.status >= 400 for r in recent)
    assert d["totals"]["input_tokens"] == sum(r.usage.input_tokens for r in recent)
    for by, attr in (("alias", "alias"), ("key", "key_name")):
        series = d["series"][by]
        per = {g["name"]: sum(g["requests"]) for g in series["groups"]}
        expected: dict[str, int] = {}
        for r in recent:
            expected[getattr(r, attr)] = expected.get(getattr(r, attr), 0) + 1
        assert per == expected
        assert all(len(g["tokens"]) == series["buckets"] == 96 for g in series["groups"])
    providers = {p["name"]: p for p in d["providers"]}
    assert providers["claude"]["ready"] is True and providers["claude"]["in_flight"] == 4
    assert providers["claude"]["limited_until"] > time.time()
    assert providers["oai"]["ready"] is False and providers["oai"]["reason"] == "no API key"
    assert {k["key"]: k["requests"] for k in d["keys"]} == {"pulse": 15, "notes": 15}
    assert [e["request_id"] for e in d["errors"]] == [
        r.request_id for r in sorted(recent, key=lambda r: -r.started_at) if r.status >= 400
    ]
    latency = {row["alias"]: row for row in d["latency"]}
    assert latency["all"]["count"] == sum(r.status < 400 for r in recent)


def test_overview_windows(server: LoopbackServer, records: list[CallRecord]) -> None:
    key = {"x-api-key": MASTER_KEY}
    week = json.loads(request(server.url + "/ui/api/overview?window=7d", **key)[2])
    assert week["totals"]["requests"] == len(records)
    hour = json.loads(request(server.url + "/ui/api/overview?window=1h", **key)[2])
    assert hour["totals"]["requests"] == sum(r.started_at >= hour["since"] for r in records)
    assert hour["series"]["alias"]["step"] == 60
    assert request(server.url + "/ui/api/overview?window=2y", **key)[0] == 400
