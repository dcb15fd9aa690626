"""``meridian serve``: settings in, a running gateway out.

`build` turns `Settings` into the app (providers, store, keys, observers); `serve` binds every
listener and runs uvicorn until SIGTERM/SIGINT, then shuts down gracefully: listeners close,
in-flight calls get ``shutdown_grace_s`` to finish, the lifespan closes providers (killing
any Claude CLI process) and flushes the usage ledger.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from meridian import admin, dashboard, logs, masterkey
from meridian import providers as provider_registry
from meridian.app import Runtime, create_app
from meridian.auth import Authenticator
from meridian.calls import Gateway
from meridian.config import Settings
from meridian.keys import KeyStore, StoreKeyResolver
from meridian.ledger import Ledger
from meridian.limits import Limiter
from meridian.logs import RequestLog
from meridian.metrics import Metrics, metrics_route
from meridian.prices import PriceTable
from meridian.providers.base import Provider
from meridian.router import Router
from meridian.store import Store

log = logging.getLogger("meridian.server")


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


def assemble(settings: Settings, providers: Mapping[str, Provider] | None = None) -> Built:
    """The app for ``settings``; ``providers`` replaces the configured ones (tests, embedding)."""
    if providers is None:
        providers = {n: provider_registry.build(n, c) for n, c in settings.providers.items()}
    store = Store(settings.storage.path)
    keys = KeyStore(store)
    resolver = StoreKeyResolver(keys)
    master = master_key(settings)
    authenticator = Authenticator(master, resolver)
    prices = PriceTable()
    ledger = Ledger(store, prices, retention_days=settings.storage.retention_days)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for name, provider in providers.items():
        metrics.watch_provider(name, provider)
    metrics.watch_ledger(ledger)
    request_log = RequestLog(log_bodies=settings.server.log_bodies, secrets=[master])
    gateway = Gateway(
        router=Router(settings, providers),
        authenticator=authenticator,
        # One limiter per process: every listener shares its windows and budgets.
        admission=Limiter(keys),
        observers=[request_log, ledger, metrics]
        if settings.storage.usage_ledger
        else [request_log, metrics],
        prices=prices,
        metrics=metrics,
        request_log=request_log if settings.server.log_bodies else None,
        max_body_bytes=int(settings.server.max_body_mb * 1024 * 1024),
        keepalive_s=settings.server.keepalive_s,
        request_timeout_s=settings.server.request_timeout_s,
    )
    runtime = Runtime(gateway=gateway, providers=providers, store=store, closers=[resolver.aclose])
    metrics_auth = authenticator if settings.server.metrics_require_key else None
    extra = [
        *admin.routes(authenticator, keys),
        *dashboard.routes(store, authenticator, providers, metrics),
        metrics_route(metrics, metrics_auth),
    ]
    return Built(create_app(runtime, extra), runtime, ledger, metrics, registry)


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


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured SIGTERM once it has shut down, so a clean, graceful
        # stop would look like "killed by signal" to systemd and shells. It is a success.
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)


def serve(settings: Settings, *, shutdown_grace_s: int = 30) -> None:
    sockets = [bind(listen) for listen in settings.server.listen]
    app = build(settings)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=shutdown_grace_s,
        timeout_keep_alive=75,
    )
    server = _Server(config)
    # Everything imported and built so far lives as long as the process: take it out of the
    # cyclic collector's sight. Otherwise every full collection walks it all, stalling the
    # loop for 10-20 ms, and under load full collections come several times a second
    # (requests in flight outlive the young generations and count towards a full one).
    gc.collect()
    gc.freeze()
    logs.startup(
        log,
        settings.server.listen,
        {name: conf.type for name, conf in settings.providers.items()},
        settings.models,
    )
    server.run(sockets=sockets)
