"""Helpers for the ledger/metrics/logs/dashboard tests.

`Stack` is a real meridian on loopback with the observability parts wired in the way
``server.build`` is meant to wire them (see `wire`): a request log, the usage ledger and
metrics as the gateway's observers, and ``/ui`` plus ``/metrics`` as extra routes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import ASGIApp

from meridian import config
from meridian.ledger import Ledger
from meridian.metrics import Metrics
from meridian.model import Usage
from meridian.records import CallRecord
from meridian.storage import Store, make_store

MASTER_KEY = "sk-test-master-key-0123456789"
T0 = 1_780_000_000.0  # a fixed "now" for clock-driven tests (2026-05-28)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rec(n: int = 0, **kw: Any) -> CallRecord:
    """A finished call; ``n`` varies the ids and token counts."""
    fields: dict[str, Any] = {
        "request_id": f"req_{n:06d}",
        "started_at": T0 + n,
        "surface": "openai",
        "endpoint": "/v1/chat/completions",
        "key_name": "pulse",
        "key_id": 1,
        "alias": "gpt-test",
        "provider": "oai",
        "upstream_model": "gpt-4o-mini",
        "status": 200,
        "usage": Usage(input_tokens=10 + n, output_tokens=2 * n + 1),
        "latency_ms": 100.0 + n,
        "ttft_ms": None,
        "stream": False,
        "path": "relay",
    }
    fields.update(kw)
    return CallRecord(**fields)


class LoopbackServer:
    """Any ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: ASGIApp) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, loop="asyncio", http="httptools", lifespan="on", access_log=False,
                log_config=None, timeout_graceful_shutdown=5,
            )
        )  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="ledger-test-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> LoopbackServer:
        self._thread.start()
        for _ in range(1000):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                raise RuntimeError("server failed to start")
            threading.Event().wait(0.01)
        raise RuntimeError("server did not start within 10 s")

    def stop(self) -> None:
        """Graceful: uvicorn drains connections, then the lifespan closes (ledger flush)."""
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("server did not stop within 20 s")

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Wired:
    app: ASGIApp
    settings: config.Settings
    store: Store
    ledger: Ledger
    metrics: Metrics
    registry: CollectorRegistry


def wire(settings: config.Settings, master_key: str = MASTER_KEY) -> Wired:
    """The gateway exactly as ``meridian serve`` builds it, with its parts in reach."""
    from meridian import server

    if settings.server.master_key is None:
        settings = settings.model_copy(
            update={
                "server": settings.server.model_copy(update={"master_key": SecretStr(master_key)})
            }
        )
    built = server.assemble(settings)
    assert built.runtime.store is not None
    return Wired(
        built.app, settings, built.runtime.store, built.ledger, built.metrics, built.registry
    )


def create_keys(db: Path, *names: str) -> dict[str, str]:
    """Client keys made the way ``meridian keys create`` makes them: name -> secret."""
    from meridian.keys import KeyStore

    store = make_store(str(db)).open()
    try:
        keys = KeyStore(store)
        return {name: keys.create(name)[0] for name in names}
    finally:
        store.close()


def settings(raw: dict[str, Any], tmp_path: Path) -> config.Settings:
    raw = dict(raw)
    raw["server"] = {"master_key": MASTER_KEY, "listen": ["127.0.0.1:0"], **raw.get("server", {})}
    raw.setdefault("storage", {"path": str(tmp_path / "meridian.db")})
    return config.validate(raw, "<test>")


def upstreams(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    return {
        "providers": {
            "oai": {"type": "openai", "api_key": "sk-upstream-openai", "base_url": openai_url},
            "ant": {"type": "anthropic", "api_key": "sk-upstream-ant", "base_url": anthropic_url},
        },
        "models": {
            "gpt-test": {"provider": "oai", "model": "gpt-4o-mini"},
            "claude-test": {"provider": "ant", "model": "claude-haiku-4-5"},
        },
    }
