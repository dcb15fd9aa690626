"""The soak: several minutes of mixed load with faults and disconnects against one meridian,
its memory and file descriptors sampled throughout.

    python bench/soak.py                   # 5 minutes, 32 clients
    python bench/soak.py --minutes 2 --clients 16

A fault-injecting upstream (this file, ``--upstream``) answers by the word in the prompt:
``ok``, ``slow`` (a paced stream), ``overload`` (529 on its Anthropic side only, so that a
fallback to its OpenAI side works), ``reset`` (TCP reset mid-stream), ``errorfirst`` (200,
then an error event), ``stall`` (silence past the idle limit). The clients mix: plain and
streamed calls on both APIs (pass-through and translated), calls to a fallback alias whose
first deployment is overloaded, clients that leave mid-stream or before the first byte,
slowloris heads, oversized heads, bad JSON, JSON nested too deep and unauthenticated
calls. Every 5 s it samples meridian's RSS, open descriptors and threads; at the end it
prints the samples per minute, the outcomes, and whether RSS and descriptors stayed flat
(the last minute's mean against the first's, after a minute of warm-up) and whether every
API call that reached a handler is in the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

import targets
from procs import Server, rss_mb

KEY = "sk-soak-master-key"


# ------------------------------------------------------------------ the faulty upstream


def _behaviour(body: dict[str, Any]) -> str:
    text = orjson.dumps(body.get("messages", [])).decode()
    for word in ("overload", "reset", "errorfirst", "stall", "slow"):
        if word in text:
            return word
    return "ok"


async def _answer(request: web.Request) -> web.StreamResponse:
    anthropic = request.path.endswith("/messages")
    body = await request.json()
    what = _behaviour(body)
    if what == "overload" and anthropic:
        err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return web.json_response(err, status=529)
    if not body.get("stream"):
        if anthropic:
            return web.json_response({
                "id": "msg_soak", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 2}})
        return web.json_response({
            "id": "chatcmpl-soak", "object": "chat.completion", "created": 0,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "pong"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    events = _events(anthropic, body["model"], what)
    try:
        for i, event in enumerate(events):
            if what == "reset" and i == 4:
                transport = request.transport
                sock = transport.get_extra_info("socket") if transport else None
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if transport is not None:
                    transport.abort()
                return resp
            if what == "stall" and i == 3:
                await asyncio.sleep(30)
            if what == "slow":
                await asyncio.sleep(0.05)
            await resp.write(event)
        await resp.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        pass
    return resp


def _events(anthropic: bool, model: str, what: str) -> list[bytes]:
    def sse(name: str | None, data: Any) -> bytes:
        head = f"event: {name}\n".encode() if name else b""
        return head + b"data: " + orjson.dumps(data) + b"\n\n"

    words = [f"w{i} " for i in range(20)]
    if anthropic:
        if what == "errorfirst":
            return [sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                             "message": "Overloaded"}})]
        out = [sse("message_start", {"type": "message_start", "message": {
            "id": "msg_soak", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            sse("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})]
        out += [sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": w}})
                for w in words]
        out += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
                sse("message_delta", {"type": "message_delta", "delta": {
                    "stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 20}}),
                sse("message_stop", {"type": "message_stop"})]
        return out
    if what == "errorfirst":
        return [sse(None, {"error": {"message": "Overloaded", "type": "server_error"}})]
    base = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0,
            "model": model}
    out = [sse(None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                 "content": ""}}]})]
    out += [sse(None, {**base, "choices": [{"index": 0, "delta": {"content": w}}]})
            for w in words]
    out += [sse(None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            sse(None, {**base, "choices": [], "usage": {"prompt_tokens": 12,
                                                        "completion_tokens": 20,
                                                        "total_tokens": 32}}),
            b"data: [DONE]\n\n"]
    return out


def run_upstream(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _answer)
    app.router.add_post("/v1/messages", _answer)
    app.router.add_get("/health", lambda r: web.json_response({"ok": True}))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                handler_cancellation=True)


# ------------------------------------------------------------------ the clients

SCENARIOS: list[tuple[str, int]] = [
    ("plain", 22), ("stream", 18), ("translated", 10), ("fallback", 6),
    ("leave_mid_stream", 8), ("leave_before_first_byte", 5), ("reset", 4),
    ("error_first", 4), ("stall", 2), ("slowloris", 3), ("big_head", 2), ("bad_json", 3),
    ("deep_json", 2), ("no_key", 3),
]


class Clients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.outcomes: Counter[str] = Counter()
        self.api_calls = 0  # requests that reach an API handler: each must be in the ledger
        self.names = [s for s, _ in SCENARIOS]
        self.weights = [w for _, w in SCENARIOS]

    async def worker(self, session: aiohttp.ClientSession, until: float) -> None:
        rng = random.Random()
        while time.monotonic() < until:
            scenario = rng.choices(self.names, self.weights)[0]
            try:
                outcome = await getattr(self, scenario)(session)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                outcome = f"client error {type(exc).__name__}"
            self.outcomes[f"{scenario}: {outcome}"] += 1

    def _body(self, model: str, word: str, stream: bool) -> dict[str, Any]:
        return {"model": model, "max_tokens": 64, "stream": stream,
                "messages": [{"role": "user", "content": f"say {word}"}]}

    async def _post(self, session: aiohttp.ClientSession, family: str, body: dict[str, Any],
                    read: str = "all") -> str:
        self.api_calls += 1
        path = "/v1/messages" if family == "anthropic" else "/v1/chat/completions"
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"} if family == "anthropic" \
            else {"authorization": f"Bearer {KEY}"}
        async with session.post(self.base + path, json=body, headers=headers) as resp:
            if read == "some":
                await resp.content.read(200)
                resp.close()
                return f"{resp.status} left"
            data = await resp.read()
            if resp.status == 200 and body.get("stream"):
                failed = b"event: error" in data or b'"error"' in data
                return "200 + error event" if failed else "200"
            return str(resp.status)

    async def plain(self, s: aiohttp.ClientSession) -> str:
        family = random.choice(["openai", "anthropic"])
        return await self._post(s, family, self._body(f"{family}-direct", "ok", False))

    async def stream(self, s: aiohttp.ClientSession) -> str:
        family = random.choice(["openai", "anthropic"])
        return await self._post(s, family, self._body(f"{family}-direct", "ok", True))

    async def translated(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "openai", self._body("anthropic-direct", "ok",
                                                         random.random() < 0.5))

    async def fallback(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "anthropic", self._body("sturdy", "overload",
                                                            random.random() < 0.5))

    async def leave_mid_stream(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "anthropic", self._body("anthropic-direct", "slow", True),
                                read="some")

    async def leave_before_first_byte(self, s: aiohttp.ClientSession) -> str:
        self.api_calls += 1
        body = orjson.dumps(self._body("openai-direct", "stall", False))
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                     + KEY.encode() + b"\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        return "left"

    async def reset(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "openai", self._body("openai-direct", "reset", True))

    async def error_first(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "anthropic", self._body("anthropic-direct", "errorfirst", True))

    async def stall(self, s: aiohttp.ClientSession) -> str:
        return await self._post(s, "anthropic", self._body("anthropic-direct", "stall", True))

    async def slowloris(self, s: aiohttp.ClientSession) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-slow: ")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data.split(b" ", 2)[1].decode() if data else "closed"

    async def big_head(self, s: aiohttp.ClientSession) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000
                         + b"\r\n\r\n")
            await writer.drain()
        except OSError:
            pass
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data.split(b" ", 2)[1].decode() if data else "closed"

    async def bad_json(self, s: aiohttp.ClientSession) -> str:
        self.api_calls += 1
        async with s.post(self.base + "/v1/chat/completions", data=b"{nope",
                          headers={"authorization": f"Bearer {KEY}"}) as resp:
            await resp.read()
            return str(resp.status)

    async def deep_json(self, s: aiohttp.ClientSession) -> str:
        self.api_calls += 1
        deep = b'{"model": "openai-direct", "messages": ' + b"[" * 500 + b"]" * 500 + b"}"
        async with s.post(self.base + "/v1/chat/completions", data=deep,
                          headers={"authorization": f"Bearer {KEY}"}) as resp:
            await resp.read()
            return str(resp.status)

    async def no_key(self, s: aiohttp.ClientSession) -> str:
        self.api_calls += 1
        async with s.post(self.base + "/v1/messages", json={"model": "x"}) as resp:
            await resp.read()
            return str(resp.status)


# ------------------------------------------------------------------ the run


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def meridian_config(workdir: Path, port: int, up: str) -> Path:
    config = {
        "server": {
            "listen": [f"127.0.0.1:{port}"], "master_key": KEY, "request_timeout_s": 10,
            "shutdown_grace_s": 5,
            "http": {"header_timeout_s": 2, "body_timeout_s": 2, "max_in_flight": 256},
        },
        "storage": {"path": str(workdir / "soak.db")},
        "router": {"retries": 1, "retry_budget_s": 2, "cooldown": {"failures": 1000}},
        "providers": {
            "oai": {"type": "openai", "api_key": "dummy", "base_url": up + "/v1",
                    "timeouts": {"idle_s": 2}},
            "ant": {"type": "anthropic", "api_key": "dummy", "base_url": up,
                    "timeouts": {"idle_s": 2}},
        },
        "models": {
            "openai-direct": {"provider": "oai", "model": "gpt-4o-mini"},
            "anthropic-direct": {"provider": "ant", "model": "claude-haiku-4-5"},
            "sturdy": [{"provider": "ant", "model": "claude-haiku-4-5"},
                       {"provider": "oai", "model": "gpt-4o-mini"}],
        },
    }  # fmt: skip
    path = workdir / "soak.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def drive(port: int, pid: int, minutes: float, clients: int) -> dict[str, Any]:
    c = Clients(port)
    until = time.monotonic() + minutes * 60
    samples: list[tuple[float, float, int, int]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        while time.monotonic() < until:
            samples.append((time.monotonic() - t0, rss_mb(pid), fds(pid), threads(pid)))
            await asyncio.sleep(5)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(sample(), *(c.worker(session, until) for _ in range(clients)))
    await asyncio.sleep(6)  # head and body deadlines pass; the ledger flushes
    samples.append((time.monotonic() - t0, rss_mb(pid), fds(pid), threads(pid)))
    return {"samples": samples, "outcomes": c.outcomes, "api_calls": c.api_calls}


def report(result: dict[str, Any], ledger_rows: int, minutes: float, clients: int) -> str:
    samples = result["samples"]
    lines = [f"Soak: {minutes:g} min, {clients} clients, {sum(result['outcomes'].values()):,} "
             "operations.", "", "| minute | RSS MB (mean) | open fds (max) | threads (max) |",
             "|---|---|---|---|"]
    by_minute: dict[int, list[tuple[float, float, int, int]]] = {}
    for s in samples[:-1]:
        by_minute.setdefault(int(s[0] // 60), []).append(s)
    for minute, rows in sorted(by_minute.items()):
        lines.append(f"| {minute + 1} | {sum(r[1] for r in rows) / len(rows):.1f} | "
                     f"{max(r[2] for r in rows)} | {max(r[3] for r in rows)} |")
    end = samples[-1]
    lines.append(f"| after the load | {end[1]:.1f} | {end[2]} | {end[3]} |")
    minutes_seen = sorted(by_minute)
    if len(minutes_seen) >= 3:
        first = by_minute[minutes_seen[1]]
        last = by_minute[minutes_seen[-1]]
        growth = (sum(r[1] for r in last) / len(last)) / (sum(r[1] for r in first) / len(first))
        lines += ["", f"RSS, last minute ÷ second minute: {growth:.3f}; open fds after the load: "
                  f"{end[2]} (at the start {samples[0][2]})."]
    exact = "✅" if ledger_rows == result["api_calls"] else "❌"
    lines += ["", f"Ledger: {ledger_rows:,} call rows for {result['api_calls']:,} API requests "
              f"that reached a handler {exact}.", "", "| scenario: outcome | count |",
              "|---|---|"]
    for name, n in sorted(result["outcomes"].items()):
        lines.append(f"| {name} | {n:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.upstream:
        run_upstream(args.upstream)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="meridian-soak-"))
    upstream = Server("faulty upstream",
                      lambda port: [sys.executable, __file__, "--upstream", str(port)],
                      "/health", workdir / "upstream.log")
    upstream.start()
    def launch(port: int) -> list[str]:
        config = meridian_config(workdir, port, upstream.base)
        return [*targets.meridian_command(None), "serve", "--config", str(config)]

    meridian = Server("meridian", launch, "/health", workdir / "meridian.log")
    try:
        meridian.start()
        result = asyncio.run(drive(meridian.port, meridian.pid, args.minutes, args.clients))
    finally:
        meridian.stop()
        upstream.stop()
    with sqlite3.connect(workdir / "soak.db") as conn:
        ledger_rows = conn.execute("SELECT COUNT(*) FROM usage WHERE final = 1").fetchone()[0]
    print(report(result, ledger_rows, args.minutes, args.clients))
    print(f"logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
