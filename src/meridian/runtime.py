"""The running gateway's long-lived state: the current generation and what outlives it, config
reload, and the truth `/ready` tells.

Reload (SIGHUP, ``meridian reload``, ``POST /admin/reload``): the config file is read again;
a valid one becomes a new generation (its providers started first) that new calls use while
calls in flight finish on the old one, which is closed after them; an invalid one changes
nothing and says why. Settings that only a restart applies (listeners, storage, HTTP limits)
are reported, not applied.

Readiness: ready when at least one alias can be served, i.e. one of its deployments has a
ready provider and a circuit that is not open; otherwise not ready, with each provider's
reason. A failing usage ledger makes it "degraded" (still serving, rows kept in memory).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from meridian import config
from meridian.calls import Gateway
from meridian.config import ConfigError, Settings
from meridian.generation import Generation, build, changed_providers, restart_only_changes
from meridian.metrics import ProviderState, probe
from meridian.storage import Store

log = logging.getLogger("meridian.runtime")


class ReloadError(Exception):
    """The new configuration was not applied; the message says why."""


@dataclass(eq=False)
class Runtime:
    gateway: Gateway
    store: Store | None = None
    ledger: Any = None  # meridian.ledger.Ledger, for its health
    resolver: Any = None  # the key resolver generations share
    generated_master_key: str | None = None
    # Run at shutdown after the observers have flushed, before the store closes.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run at startup, once the store is open (background tasks).
    starters: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run once everything has started, before the first connection is accepted.
    after_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    limits: Any = None  # meridian.limits.shared.SharedLimiter (limits.redis_url), its health
    reloads: int = 0
    # Called after a reload through POST /admin/reload (a worker tells its siblings).
    on_admin_reload: Callable[[], None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def current(self) -> Generation:
        return self.gateway.current

    async def reload(self, settings: Settings | None = None) -> tuple[Generation, list[str]]:
        """Apply ``settings`` (default: the current config file read again). Returns the new
        generation and the changed settings that need a restart; raises `ReloadError`."""
        async with self._lock:
            old = self.current
            if settings is None:
                settings = await asyncio.to_thread(_read, old.settings.source)
            master = settings.server.master_key
            key = master.get_secret_value() if master is not None else self.generated_master_key
            if key is None:
                raise ReloadError("no master key: set server.master_key")
            assert self.gateway.health is not None
            gen = build(old.number + 1, settings, key, self.resolver, self.gateway.health)
            try:
                await gen.start()
            except Exception as exc:
                raise ReloadError(f"a provider failed to start: {exc}") from exc
            for name in changed_providers(old.settings, settings):
                self.gateway.health.forget(name)
            self.gateway.generations.swap(gen)
            self.reloads += 1
            pending = restart_only_changes(old.settings, settings)
            log.info(
                "configuration reloaded",
                extra={
                    "generation": gen.number,
                    "source": settings.source,
                    "aliases": sorted(settings.models),
                    "needs_restart": pending,
                },
            )
            if pending:
                log.warning(
                    "these settings changed but take effect only after a restart: %s",
                    ", ".join(pending),
                )
            return gen, pending

    async def reload_quietly(self) -> None:
        """For SIGHUP: reload, and log (never raise) why not."""
        try:
            await self.reload()
        except ReloadError as exc:
            log.error("reload failed; the running configuration stays: %s", exc)

    async def provider_states(self) -> list[ProviderState]:
        metrics = self.gateway.metrics
        if metrics is not None:
            return await metrics.refresh()
        gen = self.current
        return list(await asyncio.gather(*(probe(n, p) for n, p in gen.providers.items())))

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready?, the details) as ``/ready`` reports them."""
        gen = self.current
        states = {s.name: s for s in await self.provider_states()}
        health = self.gateway.health
        now_ok: list[str] = []
        for alias in gen.router.aliases:
            for route in gen.router.routes_for(alias):
                state = states.get(route.provider_name)
                circuit = health.state(route.provider_name, route.model) if health else None
                cooling = (
                    circuit is not None
                    and health is not None
                    and circuit.state_at(health.clock()) == "open"
                )
                if (state is None or state.ready) and not cooling:
                    now_ok.append(alias)
                    break
        store_ok = self.store is None or self.store.is_open
        ledger = self.ledger
        ledger_ok = ledger is None or ledger.healthy
        limits = self.limits
        limits_ok = limits is None or await limits.check()
        ready = store_ok and bool(now_ok)
        status = (
            "ready" if ready and ledger_ok and limits_ok else "degraded" if ready else "not ready"
        )
        now = health.clock() if health is not None else 0.0
        details: dict[str, Any] = {
            "status": status,
            "generation": gen.number,
            "store": "open" if store_ok else "closed",
            "models": gen.router.aliases,
            "servable": now_ok,
            "providers": {
                name: {"ready": s.ready, "detail": s.reason}
                | ({"status": dict(s.status)} if s.status else {})
                for name, s in states.items()
            },
            "deployments": [st.as_dict(now) for st in health.states()] if health else [],
        }
        if not now_ok:
            details["reason"] = "no model can be served: " + (
                "; ".join(f"{n}: {s.reason}" for n, s in states.items() if not s.ready)
                or "every deployment is cooling down"
                if gen.router.aliases
                else "none is configured"
            )
        if ledger is not None:
            details["ledger"] = {
                "ok": ledger.healthy,
                "pending": ledger.pending,
                "error": ledger.last_error,
            }
        if limits is not None:
            details["limits"] = {
                "store": limits.where,
                "ok": limits.up,
                "on_store_error": limits.on_error,
                "error": None if limits.up else limits.last_error,
            }
        return ready, details


def _read(source: str) -> Settings:
    if source.startswith("<"):
        # The built-in defaults: read the environment again.
        try:
            return config.default_settings(os.environ)
        except ConfigError as exc:
            raise ReloadError(str(exc)) from None
    try:
        return config.load(source)
    except ConfigError as exc:
        raise ReloadError(str(exc)) from None
