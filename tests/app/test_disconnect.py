"""A client that goes away mid-stream stops the provider at once: its generator is closed
(that is what interrupts a Claude CLI run or closes an upstream connection)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from harness import Gateway
from meridian.model import (
    BlockDelta,
    BlockStart,
    Event,
    MessageStart,
    Request,
    TextBlock,
    TextDelta,
)
from meridian.providers.base import CallContext, Capabilities, Operation, Relayed


class EndlessProvider:
    """Streams text forever, one delta every 20 ms, and notes when it is closed."""

    name = "endless"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.sent = 0

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        try:
            yield MessageStart("msg_1", request.model)
            yield BlockStart(0, TextBlock(""))
            while True:
                await asyncio.sleep(0.02)
                self.sent += 1
                yield BlockDelta(0, TextDelta("tick "))
        finally:
            self.closed.set()

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        raise NotImplementedError

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def ready(self) -> tuple[bool, str]:
        return True, "ok"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/chat/completions", ""),
        ("/v1/messages", "anthropic-version: 2023-06-01\r\n"),
    ],
)
def test_disconnect_closes_the_provider_stream(tmp_path: Path, path: str, headers: str) -> None:
    provider = EndlessProvider()
    raw = {
        "providers": {"endless": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
        "models": {"forever": {"provider": "endless", "model": "m"}},
    }
    with Gateway.start(raw, tmp_path, providers={"endless": provider}) as gw:
        body = json.dumps(
            {
                "model": "forever",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            }
        ).encode()
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {gw.key}\r\n{headers}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"tick") < 3:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        sock.close()
        assert provider.closed.wait(5), "the provider kept streaming after the client left"
        sent = provider.sent
        threading.Event().wait(0.2)
        assert provider.sent == sent
