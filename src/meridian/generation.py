"""A generation: everything a config file decides, built together and replaced together.

    settings -> providers (started) + router + authenticator (master key) + call limits

`Generations` holds the current one. A call pins the generation it started on (``enter`` /
``leave``) and finishes on it even if a reload swaps in another meanwhile; a retired
generation closes its providers when its last call leaves. What outlives generations (the
store, keys, limits, the ledger, metrics, deployment health) belongs to the gateway.

Some settings take effect only at start: the listeners, the storage path and the HTTP
limits (``server.http``); a reload that changes them says so and leaves them as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from meridian import providers as provider_registry
from meridian.auth import Authenticator, KeyResolver
from meridian.config import Settings
from meridian.health import Health
from meridian.providers.base import Provider
from meridian.router import Router

log = logging.getLogger("meridian.generation")


@dataclass(eq=False)
class Generation:
    number: int
    settings: Settings
    providers: Mapping[str, Provider]
    router: Router
    authenticator: Authenticator
    calls: int = 0
    retired: bool = False
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    # Read by every call: derived once.
    max_body_bytes: int = 0
    max_json_depth: int = 0
    max_in_flight: int = 0
    keepalive_s: float = 0.0

    def __post_init__(self) -> None:
        server = self.settings.server
        self.max_body_bytes = int(server.max_body_mb * 1024 * 1024)
        self.max_json_depth = server.http.max_json_depth
        self.max_in_flight = server.http.max_in_flight
        self.keepalive_s = server.keepalive_s

    async def start(self) -> None:
        """Start every provider; if one fails, close those started and re-raise."""
        started: list[Provider] = []
        try:
            for provider in self.providers.values():
                await provider.start()
                started.append(provider)
        except BaseException:
            for provider in started:
                with contextlib.suppress(Exception):
                    await provider.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for name, provider in self.providers.items():
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing provider %s failed", name)


def build(
    number: int,
    settings: Settings,
    master_key: str,
    resolver: KeyResolver | None,
    health: Health,
    providers: Mapping[str, Provider] | None = None,
) -> Generation:
    if providers is None:
        providers = {n: provider_registry.build(n, c) for n, c in settings.providers.items()}
    return Generation(
        number=number,
        settings=settings,
        providers=providers,
        router=Router(settings, providers, health),
        authenticator=Authenticator(master_key, resolver),
    )


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The settings that differ but need a restart to take effect."""
    changed = []
    if old.server.listen != new.server.listen:
        changed.append("server.listen")
    if old.storage != new.storage:
        changed.append("storage")
    if old.server.http != new.server.http:
        changed.append("server.http")
    if old.limits != new.limits:
        changed.append("limits")
    if old.server.workers != new.server.workers:
        changed.append("server.workers")
    return changed


def changed_providers(old: Settings, new: Settings) -> set[str]:
    """Providers removed or configured differently: their health history no longer holds."""
    return {
        name
        for name, conf in old.providers.items()
        if name not in new.providers or new.providers[name] != conf
    }


class Generations:
    def __init__(self, first: Generation) -> None:
        self.current = first
        self._retiring: set[Generation] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def enter(self) -> Generation:
        gen = self.current
        gen.calls += 1
        return gen

    def leave(self, gen: Generation) -> None:
        gen.calls -= 1
        if gen.retired and gen.calls == 0:
            self._close_soon(gen)

    def swap(self, new: Generation) -> Generation:
        """Make ``new`` current; the old one closes once its calls have finished."""
        old, self.current = self.current, new
        old.retired = True
        if old.calls == 0:
            self._close_soon(old)
        else:
            self._retiring.add(old)
        return old

    def _close_soon(self, gen: Generation) -> None:
        self._retiring.discard(gen)
        task = asyncio.get_running_loop().create_task(gen.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every generation (at shutdown: calls have finished or been stopped)."""
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
        for gen in [*self._retiring, self.current]:
            await gen.aclose()
