"""``meridian check --live``: one tiny request through every alias, the smoke test an
operator runs after a deploy. It drives the providers in-process (no server needed)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass

from meridian import providers as provider_registry
from meridian.calls import new_request_id
from meridian.config import Settings
from meridian.errors import MeridianError
from meridian.model import Collector, Message, Request, TextBlock
from meridian.providers.base import CallContext
from meridian.router import Router

PROMPT = "Reply with the single word: pong"


@dataclass(frozen=True, slots=True)
class CheckRow:
    alias: str
    provider: str
    model: str
    ok: bool
    latency_ms: float
    answer: str = ""
    error: str = ""


async def live_check(settings: Settings, timeout_s: float = 60.0) -> list[CheckRow]:
    providers = {n: provider_registry.build(n, c) for n, c in settings.providers.items()}
    router = Router(settings, providers)
    for provider in providers.values():
        await provider.start()
    try:
        rows = []
        for alias in router.aliases:
            for route in router.routes_for(alias):
                request = route.prepare(
                    Request(
                        model=alias,
                        messages=(Message("user", (TextBlock(PROMPT),)),),
                        max_tokens=16,
                    )
                )
                started = time.perf_counter()
                try:
                    collector = Collector()
                    async with asyncio.timeout(timeout_s):
                        deadline = asyncio.get_running_loop().time() + timeout_s
                        ctx = CallContext(new_request_id(), deadline=deadline)
                        async with aclosing(route.provider.stream(request, ctx)) as events:
                            async for event in events:
                                collector.feed(event)
                    text = " ".join(
                        b.text for b in collector.response().content if isinstance(b, TextBlock)
                    )
                    rows.append(
                        CheckRow(
                            alias,
                            route.provider_name,
                            route.model,
                            True,
                            _ms(started),
                            answer=text.strip()[:40],
                        )
                    )
                except (MeridianError, TimeoutError) as exc:
                    message = str(exc) or f"no answer within {timeout_s:g} s"
                    rows.append(
                        CheckRow(
                            alias,
                            route.provider_name,
                            route.model,
                            False,
                            _ms(started),
                            error=message[:200],
                        )
                    )
        return rows
    finally:
        for provider in providers.values():
            await provider.aclose()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
