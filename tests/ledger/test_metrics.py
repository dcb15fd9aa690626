"""Prometheus metrics: what one call records, scrape-time provider state, GET /metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from ledgerhelpers import MASTER_KEY, LoopbackServer, rec
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from meridian.auth import Authenticator
from meridian.metrics import Metrics, metrics_route
from meridian.model import Usage
from meridian.records import AttemptRecord


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def get(url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def test_calls_are_counted_by_outcome_tokens_and_latency() -> None:
    m = Metrics(CollectorRegistry())
    m.record(rec(1, usage=Usage(100, 20, 30, 40, 5), latency_ms=120))
    m.record(rec(2, usage=Usage(50, 10), latency_ms=80, stream=True, ttft_ms=15))
    m.record(rec(3, surface="anthropic", alias="claude-test", provider="ant", status=529,
                 error_type="overloaded", usage=Usage(), latency_ms=3000,
                 upstream_error=True))  # fmt: skip
    m.record(rec(4, provider=None, upstream_model=None, status=429, error_type="rate_limit",
                 usage=Usage(), key_name="pulse"))  # fmt: skip
    m.record(rec(5, alias="gone", status=499, error_type="client_disconnected", usage=Usage()))
    # Refused by meridian after a provider was chosen (a request the translation rejects).
    m.record(rec(6, alias="bad", status=400, error_type="invalid_request", usage=Usage()))
    # Served after a failed attempt elsewhere: the attempt is the upstream's error.
    attempt = AttemptRecord("ant", "claude-x", 529, "overloaded", 5.0, 0.0, True)
    m.record(rec(7, attempts=[attempt], usage=Usage()))
    s = parse(m.render().decode())

    ok = {"surface": "openai", "alias": "gpt-test", "provider": "oai"}
    gone = {"surface": "openai", "alias": "gone", "provider": "oai"}
    assert value(s, "meridian_requests_total", **gone, status="499") == 1
    assert not any(("type", "client_disconnected") in k[1] for k in s)  # not an upstream error
    assert value(s, "meridian_requests_total", **ok, status="200") == 3
    assert value(s, "meridian_requests_total", surface="anthropic", alias="claude-test",
                 provider="ant", status="529") == 1  # fmt: skip
    assert value(s, "meridian_requests_total", surface="openai", alias="gpt-test",
                 provider="", status="429") == 1  # fmt: skip
    tokens = {"alias": "gpt-test", "provider": "oai"}
    assert value(s, "meridian_tokens_total", **tokens, kind="input") == 150
    assert value(s, "meridian_tokens_total", **tokens, kind="output") == 30
    assert value(s, "meridian_tokens_total", **tokens, kind="cache_read") == 30
    assert value(s, "meridian_tokens_total", **tokens, kind="cache_creation") == 40
    assert value(s, "meridian_tokens_total", **tokens, kind="reasoning") == 5
    assert value(s, "meridian_request_duration_seconds_count", **ok) == 3
    assert value(s, "meridian_request_duration_seconds_sum", **ok) == pytest.approx(0.307)
    assert value(s, "meridian_request_duration_seconds_bucket", **ok, le="0.1") == 1
    assert value(s, "meridian_time_to_first_token_seconds_count", **ok) == 1
    assert value(s, "meridian_time_to_first_token_seconds_sum", **ok) == pytest.approx(0.015)
    assert value(s, "meridian_upstream_errors_total", provider="ant", type="overloaded") == 2
    assert value(s, "meridian_upstream_attempts_failed_total", provider="ant",
                 type="overloaded") == 1  # fmt: skip
    assert (
        value(s, "meridian_upstream_errors_total", provider="oai", type="invalid_request") is None
    )
    assert value(s, "meridian_rate_limit_rejections_total", key="pulse", type="rate_limit") == 1
    # A rejection by the gateway is not an upstream error.
    assert not any(k[0] == "meridian_upstream_errors_total" and ("provider", "") in k[1] for k in s)


def test_in_flight_requests() -> None:
    m = Metrics(CollectorRegistry())
    with m.in_flight("openai"), m.in_flight("openai"):
        m.in_flight_inc("anthropic")
        assert m.in_flight_now() == {"openai": 2, "anthropic": 1}
        s = parse(m.render().decode())
        assert value(s, "meridian_in_flight_requests", surface="openai") == 2
    m.in_flight_dec("anthropic")
    assert m.in_flight_now() == {"openai": 0, "anthropic": 0}


def test_queue_wait_histogram() -> None:
    m = Metrics(CollectorRegistry())
    m.observe_queue_wait("claude", 0.3)
    m.observe_queue_wait("claude", 2.0)
    s = parse(m.render().decode())
    assert value(s, "meridian_provider_queue_wait_seconds_count", provider="claude") == 2
    assert value(s, "meridian_provider_queue_wait_seconds_bucket", provider="claude", le="0.5") == 1


class Subscription:
    """A provider as the Claude subscription provider looks from outside."""

    def __init__(self) -> None:
        self.queue_depth = 3
        self.in_flight = 2
        self.limited_until = time.time() + 600
        self.calls = 0

    async def ready(self) -> tuple[bool, str]:
        self.calls += 1
        return False, "not logged in: run `meridian auth login`"


class Broken:
    async def ready(self) -> tuple[bool, str]:
        raise RuntimeError("boom")


class Hanging:
    async def ready(self) -> tuple[bool, str]:
        await asyncio.sleep(60)
        return True, "ok"


class Direct:
    in_flight = 0

    async def ready(self) -> tuple[bool, str]:
        return True, "ok"


def test_provider_state_is_read_at_scrape_time() -> None:
    m = Metrics(CollectorRegistry(), ready_timeout_s=0.2)
    sub = Subscription()
    providers = {"claude": sub, "broken": Broken(), "hanging": Hanging(), "oai": Direct()}
    m.watch_providers(lambda: providers)
    assert sub.calls == 0  # nothing probed until a scrape

    async def scrape() -> str:
        await m.refresh()
        await m.refresh()  # within the TTL: not probed again
        return m.render().decode()

    s = parse(asyncio.run(scrape()))
    assert sub.calls == 1
    ready = {
        p: value(s, "meridian_provider_ready", provider=p)
        for p in ("claude", "broken", "hanging", "oai")
    }
    assert ready == {"claude": 0, "broken": 0, "hanging": 0, "oai": 1}
    assert value(s, "meridian_provider_queue_depth", provider="claude") == 3
    assert value(s, "meridian_provider_in_flight", provider="claude") == 2
    assert value(s, "meridian_provider_in_flight", provider="oai") == 0
    assert value(s, "meridian_provider_queue_depth", provider="oai") is None
    assert value(s, "meridian_provider_limited_until_seconds", provider="claude") == pytest.approx(
        sub.limited_until
    )
    assert value(s, "meridian_provider_limited_until_seconds", provider="oai") == 0


def test_ledger_backlog_gauges() -> None:
    class FakeLedger:
        pending = 7
        dropped = 2
        write_failures = 3
        healthy = False

    m = Metrics(CollectorRegistry())
    m.watch_ledger(FakeLedger())
    s = parse(m.render().decode())
    assert value(s, "meridian_ledger_pending_records") == 7
    assert value(s, "meridian_ledger_dropped_records_total") == 2
    assert value(s, "meridian_ledger_write_failures_total") == 3
    assert value(s, "meridian_ledger_healthy") == 0


def test_metrics_endpoint_open_by_default() -> None:
    m = Metrics(CollectorRegistry())
    m.watch_providers(lambda: {"claude": Subscription()})
    m.record(rec(1))
    with LoopbackServer(Starlette(routes=[metrics_route(m)])) as server:
        status, headers, body = get(server.url + "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    s = parse(body)
    assert value(s, "meridian_requests_total", surface="openai", alias="gpt-test",
                 provider="oai", status="200") == 1  # fmt: skip
    assert value(s, "meridian_provider_ready", provider="claude") == 0


def test_metrics_endpoint_can_require_the_master_key() -> None:
    m = Metrics(CollectorRegistry())
    route = metrics_route(m, lambda: Authenticator(MASTER_KEY))
    with LoopbackServer(Starlette(routes=[route])) as server:
        url = server.url + "/metrics"
        assert get(url)[0] == 401
        assert get(url, **{"x-api-key": "sk-wrong"})[0] == 401
        status, _, body = get(url, **{"x-api-key": MASTER_KEY})
        assert status == 200 and "meridian_requests" in body
        assert get(url, Authorization=f"Bearer {MASTER_KEY}")[0] == 200
