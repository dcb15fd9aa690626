"""A real meridian on loopback for tests: the app `server.build` makes, served by uvicorn
in a background thread (its own event loop), so sync and async clients, the official SDKs
and raw sockets all talk to it over real HTTP.

    with Gateway.start(settings_dict) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from meridian import config, server

MASTER_KEY = "sk-test-master-key-0123456789"


def settings(raw: dict[str, Any], tmp_path: Path) -> config.Settings:
    raw = dict(raw)
    raw.setdefault("server", {})
    raw["server"] = {
        "master_key": MASTER_KEY,
        "listen": ["127.0.0.1:0"],
        "shutdown_grace_s": 5,
        **raw["server"],
    }
    raw.setdefault("storage", {"path": str(tmp_path / "meridian.db")})
    return config.validate(raw, "<test>")


class Gateway:
    def __init__(self, settings: config.Settings, providers: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.key = MASTER_KEY
        self.built = server.assemble(settings, providers)
        self.app = self.built.app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The same protocol, limits and shutdown as `meridian serve`.
        self._server = server.GracefulServer(
            server.uvicorn_config(self.built, settings, loop="asyncio"),
            self.built,
            settings.server.shutdown_grace_s,
        )
        self._thread = threading.Thread(target=self._run, name="meridian-test", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        self.loop.close()

    @classmethod
    def start(
        cls, raw: dict[str, Any], tmp_path: Path, providers: dict[str, Any] | None = None
    ) -> Gateway:
        gw = cls(settings(raw, tmp_path), providers)
        gw._thread.start()
        for _ in range(500):
            if gw._server.started:
                return gw
            if not gw._thread.is_alive():
                raise RuntimeError("meridian failed to start")
            threading.Event().wait(0.01)
        raise RuntimeError("meridian did not start within 5 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flush_ledger(self) -> None:
        """Write every usage row queued so far (the ledger runs in the server's loop)."""
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.built.ledger.flush(), self.loop).result(10)

    def usage_rows(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The ledger's rows (after a flush), oldest first."""
        self.flush_ledger()
        store = self.built.runtime.store
        assert store is not None
        return [
            dict(r) for r in store.query(f"SELECT * FROM usage WHERE {where} ORDER BY id", params)
        ]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}", **extra}


def two_upstreams(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    """Aliases on both families: gpt-* on the OpenAI fake, claude-* on the Anthropic fake."""
    return {
        "providers": {
            "oai": {"type": "openai", "api_key": "sk-upstream-openai", "base_url": openai_url},
            "ant": {
                "type": "anthropic",
                "api_key": "sk-upstream-anthropic",
                "base_url": anthropic_url,
            },
        },
        "models": {
            "gpt-test": {"provider": "oai", "model": "gpt-4o-mini"},
            "o3-test": {"provider": "oai", "model": "o3-mini"},
            "claude-test": {"provider": "ant", "model": "claude-haiku-4-5"},
            "fallback-test": [
                {"provider": "ant", "model": "claude-sonnet-4-6"},
                {"provider": "oai", "model": "gpt-4o"},
            ],
        },
    }
