"""``meridian check --live``: one tiny request through every alias, the smoke test an
operator runs after a deploy. It runs in-process (no server needed), through the same core
as every API call (`meridian.calls.Call`): routing, fallbacks, retries, preparation and the
providers, exactly as a client's request would go."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

import orjson

from meridian import dialects, generation
from meridian.calls import Answer, Call, Gateway
from meridian.config import Settings
from meridian.errors import MeridianError, Timeout
from meridian.generation import Generations
from meridian.health import Health

PROMPT = "Reply with the single word: pong"


@dataclass(frozen=True, slots=True)
class CheckRow:
    alias: str
    deployment: str  # provider/model that answered (or failed last)
    ok: bool
    latency_ms: float
    answer: str = ""
    error: str = ""
    failed: list[str] = field(default_factory=list)  # deployments tried before, that failed


async def live_check(settings: Settings, timeout_s: float = 60.0) -> list[CheckRow]:
    key = "mk-check-" + secrets.token_urlsafe(16)
    health = Health(settings.router.cooldown)
    gen = generation.build(1, settings, key, None, health)
    await gen.start()
    gw = Gateway(Generations(gen), health=health)
    headers = {"authorization": f"Bearer {key}"}
    rows = []
    try:
        for alias in gen.router.aliases:
            first = gen.router.routes_for(alias)[0].deployment
            call = Call(gw, dialects.CHAT, path="meridian check --live", headers=headers)
            started = time.perf_counter()
            body = {
                "model": alias,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": PROMPT}],
            }
            try:
                await call.admit()
                async with asyncio.timeout(timeout_s):
                    answer = await call.answer(body)
                assert isinstance(answer, Answer)
                text = _text(answer.body)
                served = answer.headers.get("x-meridian-deployment", first)
                rows.append(
                    CheckRow(alias, served, True, _ms(started), text[:40], "", _failed(call))
                )
            except TimeoutError:
                call.fail(Timeout(f"no answer within {timeout_s:g} s"))
                rows.append(
                    _failure(alias, call, first, started, f"no answer within {timeout_s:g} s")
                )
            except MeridianError as exc:
                call.fail(exc)
                rows.append(_failure(alias, call, first, started, exc.message))
        return rows
    finally:
        await gen.aclose()


def _failure(alias: str, call: Call, first: str, started: float, message: str) -> CheckRow:
    deployment = f"{call.rec.provider}/{call.rec.upstream_model}" if call.rec.provider else first
    return CheckRow(alias, deployment, False, _ms(started), "", message[:200], _failed(call))


def _failed(call: Call) -> list[str]:
    return [f"{a.provider}/{a.upstream_model} ({a.error_type})" for a in call.rec.attempts]


def _text(body: bytes) -> str:
    data = orjson.loads(body)
    choices = data.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    return str(content or "").strip()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
