"""An instant fake LLM upstream for the benchmark: OpenAI and Anthropic on one port.

Speaks ``POST /v1/chat/completions`` (OpenAI), ``/v1/messages`` (Anthropic) and
``/v1/responses`` (OpenAI Responses), non-streaming and streaming (~20 text deltas, real
usage fields), ``/v1/embeddings``, plus ``GET /health`` and ``GET /_stats`` (requests
served, for the runner's sanity checks).

It must never be the bottleneck, so it is a bare `asyncio.Protocol` on uvloop with the
httptools parser (no framework, no per-request allocation beyond the body): responses are
rendered once per (shape, model, prompt size) and cached as bytes.

    python bench/fake_upstream.py --port 9100 [--delta-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

import httptools
import orjson

DELTAS = 20
WORDS = [f"word{i} " for i in range(DELTAS)]
CREATED = int(time.time())

_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%sContent-Length: %d\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n%sTransfer-Encoding: chunked\r\n\r\n"
)
_OAI_HDR = b"x-request-id: req_bench\r\nopenai-processing-ms: 1\r\n"
_ANT_HDR = b"request-id: req_bench\r\nanthropic-organization-id: bench\r\n"


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def openai_json(model: str, ptoks: int) -> bytes:
    return _dump({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED,
        "model": model, "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0, "logprobs": None, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
        }],
        "usage": {
            "prompt_tokens": ptoks, "completion_tokens": DELTAS, "total_tokens": ptoks + DELTAS,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    })


def openai_events(model: str, ptoks: int, usage: bool) -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_bench"}
    extra = {"usage": None} if usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + _dump({**base, "choices": [choice], **extra}) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": w}) for w in WORDS]
    events.append(chunk({}, "stop"))
    if usage:
        u = {"prompt_tokens": ptoks, "completion_tokens": DELTAS,
             "total_tokens": ptoks + DELTAS, "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
        events.append(b"data: " + _dump({**base, "choices": [], "usage": u}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_json(model: str, ptoks: int) -> bytes:
    return _dump({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(WORDS)}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": ptoks, "output_tokens": DELTAS,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })


def anthropic_events(model: str, ptoks: int) -> list[bytes]:
    def ev(kind: str, body: dict[str, Any]) -> bytes:
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), _dump({"type": kind, **body}))

    msg: dict[str, Any] = {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": ptoks, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    events = [ev("message_start", {"message": msg}),
              ev("content_block_start",
                 {"index": 0, "content_block": {"type": "text", "text": ""}}),
              ev("ping", {})]
    events += [ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
               for w in WORDS]
    events += [ev("content_block_stop", {"index": 0}),
               ev("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                    "usage": {"output_tokens": DELTAS}}),
               ev("message_stop", {})]
    return events


def responses_json(model: str, ptoks: int) -> bytes:
    return _dump(_response(model, "completed", ptoks))


def _response(model: str, status: str, ptoks: int | None) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": "resp_bench", "object": "response", "created_at": CREATED, "status": status,
        "model": model, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "parallel_tool_calls": True, "previous_response_id": None,
        "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "metadata": {},
        "output": [{
            "type": "message", "id": "msg_bench", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "".join(WORDS), "annotations": []}],
        }] if done else [],
        "usage": {
            "input_tokens": ptoks, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": DELTAS, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": (ptoks or 0) + DELTAS,
        } if done else None,
    }


def responses_events(model: str, ptoks: int) -> list[bytes]:
    seq = iter(range(1000))

    def ev(kind: str, body: dict[str, Any]) -> bytes:
        data = _dump({"type": kind, "sequence_number": next(seq), **body})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)

    item = {"type": "message", "id": "msg_bench", "status": "in_progress", "role": "assistant",
            "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    events = [ev("response.created", {"response": _response(model, "in_progress", None)}),
              ev("response.output_item.added", {"output_index": 0, "item": item}),
              ev("response.content_part.added", {**where, "part": part})]
    events += [ev("response.output_text.delta", {**where, "delta": w}) for w in WORDS]
    text = "".join(WORDS)
    events += [ev("response.output_text.done", {**where, "text": text}),
               ev("response.content_part.done", {**where, "part": {**part, "text": text}}),
               ev("response.output_item.done", {"output_index": 0, "item": {
                   **item, "status": "completed", "content": [{**part, "text": text}]}}),
               ev("response.completed", {"response": _response(model, "completed", ptoks)})]
    return events


def embeddings_json(model: str, ptoks: int) -> bytes:
    return _dump({"object": "list", "model": model,
                  "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * 16}],
                  "usage": {"prompt_tokens": ptoks, "total_tokens": ptoks}})


_KINDS = {  # path -> kind
    "/v1/chat/completions": "oai",
    "/v1/messages": "ant",
    "/v1/responses": "resp",
    "/v1/embeddings": "emb",
}


class Upstream:
    """Renders and caches responses; counts requests. Shared by every connection."""

    def __init__(self, delta_delay: float) -> None:
        self.delta_delay = delta_delay
        self.served = 0
        self._cache: dict[tuple[str, str, int, bool], tuple[bytes, list[bytes]]] = {}

    def render(self, path: str, body: bytes) -> tuple[bytes, list[bytes]] | None:
        """(head, body pieces) for a POST, or None for an unknown path."""
        kind = _KINDS.get(path)
        if kind is None:
            return None
        req = orjson.loads(body) if body else {}
        model = str(req.get("model", "unknown"))
        stream = bool(req.get("stream"))
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        key = (kind + ("s" if stream else ""), model, len(body) // 4 + 1, usage)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._build(kind, stream, model, key[2], usage)
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = hit
        self.served += 1
        return hit

    @staticmethod
    def _build(kind: str, stream: bool, model: str, ptoks: int,
               usage: bool) -> tuple[bytes, list[bytes]]:
        hdr = _ANT_HDR if kind == "ant" else _OAI_HDR
        if not stream or kind == "emb":
            render = {"oai": openai_json, "ant": anthropic_json, "resp": responses_json,
                      "emb": embeddings_json}[kind]
            data = render(model, ptoks)
            return _JSON_HEAD % (hdr, len(data)), [data]
        if kind == "oai":
            events = openai_events(model, ptoks, usage)
        elif kind == "resp":
            events = responses_events(model, ptoks)
        else:
            events = anthropic_events(model, ptoks)
        return _SSE_HEAD % hdr, [*(_chunk(e) for e in events), b"0\r\n\r\n"]


def _simple(status: str, body: bytes, close: bool = False) -> bytes:
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status.encode(), conn, len(body), body)


class HttpProtocol(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.up = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_simple("400 Bad Request", b'{"error":"bad request"}', close=True))
            self._close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        if method == b"GET":
            if path == "/health":
                self._write(_simple("200 OK", b'{"status":"ok"}'))
            elif path == "/_stats":
                self._write(_simple("200 OK", _dump({"served": self.up.served})))
            else:
                self._write(_simple("404 Not Found", b'{"error":"not found"}'))
        else:
            try:
                out = self.up.render(path, b"".join(self.body))
            except (orjson.JSONDecodeError, AttributeError):
                out = None
                self._write(_simple("400 Bad Request", b'{"error":"bad json"}'))
            else:
                if out is None:
                    self._write(_simple("404 Not Found", b'{"error":"not found"}'))
                elif self.up.delta_delay and len(out[1]) > 1:
                    asyncio.get_running_loop().create_task(self._slow(out, keep))
                    return
                else:
                    self._write(out[0] + b"".join(out[1]))
        if not keep:
            self._close()

    async def _slow(self, out: tuple[bytes, list[bytes]], keep: bool) -> None:
        self._write(out[0])
        for piece in out[1]:
            await asyncio.sleep(self.up.delta_delay)
            self._write(piece)
        if not keep:
            self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, delta_delay: float) -> None:
    upstream = Upstream(delta_delay)
    factory: Callable[[], HttpProtocol] = lambda: HttpProtocol(upstream)  # noqa: E731
    server = await asyncio.get_running_loop().create_server(factory, host, port, backlog=4096)
    print(f"fake upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--delta-delay-ms", type=float, default=0.0,
                    help="pause between streamed events (default 0: instant)")
    args = ap.parse_args(argv)
    try:
        import uvloop
        runner: Callable[..., None] = uvloop.run
    except ImportError:  # plain asyncio still works, just slower
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.delta_delay_ms / 1000))


if __name__ == "__main__":
    main()
