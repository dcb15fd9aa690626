"""OpenAIProvider against a loopback fake OpenAI server: both paths, every failure mode."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from fakes import FakeOpenAI, ToolCall
from meridian import prepare
from meridian.config import OpenAIProviderConfig
from meridian.errors import (
    ApiError,
    InvalidRequest,
    MeridianError,
    Overloaded,
    RateLimited,
    Timeout,
)
from meridian.model import Collector, Message, Request, Response, TextBlock, ToolUseBlock
from meridian.providers.base import CallContext, Provider, RelayedBody, RelayedStream
from meridian.providers.openai import OpenAIProvider
from meridian.router import Route

CTX = CallContext(request_id="req-test")
LIMIT_S = 10  # every await on the network is bounded


def config(base_url: str, **kw: Any) -> OpenAIProviderConfig:
    return OpenAIProviderConfig.model_validate(
        {"type": "openai", "api_key": "sk-test", "base_url": base_url, **kw}
    )


@pytest.fixture
async def provider(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider("oai", config(fake_openai.url))
    await p.start()
    yield p
    await p.aclose()


def request(model: str = "gpt-4o-mini", **kw: Any) -> Request:
    return Request(model=model, messages=(Message("user", (TextBlock("hi"),)),), **kw)


async def collect(provider: Provider, req: Request, ctx: CallContext = CTX) -> Response:
    collector = Collector()
    async with asyncio.timeout(LIMIT_S):
        async for event in provider.stream(req, ctx):
            collector.feed(event)
    return collector.response()


async def drain(relay: RelayedBody | RelayedStream) -> bytes:
    assert isinstance(relay, RelayedStream)
    out = b""
    async with asyncio.timeout(LIMIT_S):
        async for chunk in relay.chunks:
            out += chunk
    return out


async def relay(
    provider: Provider, body: dict[str, Any], ctx: CallContext = CTX
) -> RelayedBody | RelayedStream:
    """The pass-through as the framework drives it: the body prepared for the deployment
    (`meridian.prepare`: model, output bound, the per-model rules), then relayed."""
    route = Route(str(body["model"]), provider.name, provider, str(body["model"]), 4096, 64_000)
    prepared = prepare.body("chat", body, route)
    async with asyncio.timeout(LIMIT_S):
        return await provider.relay("chat", prepared, ctx)


def chat(model: str = "gpt-4o-mini", **kw: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}


# ---------------------------------------------------------------------------- answers


async def test_is_a_provider(provider: OpenAIProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.capabilities.serves("chat")
    assert await provider.ready() == (True, "ok")


async def test_streamed_text(provider: OpenAIProvider, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_text("The kitchen light is on.", piece_size=3)
    response = await collect(provider, request(max_tokens=50))
    assert response.content == (TextBlock("The kitchen light is on."),)
    assert response.stop_reason == "end_turn"
    served = fake_openai.last.reply
    assert served is not None
    assert response.usage.input_tokens == served.input_tokens
    assert response.usage.output_tokens == served.output_tokens
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["max_tokens"] == 50


async def test_parallel_tool_calls_with_split_arguments(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    weather = ToolCall("get_weather", {"city": "Paris", "units": "metric"}, id="call_a")
    light = ToolCall("set_light", {"room": "kitchen", "on": True}, id="call_b")
    fake_openai.reply_tool_calls(weather, light, piece_size=2)
    response = await collect(provider, request())
    assert response.stop_reason == "tool_use"
    assert response.content == (
        ToolUseBlock("call_a", "get_weather", {"city": "Paris", "units": "metric"}),
        ToolUseBlock("call_b", "set_light", {"room": "kitchen", "on": True}),
    )


async def test_relay_plain_body_untouched(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("hello there", cache_read_tokens=7)
    result = await relay(provider, chat())
    assert isinstance(result, RelayedBody)
    assert result.body == fake_openai.last.sent  # byte for byte
    assert result.content_type.startswith("application/json")
    assert result.headers["x-request-id"].startswith("req_fake")
    served = fake_openai.last.reply
    assert served is not None
    assert result.usage.input_tokens == served.input_tokens
    assert result.usage.cache_read_tokens == 7
    assert result.usage.output_tokens == served.output_tokens


async def test_relay_preserves_unknown_fields(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    body = chat(
        x_vendor_extension={"nested": [1, 2.5, "é", None]},
        metadata={"conversation": "c-1"},
        logit_bias={"50256": -100},
        seed=42,
        store=False,
    )
    await relay(provider, body)
    received = fake_openai.last
    assert received.json == body
    assert received.body == orjson.dumps(body)


async def test_relay_stream_with_usage_asked_is_byte_for_byte(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("streamed words here", cache_read_tokens=3)
    result = await relay(provider, chat(stream=True, stream_options={"include_usage": True}))
    assert result.content_type.startswith("text/event-stream")
    before = result.first_token
    relayed = await drain(result)
    assert (before, result.first_token) == (False, True)
    assert relayed == fake_openai.last.sent
    served = fake_openai.last.reply
    assert served is not None
    assert result.usage.input_tokens == served.input_tokens
    assert result.usage.output_tokens == served.output_tokens
    assert result.usage.cache_read_tokens == 3


async def test_relay_stream_asks_for_usage_and_hides_it(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_text("no usage asked")
    result = await relay(provider, chat(stream=True))
    relayed = await drain(result)
    # Upstream was asked for usage...
    assert fake_openai.last.json["stream_options"] == {"include_usage": True}
    served = fake_openai.last.reply
    assert served is not None
    assert result.usage.output_tokens == served.output_tokens
    assert result.usage.input_tokens == served.input_tokens
    # ...and the usage-only chunk was the one thing not relayed.
    upstream_events = fake_openai.last.sent.split(b"\n\n")
    usage_events = [e for e in upstream_events if b'"choices":[]' in e]
    assert len(usage_events) == 1
    assert relayed.split(b"\n\n") == [e for e in upstream_events if e not in usage_events]
    assert relayed.endswith(b"data: [DONE]\n\n")


# ---------------------------------------------------------------------------- per-model rules


@pytest.mark.parametrize("model", ["o3-mini", "o3-mini-2025-01-31", "gpt-5"])
async def test_reasoning_models_get_max_completion_tokens(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, model: str
) -> None:
    await collect(provider, request(model, max_tokens=100, temperature=0.5))
    sent = fake_openai.last.json
    assert sent["model"] == model
    assert sent["max_completion_tokens"] == 100
    assert "max_tokens" not in sent
    assert "temperature" not in sent

    await relay(provider, chat(model, max_tokens=77, temperature=0.2, top_p=0.9))
    sent = fake_openai.last.json
    assert sent["max_completion_tokens"] == 77
    assert not {"max_tokens", "temperature", "top_p"} & sent.keys()


async def test_gemini_model_name_verbatim(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider("gemini", config(fake_openai.origin + "/v1beta/openai"))
    await provider.start()
    try:
        fake_openai.reply_text("from gemini")
        response = await collect(provider, request("gemini-2.5-flash", max_tokens=20))
        assert response.content == (TextBlock("from gemini"),)
        await relay(provider, chat("gemini-2.5-pro", max_tokens=10))
    finally:
        await provider.aclose()
    first, second = fake_openai.requests
    assert first.path == second.path == "/v1beta/openai/chat/completions"
    assert first.json["model"] == "gemini-2.5-flash"
    assert first.json["max_tokens"] == 20
    assert second.json["model"] == "gemini-2.5-pro"


async def test_no_api_key_no_auth_header_and_configured_headers(fake_openai: FakeOpenAI) -> None:
    cfg = OpenAIProviderConfig.model_validate(
        {"type": "openai", "base_url": fake_openai.url, "headers": {"X-Title": "meridian"}}
    )
    provider = OpenAIProvider("ollama", cfg)
    await provider.start()
    try:
        await relay(provider, chat("llama3.2"))
    finally:
        await provider.aclose()
        await provider.aclose()  # safe twice
    assert "authorization" not in fake_openai.last.headers
    assert fake_openai.last.headers["x-title"] == "meridian"


# ---------------------------------------------------------------------------- errors


ErrorCase = tuple[str, dict[str, Any], type[MeridianError], dict[str, Any]]
ERRORS: list[ErrorCase] = [
    (
        "rate limited",
        {"status": 429, "retry_after": 3},
        RateLimited,
        {"status": 429, "retry_after": 3.0, "should_retry": None},
    ),
    (
        "rate limited, ms",
        {"status": 429, "retry_after_ms": 1500},
        RateLimited,
        {"status": 429, "retry_after": 1.5},
    ),
    (
        "quota",
        {
            "status": 429,
            "type": "insufficient_quota",
            "code": "insufficient_quota",
            "message": "You exceeded your current quota",
        },
        RateLimited,
        {"status": 429, "should_retry": False, "code": "insufficient_quota"},
    ),
    ("bad key", {"status": 401}, ApiError, {"status": 502, "should_retry": False}),
    ("server error", {"status": 500}, ApiError, {"status": 500}),
    ("overloaded", {"status": 503, "retry_after": 1}, Overloaded, {"retry_after": 1.0}),
    (
        "bad request",
        {"status": 400, "message": "Unsupported parameter: 'foo'"},
        InvalidRequest,
        {"status": 400},
    ),
    (
        "upstream says do not retry",
        {"status": 500, "should_retry": False},
        ApiError,
        {"status": 500, "should_retry": False},
    ),
]


def _script_error(fake: FakeOpenAI, spec: dict[str, Any]) -> None:
    spec = dict(spec)
    fake.reply_error(spec.pop("status"), spec.pop("message", None), **spec)


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
async def test_error_before_first_byte(
    provider: OpenAIProvider, fake_openai: FakeOpenAI, case: ErrorCase
) -> None:
    _, spec, cls, fields = case
    _script_error(fake_openai, spec)
    with pytest.raises(cls) as streamed:
        await collect(provider, request())
    _script_error(fake_openai, spec)
    with pytest.raises(cls) as relayed:
        await relay(provider, chat())
    for err in (streamed.value, relayed.value):
        assert type(err) is cls
        for key, value in fields.items():
            assert getattr(err, key) == value, (key, err)
        assert err.message.startswith("oai: ")
        if "message" in spec:
            assert spec["message"] in err.message


async def test_error_mid_stream(provider: OpenAIProvider, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_stream_error(after=3, message="The server had an error mid-way")
    seen = []
    with pytest.raises(MeridianError) as exc:
        async with asyncio.timeout(LIMIT_S):
            async for event in provider.stream(request(), CTX):
                seen.append(event)
    assert seen  # the stream had started
    assert "mid-way" in exc.value.message

    fake_openai.reply_stream_error(after=3, message="The server had an error mid-way")
    result = await relay(provider, chat(stream=True))
    chunks: list[bytes] = []
    assert isinstance(result, RelayedStream)
    with pytest.raises(MeridianError) as exc:
        async with asyncio.timeout(LIMIT_S):
            async for chunk in result.chunks:
                chunks.append(chunk)
    assert "mid-way" in exc.value.message
    # Everything before the error was relayed; the error event itself was not.
    relayed = b"".join(chunks)
    assert relayed and b"mid-way" not in relayed
    assert fake_openai.last.sent.startswith(relayed)


async def test_truncated_stream(provider: OpenAIProvider, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_truncated(after=4)
    with pytest.raises(ApiError) as exc:
        await collect(provider, request())
    assert exc.value.status == 502

    fake_openai.reply_truncated(after=4)
    result = await relay(provider, chat(stream=True))
    with pytest.raises(ApiError) as exc:
        await drain(result)
    assert exc.value.status == 502
    assert "oai" in exc.value.message


async def test_connection_reset_mid_stream(
    provider: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply_reset(after=2)
    with pytest.raises(ApiError) as exc:
        await collect(provider, request())
    assert exc.value.status == 502
    assert "mid-stream" in exc.value.message
    assert isinstance(exc.value.__cause__, aiohttp.ClientError)

    fake_openai.reply_reset(after=2)
    result = await relay(provider, chat(stream=True))
    with pytest.raises(ApiError) as exc:
        await drain(result)
    assert exc.value.status == 502
    assert isinstance(exc.value.__cause__, aiohttp.ClientError)


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there now.
    base_url = f"http://127.0.0.1:{port}/v1"
    provider = OpenAIProvider("local-vllm", config(base_url))
    await provider.start()
    try:
        with pytest.raises(ApiError) as exc:
            await collect(provider, request())
        with pytest.raises(ApiError) as relayed:
            await relay(provider, chat())
    finally:
        await provider.aclose()
    for err in (exc.value, relayed.value):
        assert err.status == 502
        assert "local-vllm" in err.message and "connection refused" in err.message
        # The address (a base_url may hold credentials) is for the log, never the caller.
        assert str(port) not in err.message and "127.0.0.1" not in err.message
        assert err.detail is not None and base_url in err.detail
        assert err.upstream
        assert isinstance(err.__cause__, aiohttp.ClientConnectorError)


async def test_connect_timeout_is_connect_s() -> None:
    """A host that never completes the handshake: a listener whose backlog is full."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the accept queue; the kernel then drops further SYNs, so connects hang.
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        conf = OpenAIProviderConfig.model_validate(
            {
                "type": "openai",
                "base_url": f"http://user:hunter2@127.0.0.1:{port}/v1",
                "timeouts": {"connect_s": 0.3},
            }
        )
        provider = OpenAIProvider("slowhost", conf)
        await provider.start()
        try:
            with pytest.raises(Timeout) as exc:
                await relay(provider, chat())
        finally:
            await provider.aclose()
            for s in fillers:
                s.close()
    assert "timeouts.connect_s" in exc.value.message and "hunter2" not in exc.value.message
    assert exc.value.detail is not None and "hunter2" not in exc.value.detail
    assert "***@127.0.0.1" in exc.value.detail


async def test_abandoned_stream_frees_its_connection(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider("oai", config(fake_openai.url, max_connections=1))
    await provider.start()
    try:
        # A stream that would take 20 s to finish on its own.
        fake_openai.reply_slow(0.5, text="word " * 16)
        fake_openai.reply_text("next")
        async with asyncio.timeout(5):
            stream = provider.stream(request(), CTX)
            await anext(stream)
            await stream.aclose()
            # With a pool of one, this only completes if the first connection was let go.
            response = await collect(provider, request())
        assert response.content == (TextBlock("next"),)
    finally:
        await provider.aclose()
