"""``meridian serve``: settings in, a running gateway out.

`assemble` turns `Settings` into the app (store, keys, the first generation, observers);
`serve` binds every listener and runs uvicorn behind meridian's guarded HTTP protocol until
SIGTERM/SIGINT. SIGHUP reloads the config file (`meridian.runtime`).

Shutdown is graceful: listeners close, calls in flight get ``server.shutdown_grace_s`` to
finish; then every stream still open gets an error event in its client's format and every
call not yet answered a 529/503, and after a few more seconds whatever is left is cancelled.
The lifespan then closes providers (stopping any Claude CLI process) and flushes the ledger.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import resource
import signal
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.applications import Starlette

from meridian import admin, dashboard, generation, logs, masterkey
from meridian.app import create_app
from meridian.auth import Authenticator
from meridian.calls import Gateway
from meridian.config import ConfigError, Settings
from meridian.generation import Generations
from meridian.health import Health
from meridian.http.protocol import Guard
from meridian.keys import KeyStore
from meridian.ledger import Ledger
from meridian.limits import Limiter
from meridian.logs import RequestLog
from meridian.metrics import Metrics, metrics_route
from meridian.prices import PriceTable
from meridian.providers.base import Provider
from meridian.records import Observer
from meridian.redact import redact_store_url
from meridian.resolver import StoreKeyResolver
from meridian.runtime import Runtime
from meridian.workers import Supervisor, Worker

if TYPE_CHECKING:
    from meridian.cooldowns import SharedCooldowns
    from meridian.limits.shared import SharedLimiter

log = logging.getLogger("meridian.server")

# After the grace period: how long streams get to send their error event and close.
ABORT_GRACE_S = 5.0
# How long a reservation in Redis outlives the longest call deadline.
HOLD_MARGIN_S = 10.0
_STATE_CODES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def master_key(settings: Settings) -> str:
    """The master key in force; reads only (``meridian serve`` generates a missing one first)."""
    return masterkey.load(settings)


@dataclass(slots=True)
class Built:
    """The app and the parts of it that tests and embedders may want to reach."""

    app: Starlette
    runtime: Runtime
    ledger: Ledger
    metrics: Metrics
    registry: CollectorRegistry
    guard: Guard

    @property
    def gateway(self) -> Gateway:
        return self.runtime.gateway


def assemble(settings: Settings, providers: Mapping[str, Provider] | None = None) -> Built:
    """The app for ``settings``; ``providers`` replaces the configured ones (tests, embedding).
    Opens the store: a database that cannot be used raises `StoreError` here, before
    anything listens."""
    store = settings.storage.store().open()
    keys = KeyStore(store)
    resolver = StoreKeyResolver(keys)
    master = master_key(settings)
    prices = PriceTable()
    ledger = Ledger(store, prices, retention_days=settings.storage.retention_days)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    health = Health(settings.router.cooldown)
    first = generation.build(1, settings, master, resolver, health, providers)
    gens = Generations(first)
    request_log = RequestLog(log_bodies=settings.server.log_bodies, secrets=[master])
    observers: list[Observer] = [request_log, metrics]
    if settings.storage.usage_ledger:
        observers.insert(1, ledger)
    shared = _shared_limits(settings, keys)
    cooldowns = _shared_cooldowns(settings, health) if shared else None
    if shared is not None and cooldowns is not None:
        cooldowns.observer = shared.observed  # the sync is the limiter's heartbeat too
    gateway = Gateway(
        generations=gens,
        # One limiter per process: every listener shares its windows and budgets (and with
        # limits.redis_url, every replica).
        admission=shared or Limiter(keys),
        observers=observers,
        unrouted=[request_log, metrics],
        prices=prices,
        metrics=metrics,
        health=health,
        request_log=request_log if settings.server.log_bodies else None,
    )
    runtime = Runtime(
        gateway=gateway,
        store=store,
        ledger=ledger if settings.storage.usage_ledger else None,
        resolver=resolver,
        generated_master_key=None if settings.server.master_key else master,
        closers=[
            resolver.aclose,
            *([shared.aclose] if shared else []),
            *([cooldowns.aclose] if cooldowns else []),
        ],
        starters=[cooldowns.start] if cooldowns else [],
        limits=shared,
    )
    guard = Guard(settings.server.http)
    metrics.watch_providers(lambda: gateway.current.providers)
    metrics.watch_ledger(ledger)
    metrics.collect_also(lambda: _gateway_series(gateway, guard))
    if shared is not None:
        metrics.collect_also(lambda: _limits_series(shared))

    def authenticator() -> Authenticator:
        return gateway.current.authenticator

    metrics_auth = authenticator if settings.server.metrics_require_key else None
    extra = [
        *admin.routes(authenticator, keys, runtime),
        *dashboard.routes(store, runtime, metrics),
        metrics_route(metrics, metrics_auth),
    ]
    return Built(create_app(runtime, extra), runtime, ledger, metrics, registry, guard)


def _shared_limits(settings: Settings, keys: KeyStore) -> SharedLimiter | None:
    """The limiter shared through Redis when ``limits.redis_url`` is set."""
    limits = settings.limits
    if limits.redis_url is None:
        return None
    try:
        from meridian.limits.redis import connect
        from meridian.limits.shared import SharedLimiter
    except ImportError as exc:
        if not (exc.name or "").startswith("redis"):
            raise
        raise ConfigError(
            f"{settings.source}: limits.redis_url needs the Redis client library: "
            "pip install 'meridian[redis]'"
        ) from None
    url = limits.redis_url.get_secret_value()
    # A reservation outlives the longest deadline a call can have, then frees itself.
    deadlines = [settings.server.request_timeout_s]
    for alias in settings.models:
        own = settings.alias_config(alias)
        if own is not None and own.timeout_s is not None:
            deadlines.append(own.timeout_s)
    return SharedLimiter(
        keys,
        connect(url, timeout_s=limits.timeout_s),
        where=redact_store_url(url),
        on_error=limits.on_store_error,
        hold_s=max(deadlines) + HOLD_MARGIN_S,
    )


def _shared_cooldowns(settings: Settings, health: Health) -> SharedCooldowns:
    """Cooldowns shared through the same Redis as the limits."""
    from meridian.cooldowns import SharedCooldowns
    from meridian.limits.redis import client

    limits = settings.limits
    assert limits.redis_url is not None
    url = limits.redis_url.get_secret_value()
    return SharedCooldowns(
        client(url, timeout_s=limits.timeout_s), health, timeout_s=limits.timeout_s
    )


def _limits_series(shared: SharedLimiter) -> Iterable[Metric]:
    up = GaugeMetricFamily(
        "meridian_limits_store_up", "1 while the limits store (Redis) answers, 0 while it fails."
    )
    up.add_metric([], 1.0 if shared.up else 0.0)
    errors = CounterMetricFamily(
        "meridian_limits_store_errors", "Limits store (Redis) commands that failed or timed out."
    )
    errors.add_metric([], shared.errors)
    return [up, errors]


def _gateway_series(gateway: Gateway, guard: Guard) -> Iterable[Metric]:
    state = GaugeMetricFamily(
        "meridian_deployment_state",
        "Circuit of each deployment that has failed lately: 0 closed, 1 half-open, 2 open.",
        labels=["provider", "model"],
    )
    until = GaugeMetricFamily(
        "meridian_deployment_open_until_seconds",
        "Unix time until which an open deployment is skipped.",
        labels=["provider", "model"],
    )
    if gateway.health is not None:
        now = gateway.health.clock()
        for st in gateway.health.states():
            current = st.state_at(now)
            state.add_metric([st.provider, st.model], _STATE_CODES[current])
            until.add_metric([st.provider, st.model], st.open_until if current == "open" else 0)
    gen = GaugeMetricFamily("meridian_config_generation", "Config generation in force (reloads).")
    gen.add_metric([], gateway.current.number)
    out: list[Metric] = [state, until, gen]
    for name, doc, value in (
        ("meridian_http_shed_connections", "Connections refused (max_connections).", guard.shed),
        ("meridian_http_request_timeouts", "Requests answered 408 (too slow).", guard.timeouts),
        ("meridian_http_oversized_heads", "Requests answered 431 (head too big).", guard.too_large),
    ):
        counter = CounterMetricFamily(name, doc)
        counter.add_metric([], value)
        out.append(counter)
    return out


def build(settings: Settings, providers: Mapping[str, Provider] | None = None) -> Starlette:
    return assemble(settings, providers).app


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {listen}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(built: Built, settings: Settings, *, loop: str = "uvloop") -> uvicorn.Config:
    """uvicorn, behind meridian's guarded protocol; the same for ``serve`` and the tests."""
    return uvicorn.Config(
        built.app,
        loop=loop,
        http=built.guard.protocol_factory(),  # type: ignore[arg-type]
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # uvicorn's own cap would answer plain text; the guard and the calls shed instead.
        limit_concurrency=None,
        timeout_keep_alive=max(1, math.ceil(settings.server.http.idle_timeout_s)),
        timeout_graceful_shutdown=math.ceil(settings.server.shutdown_grace_s + ABORT_GRACE_S),
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, with meridian's end of the grace period and without a failing exit code for
    a clean SIGTERM."""

    def __init__(self, config: uvicorn.Config, built: Built, grace_s: float) -> None:
        super().__init__(config)
        self.built = built
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured SIGTERM once it has shut down, so a clean, graceful
        # stop would look like "killed by signal" to systemd and shells. It is a success.
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)

    async def _wait_tasks_to_complete(self) -> None:
        gateway = self.built.gateway
        gateway.closing = True
        try:
            async with asyncio.timeout(self.grace_s):
                await super()._wait_tasks_to_complete()
        except TimeoutError:
            stopped = gateway.stop_calls()
            log.warning(
                "shutdown grace of %gs is over: stopping %d calls still running",
                self.grace_s,
                stopped,
            )
            # uvicorn's own timeout (grace + ABORT_GRACE_S) cancels whatever is left.
            await super()._wait_tasks_to_complete()
        await self.built.guard.aclose()


def raise_fd_limit(wanted: int) -> None:
    """Every connection is a file descriptor, and so is each upstream connection: raise the
    soft limit towards the hard one so that max_connections can actually be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("cannot raise the open-files limit from %d to %d", soft, target)
            return
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open-files limit (%d) is below what server.http.max_connections needs (%d): "
            "connections may fail before the limit sheds them",
            soft,
            wanted,
        )


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the exit code. ``server.workers`` > 1: as a supervisor of
    that many worker processes (`meridian.workers`). A store that cannot be used raises
    `StoreError` before anything listens."""
    built: Built | None = None
    if settings.server.workers == 1:
        built = assemble(settings)
    else:
        settings.storage.store().open().close()  # migrations run once, before any worker
    sockets = [bind(listen) for listen in settings.server.listen]
    raise_fd_limit(settings.server.http.max_connections * 2 + 256)
    logs.startup(
        log,
        settings.server.listen,
        {name: conf.type for name, conf in settings.providers.items()},
        settings.models,
    )
    if built is not None:
        _serve_process(built, settings, sockets)
        return 0

    def worker(me: Worker) -> int:
        built = assemble(settings)
        built.metrics.share(me.run_dir, me.index)
        runtime = built.runtime
        runtime.on_admin_reload = me.notify_siblings
        if me.reloaded:  # a replacement: start from the config file as the siblings reloaded it
            runtime.after_start.append(runtime.reload_quietly)

        async def take_reloads() -> None:
            me.take_reloads()

        runtime.after_start.append(take_reloads)
        _serve_process(built, settings, sockets, orphaned_fd=me.orphaned_fd)
        return 0

    # A worker's own stop takes at most the grace period, the abort grace and uvicorn's
    # lifespan shutdown; past that (and a margin), the supervisor kills it.
    stop_within = settings.server.shutdown_grace_s + ABORT_GRACE_S + 20
    return Supervisor(settings.server.workers, worker, sockets, stop_within).serve()


def _serve_process(
    built: Built, settings: Settings, sockets: list[socket.socket], orphaned_fd: int | None = None
) -> None:
    """uvicorn on ``sockets`` until SIGTERM/SIGINT, or until ``orphaned_fd`` (a worker's end
    of its supervisor's pipe) says the supervisor is gone."""
    server = GracefulServer(
        uvicorn_config(built, settings), built, settings.server.shutdown_grace_s
    )
    # Everything imported and built so far lives as long as the process: take it out of the
    # cyclic collector's sight. Otherwise every full collection walks it all, stalling the
    # loop for 10-20 ms, and under load full collections come several times a second
    # (requests in flight outlive the young generations and count towards a full one).
    gc.collect()
    gc.freeze()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.create_task(built.runtime.reload_quietly())
        )
        if orphaned_fd is not None:

            def orphaned() -> None:
                loop.remove_reader(orphaned_fd)
                log.error("the supervisor is gone: this worker stops")
                os.kill(os.getpid(), signal.SIGTERM)

            loop.add_reader(orphaned_fd, orphaned)
        await server.serve(sockets=sockets)

    import uvloop

    uvloop.run(run())
