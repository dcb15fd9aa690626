"""What the Claude CLI sends upstream beyond the client's own request, in tokens.

    .venv/bin/python bench/claude_tokens.py [--update-docs]

Each case is a client request sent through the provider (the real bundled CLI) to a
recording loopback upstream. Its tokens are compared with the same request sent to the API
directly (the Anthropic body meridian would send), both estimated the same way
(`meridian.estimate`: four characters a token, tools and blocks as their JSON): the
difference is what the CLI adds. Prints a markdown table; ``--update-docs`` puts it into
docs/claude-code.md between the token markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from meridian.config import ClaudeCodeProviderConfig  # noqa: E402
from meridian.estimate import input_tokens  # noqa: E402
from meridian.model import (  # noqa: E402
    Message,
    Request,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.providers.base import CallContext  # noqa: E402
from meridian.providers.claude import ClaudeCodeProvider  # noqa: E402
from meridian.wire.anthropic_render import render_request  # noqa: E402

DOC = ROOT / "docs" / "claude-code.md"
BEGIN, END = "<!-- tokens:begin -->", "<!-- tokens:end -->"
SYSTEM = (
    "You are a voice assistant for Home Assistant. Answer questions about the world "
    "truthfully. Answer in plain text. Keep it simple and to the point.\n"
    + "".join(f"- light.room_{i} (Room {i} light): on, brightness 40%\n" for i in range(40))
)
AREA = {"type": "object", "properties": {"area": {"type": "string"}}, "required": ["area"]}
TOOLS = tuple(
    Tool(name, f"{name.removeprefix('Hass')} a device, an area or a domain", AREA)
    for name in ("HassTurnOn", "HassTurnOff", "HassLightSet", "HassGetState")
)
ASK = Message("user", (TextBlock("Turn on the kitchen light."),))
CALL = Message("assistant", (ToolUseBlock("toolu_01", "HassTurnOn", {"area": "kitchen"}),))
RESULT = Message("user", (ToolResultBlock("toolu_01", (TextBlock('{"success": true}'),)),))


class Recorder:
    """A loopback Anthropic upstream that keeps every request body; it answers a first
    turn with tools by calling one, anything else with a word."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def __aenter__(self) -> Recorder:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        last = body["messages"][-1]["content"]
        call = bool(body.get("tools")) and not any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last
        )
        block = (
            {"type": "tool_use", "id": "toolu_01", "name": "HassTurnOn", "input": {}}
            if call
            else {"type": "text", "text": ""}
        )
        delta = (
            {"type": "input_json_delta", "partial_json": '{"area": "kitchen"}'}
            if call
            else {"type": "text_delta", "text": "Done."}
        )
        message = {"id": f"msg_{len(self.bodies)}", "type": "message", "role": "assistant",
                   "model": body["model"], "content": [], "stop_reason": None,
                   "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
        events = [
            ("message_start", {"message": message}),
            ("content_block_start", {"index": 0, "content_block": block}),
            ("content_block_delta", {"index": 0, "delta": delta}),
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": "tool_use" if call else "end_turn"},
                               "usage": {"output_tokens": 5}}),
            ("message_stop", {}),
        ]  # fmt: skip
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for kind, data in events:
            payload = json.dumps({"type": kind, **data})
            await resp.write(f"event: {kind}\ndata: {payload}\n\n".encode())
        return resp


Case = Callable[[ClaudeCodeProvider], Awaitable[Request]]


async def _send(provider: ClaudeCodeProvider, request: Request, caller: str | None) -> None:
    async for _ in provider.stream(request, CallContext("tokens", caller=caller)):
        pass


def cases(model: str) -> list[tuple[str, Case]]:
    def one(request: Request, caller: str | None = None, warm: Request | None = None) -> Case:
        async def run(provider: ClaudeCodeProvider) -> Request:
            if warm is not None:
                await _send(provider, warm, caller)
            await _send(provider, request, caller)
            return request

        return run

    first = Request(model=model, messages=(ASK,), system=(TextBlock(SYSTEM),), tools=TOOLS)
    loop = Request(model=model, messages=(ASK, CALL, RESULT), system=first.system, tools=TOOLS)
    chat = tuple(
        Message(role, (TextBlock(f"{role} turn {i}: " + "some words here " * 10),))
        for i in range(10)
        for role in ("user", "assistant")
    )[:-1]
    return [
        ("one word, no system prompt", one(Request(model=model, messages=(
            Message("user", (TextBlock("hi"),)),)))),
        ("Home Assistant: system prompt (~2.4k chars) + 4 tools", one(first)),
        ("its tool result, on a fresh process", one(loop)),
        ("its tool result, on the live process", one(loop, "key:1", warm=first)),
        ("a 19-message chat, on a fresh process", one(Request(model=model, messages=chat))),
    ]  # fmt: skip


async def measure() -> list[str]:
    rows = []
    async with Recorder() as upstream:
        with tempfile.TemporaryDirectory(prefix="meridian-tokens-") as tmp:
            config = ClaudeCodeProviderConfig(
                type="claude-code", config_dir=Path(tmp) / "claude",
                env={"ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "dummy"})  # fmt: skip
            for model in ("claude-sonnet-4-6", "sonnet"):
                for name, case in cases(model):
                    provider = ClaudeCodeProvider("claude", config)
                    await provider.start()
                    try:
                        request = await case(provider)
                    finally:
                        await provider.aclose()
                    sent = upstream.bodies[-1]
                    own = input_tokens(render_request(request))
                    cli = input_tokens(sent)
                    rows.append(f"| {name} | `{model}` → `{sent['model']}` | {own:,} | {cli:,} | "
                                f"+{cli - own:,} | {cli / own:.2f}x |")  # fmt: skip
    return rows


def table(rows: list[str]) -> str:
    return "\n".join([
        "| request | model | client's own tokens | sent upstream | added | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    text = table(asyncio.run(measure()))
    print(text)
    if args.update_docs:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


if __name__ == "__main__":
    main()
