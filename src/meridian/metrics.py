"""Prometheus metrics on an injected registry, and ``GET /metrics``.

`Metrics` is an `Observer`: ``record`` updates counters and histograms from each finished
call (cached label children, so a call costs a few dict lookups and locked adds). Surfaces
hold ``in_flight(surface)`` around a request (or call ``in_flight_inc``/``in_flight_dec`` when
a streamed response outlives the handler).

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.context_managers import InprogressTracker
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meridian.auth import Authenticator, presented_key
from meridian.records import CallRecord

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_creation", "reasoning")


@dataclass(frozen=True, slots=True)
class ProviderState:
    name: str
    ready: bool
    reason: str
    queue_depth: int | None = None
    in_flight: int | None = None
    # Unix seconds until which the upstream said "rate limited" (the subscription's reset).
    limited_until: float | None = None
    # A provider's own ``status()``, passed through to /ready and the dashboard; the keys
    # ``processes`` and ``rate_limits`` also become series (see `_status_series`).
    status: Mapping[str, Any] | None = None


async def probe(name: str, provider: Any, timeout_s: float = 2.0) -> ProviderState:
    """A provider's state from its optional ``ready()``, ``queue_depth``, ``in_flight``,
    ``limited_until`` and ``status()``. Never raises: a failing probe reads as not ready."""
    ready, reason = True, "ok"
    check = getattr(provider, "ready", None)
    if check is not None:
        try:
            ready, reason = await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            ready, reason = False, f"readiness check timed out after {timeout_s:g}s"
        except Exception as exc:
            ready, reason = False, f"readiness check failed: {type(exc).__name__}"
    limited = _number(provider, "limited_until")
    status = None
    if callable(getattr(provider, "status", None)):
        try:
            status = provider.status()
        except Exception as exc:
            status = {"error": type(exc).__name__}
    return ProviderState(
        name,
        bool(ready),
        str(reason),
        queue_depth=_int(provider, "queue_depth"),
        in_flight=_int(provider, "in_flight"),
        limited_until=limited if limited and limited > time.time() else None,
        status=status if isinstance(status, Mapping) else None,
    )


def _number(obj: Any, attr: str) -> float | None:
    value = getattr(obj, attr, None)
    if callable(value):
        value = value()
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(obj: Any, attr: str) -> int | None:
    value = _number(obj, attr)
    return None if value is None else int(value)


class _Counts(Protocol):
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def write_failures(self) -> int: ...
    @property
    def healthy(self) -> bool: ...


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
        self._requests = Counter(
            "meridian_requests", "API requests by outcome.",
            ["surface", "alias", "provider", "status"], registry=registry,
        )  # fmt: skip
        self._tokens = Counter(
            "meridian_tokens", "Tokens by kind, as the upstream reported them.",
            ["alias", "provider", "kind"], registry=registry,
        )  # fmt: skip
        self._duration = Histogram(
            "meridian_request_duration_seconds", "Whole-request latency.",
            ["surface", "alias", "provider"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._ttft = Histogram(
            "meridian_time_to_first_token_seconds", "Time to the first token of a stream.",
            ["surface", "alias", "provider"], buckets=TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self._in_flight = Gauge(
            "meridian_in_flight_requests", "Requests being served now.", ["surface"],
            registry=registry,
        )  # fmt: skip
        self._upstream_errors = Counter(
            "meridian_upstream_errors", "Failed calls that reached a provider, by error type.",
            ["provider", "type"], registry=registry,
        )  # fmt: skip
        self._rejections = Counter(
            "meridian_rate_limit_rejections",
            "Requests the gateway refused for a client key's rpm/tpm/budget limit.",
            ["key", "type"], registry=registry,
        )  # fmt: skip
        self._failed_attempts = Counter(
            "meridian_upstream_attempts_failed",
            "Attempts that failed and were retried or fallen back from, by error type.",
            ["provider", "type"], registry=registry,
        )  # fmt: skip
        self._queue_wait = Histogram(
            "meridian_provider_queue_wait_seconds",
            "Time a call waited for a concurrency slot of a limited provider.",
            ["provider"], buckets=QUEUE_BUCKETS, registry=registry,
        )  # fmt: skip
        self._providers: Callable[[], Mapping[str, Any]] = dict
        self._states: dict[str, ProviderState] = {}
        self._refreshed_at = -1e18
        self._ready_timeout = ready_timeout_s
        self._ready_ttl = ready_ttl_s
        self._clock = clock
        self._ledger: _Counts | None = None
        self._extra: list[Callable[[], Iterable[Metric]]] = []
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}
        self._token_children: dict[tuple[str, str], tuple[Any, ...]] = {}
        registry.register(_StateCollector(self))

    # -------------------------------------------------------------- Observer

    def record(self, rec: CallRecord) -> None:
        alias = rec.alias or ""
        provider = rec.provider or ""
        key = (rec.surface, alias, provider, rec.status)
        children = self._children.get(key)
        if children is None:
            labels = (rec.surface, alias, provider)
            children = self._children[key] = (
                self._requests.labels(*labels, str(rec.status)),
                self._duration.labels(*labels),
                self._ttft.labels(*labels),
            )
        requests, duration, ttft = children
        requests.inc()
        duration.observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            ttft.observe(rec.ttft_ms / 1000)
        u = rec.usage
        counts = (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.reasoning_tokens,
        )
        if any(counts):
            tokens = self._token_children.get((alias, provider))
            if tokens is None:
                tokens = self._token_children[(alias, provider)] = tuple(
                    self._tokens.labels(alias, provider, kind) for kind in TOKEN_KINDS
                )
            for child, n in zip(tokens, counts, strict=True):
                if n:
                    child.inc(n)
        for attempt in rec.attempts:
            if attempt.upstream:
                self._upstream_errors.labels(attempt.provider, attempt.error_type).inc()
            self._failed_attempts.labels(attempt.provider, attempt.error_type).inc()
        if rec.status >= 400:
            kind = rec.error_type or "unknown"
            if rec.upstream_error:
                # Only what an upstream did: a caller's bad request, a key's limit or a
                # client that left is not a provider error.
                self._upstream_errors.labels(provider, kind).inc()
            elif rec.status == 429 and rec.provider is None:
                # Refused before any provider was called: the key's own limits or budget.
                self._rejections.labels(rec.key_name or "", kind).inc()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # -------------------------------------------------------------- hooks for the app

    def in_flight(self, surface: str) -> InprogressTracker:
        """``with metrics.in_flight("openai"): ...`` around a request."""
        return self._in_flight.labels(surface).track_inprogress()

    def in_flight_inc(self, surface: str) -> None:
        self._in_flight.labels(surface).inc()

    def in_flight_dec(self, surface: str) -> None:
        self._in_flight.labels(surface).dec()

    def in_flight_now(self) -> dict[str, int]:
        return {
            s.labels["surface"]: int(s.value)
            for family in self._in_flight.collect()
            for s in family.samples
        }

    def observe_queue_wait(self, provider: str, seconds: float) -> None:
        self._queue_wait.labels(provider).observe(seconds)

    def watch_providers(self, providers: Callable[[], Mapping[str, Any]]) -> None:
        """``providers()`` returns the providers in force now (the current generation's)."""
        self._providers = providers
        self._refreshed_at = -1e18

    def collect_also(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add scrape-time series (the HTTP guard's counters, deployment health, ...)."""
        self._extra.append(collect)

    def watch_ledger(self, ledger: _Counts) -> None:
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
        return generate_latest(self.registry)


class _StateCollector:
    """Scrape-time gauges from the last `Metrics.refresh` and the ledger's counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        ready = GaugeMetricFamily(
            "meridian_provider_ready",
            "1 if the provider can take calls (for the subscription: the CLI is logged in).",
            labels=["provider"],
        )
        depth = GaugeMetricFamily(
            "meridian_provider_queue_depth", "Calls waiting for a slot.", labels=["provider"]
        )
        active = GaugeMetricFamily(
            "meridian_provider_in_flight", "Calls running upstream.", labels=["provider"]
        )
        limited = GaugeMetricFamily(
            "meridian_provider_limited_until_seconds",
            "Unix time the upstream's rate limit resets; 0 when not limited.",
            labels=["provider"],
        )
        for state in self._m._states.values():
            ready.add_metric([state.name], 1.0 if state.ready else 0.0)
            limited.add_metric([state.name], state.limited_until or 0.0)
            if state.queue_depth is not None:
                depth.add_metric([state.name], state.queue_depth)
            if state.in_flight is not None:
                active.add_metric([state.name], state.in_flight)
        out: list[Metric] = [ready, depth, active, limited]
        out += _status_series(self._m._states.values())
        ledger = self._m._ledger
        if ledger is not None:
            pending = GaugeMetricFamily(
                "meridian_ledger_pending_records", "Usage records queued for the database."
            )
            pending.add_metric([], ledger.pending)
            dropped = CounterMetricFamily(
                "meridian_ledger_dropped_records", "Usage records dropped (backlog full)."
            )
            dropped.add_metric([], ledger.dropped)
            failures = CounterMetricFamily(
                "meridian_ledger_write_failures", "Ledger writes that failed (rows kept, retried)."
            )
            failures.add_metric([], ledger.write_failures)
            healthy = GaugeMetricFamily(
                "meridian_ledger_healthy", "1 while ledger writes succeed, 0 while they fail."
            )
            healthy.add_metric([], 1.0 if ledger.healthy else 0.0)
            out += [pending, dropped, failures, healthy]
        for extra in self._m._extra:
            out.extend(extra())
        return out


def _status_series(states: Iterable[ProviderState]) -> list[Metric]:
    """Series from providers' ``status()``: ``processes`` (``busy``, ``idle``, ``spares``,
    ``hits``, ``misses``, ``evictions`` by reason) and ``rate_limits`` (a list of windows with
    ``window``, ``utilization``, ``resets_at``)."""
    procs = GaugeMetricFamily(
        "meridian_provider_processes", "Provider processes by state (the Claude CLI).",
        labels=["provider", "state"],
    )  # fmt: skip
    continued = CounterMetricFamily(
        "meridian_provider_continuations",
        "Requests that could continue a live process: served by it (hit) or not (miss).",
        labels=["provider", "outcome"],
    )  # fmt: skip
    evicted = CounterMetricFamily(
        "meridian_provider_process_evictions", "Idle processes stopped early, by reason.",
        labels=["provider", "reason"],
    )  # fmt: skip
    used = GaugeMetricFamily(
        "meridian_provider_window_utilization",
        "Share (0-1) of a subscription usage window used, as the upstream last reported it.",
        labels=["provider", "window"],
    )  # fmt: skip
    resets = GaugeMetricFamily(
        "meridian_provider_window_resets_at_seconds", "Unix time a usage window resets.",
        labels=["provider", "window"],
    )  # fmt: skip
    for state in states:
        status = state.status or {}
        p = status.get("processes")
        if isinstance(p, Mapping):
            for key in ("busy", "idle", "spares"):
                procs.add_metric([state.name, key], float(p.get(key) or 0))
            for key in ("hit", "miss"):
                continued.add_metric([state.name, key], float(p.get(key + "s") or 0))
            for reason, n in (p.get("evictions") or {}).items():
                evicted.add_metric([state.name, str(reason)], float(n))
        for window in status.get("rate_limits") or ():
            name = str(window.get("window"))
            if window.get("utilization") is not None:
                used.add_metric([state.name, name], float(window["utilization"]))
            if window.get("resets_at") is not None:
                resets.add_metric([state.name, name], float(window["resets_at"]))
    return [procs, continued, evicted, used, resets]


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
