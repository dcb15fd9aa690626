"""Scrape-time state: what each provider says of itself, and the ledger's backlog.

`probe` asks a provider (never on the request path); `state_families` turns the answers and
the ledger's counters into metric families for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


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


class LedgerCounts(Protocol):
    @property
    def pending(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def write_failures(self) -> int: ...
    @property
    def healthy(self) -> bool: ...


def state_families(states: Iterable[ProviderState], ledger: LedgerCounts | None) -> list[Metric]:
    states = list(states)
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
    for state in states:
        ready.add_metric([state.name], 1.0 if state.ready else 0.0)
        limited.add_metric([state.name], state.limited_until or 0.0)
        if state.queue_depth is not None:
            depth.add_metric([state.name], state.queue_depth)
        if state.in_flight is not None:
            active.add_metric([state.name], state.in_flight)
    out: list[Metric] = [ready, depth, active, limited]
    out += _status_series(states)
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
