"""Prometheus metrics on an injected registry, and ``GET /metrics``.

`Metrics` is an `Observer`: ``record`` updates counters and histograms from each finished
call: plain dicts on the event loop's thread (`meridian.metrics.tally`), rendered at scrape
time. Surfaces hold ``in_flight(surface)`` around a request (or call ``in_flight_inc`` and
``in_flight_dec`` when a streamed response outlives the handler).

Provider state (readiness such as the subscription's login, queue depth, in-flight calls,
"limited until") is read at scrape time by a custom collector, never on the request path:
``watch_providers`` gives it the current generation's providers (a reload changes them), and
the ``/metrics`` endpoint first awaits ``refresh()``, which runs the providers' async
``ready()`` (with a timeout, cached briefly), because a collector's ``collect`` is synchronous.

Series, all prefixed ``meridian_``:
  requests_total{surface,alias,provider,status}      tokens_total{alias,provider,kind}
  request_duration_seconds{surface,alias,provider}   time_to_first_token_seconds{...}
  in_flight_requests{surface}                        upstream_errors_total{provider,type}
  rate_limit_rejections_total{key,type}              provider_queue_wait_seconds{provider}
  upstream_attempts_failed_total{provider,type}      (attempts retried or fallen back from)
  provider_ready{provider}  provider_queue_depth{provider}  provider_in_flight{provider}
  provider_limited_until_seconds{provider}  ledger_pending_records  ledger_dropped_records_total
  provider_processes{provider,state}  provider_continuations_total{provider,outcome}
  provider_process_evictions_total{provider,reason}  provider_window_utilization{provider,window}
  provider_window_resets_at_seconds{provider,window}  (from a provider's optional ``status()``)
  ledger_write_failures_total  ledger_healthy  deployment_state{provider,model}
  deployment_open_until_seconds{provider,model}  http_shed_connections_total
  http_request_timeouts_total  http_oversized_heads_total  config_generation
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meridian.auth import Authenticator, presented_key
from meridian.metrics.shared import WorkerMetrics
from meridian.metrics.state import LedgerCounts, ProviderState, probe, state_families
from meridian.metrics.tally import CounterTally, GaugeTally, HistogramTally
from meridian.records import CallRecord

__all__ = ["Metrics", "ProviderState", "metrics_route", "probe"]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation", "reasoning")
_CALL = ("surface", "alias", "provider")


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        ready_timeout_s: float = 2.0,
        ready_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._requests = CounterTally(
            "meridian_requests", "API requests by outcome.", [*_CALL, "status"]
        )
        self._tokens = CounterTally(
            "meridian_tokens", "Tokens by kind, as the upstream reported them.",
            ["alias", "provider", "kind"],
        )  # fmt: skip
        self._duration = HistogramTally(
            "meridian_request_duration_seconds", "Whole-request latency.", _CALL,
            LATENCY_BUCKETS,
        )  # fmt: skip
        self._ttft = HistogramTally(
            "meridian_time_to_first_token_seconds", "Time to the first token of a stream.",
            _CALL, TTFT_BUCKETS,
        )  # fmt: skip
        self._in_flight = GaugeTally(
            "meridian_in_flight_requests", "Requests being served now.", ["surface"]
        )
        self._upstream_errors = CounterTally(
            "meridian_upstream_errors", "Failed calls that reached a provider, by error type.",
            ["provider", "type"],
        )  # fmt: skip
        self._rejections = CounterTally(
            "meridian_rate_limit_rejections",
            "Requests the gateway refused for a client key's rpm/tpm/budget limit.",
            ["key", "type"],
        )  # fmt: skip
        self._failed_attempts = CounterTally(
            "meridian_upstream_attempts_failed",
            "Attempts that failed and were retried or fallen back from, by error type.",
            ["provider", "type"],
        )  # fmt: skip
        self._queue_wait = HistogramTally(
            "meridian_provider_queue_wait_seconds",
            "Time a call waited for a concurrency slot of a limited provider.",
            ["provider"], QUEUE_BUCKETS,
        )  # fmt: skip
        self._tallies = (
            self._requests, self._tokens, self._duration, self._ttft, self._in_flight,
            self._upstream_errors, self._rejections, self._failed_attempts, self._queue_wait,
        )  # fmt: skip
        self._providers: Callable[[], Mapping[str, Any]] = dict
        self._states: dict[str, ProviderState] = {}
        self._refreshed_at = -1e18
        self._ready_timeout = ready_timeout_s
        self._ready_ttl = ready_ttl_s
        self._clock = clock
        self._ledger: LedgerCounts | None = None
        self._extra: list[Callable[[], Iterable[Metric]]] = []
        self._shared: WorkerMetrics | None = None
        registry.register(_Collector(self))

    # -------------------------------------------------------------- Observer

    def record(self, rec: CallRecord) -> None:
        alias = rec.alias or ""
        provider = rec.provider or ""
        labels = (rec.surface, alias, provider)
        self._requests.add((*labels, str(rec.status)))
        self._duration.observe(labels, rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            self._ttft.observe(labels, rec.ttft_ms / 1000)
        u = rec.usage
        counts = (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
        )
        if any(counts):
            for kind, n in zip(TOKEN_KINDS, counts, strict=True):
                if n:
                    self._tokens.add((alias, provider, kind), n)
        for attempt in rec.attempts:
            key = (attempt.provider, attempt.error_type)
            if attempt.upstream:
                self._upstream_errors.add(key)
            self._failed_attempts.add(key)
        if rec.status >= 400:
            kind = rec.error_type or "unknown"
            if rec.upstream_error:
                # Only what an upstream did: a caller's bad request, a key's limit or a
                # client that left is not a provider error.
                self._upstream_errors.add((provider, kind))
            elif rec.status == 429 and rec.provider is None:
                # Refused before any provider was called: the key's own limits or budget.
                self._rejections.add((rec.key_name or "", kind))

    def share(self, run_dir: Path, index: int) -> None:
        """Under ``server.workers``: write this worker's series to ``run_dir`` and render
        every worker's (`meridian.metrics.shared`)."""
        self._shared = WorkerMetrics(self.registry, run_dir, index)

    async def start(self) -> None:
        if self._shared is not None:
            await self._shared.start()

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    # -------------------------------------------------------------- hooks for the app

    @contextmanager
    def in_flight(self, surface: str) -> Iterator[None]:
        """``with metrics.in_flight("openai"): ...`` around a request."""
        self.in_flight_inc(surface)
        try:
            yield
        finally:
            self.in_flight_dec(surface)

    def in_flight_inc(self, surface: str) -> None:
        self._in_flight.add((surface,), 1)

    def in_flight_dec(self, surface: str) -> None:
        self._in_flight.add((surface,), -1)

    def in_flight_now(self) -> dict[str, int]:
        return {key[0]: int(n) for key, n in self._in_flight.values.copy().items()}

    def observe_queue_wait(self, provider: str, seconds: float) -> None:
        self._queue_wait.observe((provider,), seconds)

    def watch_providers(self, providers: Callable[[], Mapping[str, Any]]) -> None:
        """``providers()`` returns the providers in force now (the current generation's)."""
        self._providers = providers
        self._refreshed_at = -1e18

    def collect_also(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add scrape-time series (the HTTP guard's counters, deployment health, ...)."""
        self._extra.append(collect)

    def watch_ledger(self, ledger: LedgerCounts) -> None:
        self._ledger = ledger

    async def refresh(self) -> list[ProviderState]:
        """Probe the watched providers (at most once per ``ready_ttl_s``)."""
        now = self._clock()
        providers = self._providers()
        if now - self._refreshed_at >= self._ready_ttl or set(providers) != set(self._states):
            names = list(providers)
            states = await asyncio.gather(
                *(probe(n, providers[n], self._ready_timeout) for n in names)
            )
            self._states = dict(zip(names, states, strict=True))
            self._refreshed_at = self._clock()
        return list(self._states.values())

    def render(self) -> bytes:
        return generate_latest(self._shared or self.registry)


class _Collector:
    """Everything ``/metrics`` shows: the tallies, the last `Metrics.refresh`, the ledger's
    counters and the series added by `Metrics.collect_also`."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        m = self._m
        out = [tally.family() for tally in m._tallies]
        out += state_families(m._states.values(), m._ledger)
        for extra in m._extra:
            out.extend(extra())
        return out


def metrics_route(
    metrics: Metrics, authenticator: Callable[[], Authenticator] | None = None
) -> Route:
    """``GET /metrics``; with an authenticator (the current one), only the master key may
    scrape."""

    async def endpoint(request: Request) -> Response:
        if authenticator is not None and not authenticator().is_master(
            presented_key(request.headers)
        ):
            return JSONResponse(
                {"error": {"type": "authentication_error", "message": "master key required"}},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="meridian"'},
            )
        await metrics.refresh()
        body = await asyncio.to_thread(metrics.render)
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST})

    return Route("/metrics", endpoint, methods=["GET"], name="metrics")
