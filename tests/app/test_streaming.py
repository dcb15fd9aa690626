"""Stream framing that the SDKs hide: keep-alives, the [DONE] line, named events."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway, two_upstreams


@pytest.fixture
def slow_gateway(
    start_gateway: Any, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> Gateway:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["server"] = {"keepalive_s": 0.1}
    gw: Gateway = start_gateway(raw)
    return gw


def stream_raw(gw: Gateway, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"content-type": "application/json", **gw.headers(), **headers},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        return resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_openai_stream_keepalives_and_done(
    slow_gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    (fake_openai if alias == "gpt-test" else fake_anthropic).reply_slow(0.35, text="ab")
    raw = stream_raw(
        slow_gateway,
        "/v1/chat/completions",
        {"model": alias, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        {},
    )
    assert b"\n: keep-alive\n\n" in raw or raw.startswith(b": keep-alive\n\n")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b"data: {}" not in raw


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_anthropic_stream_pings_and_named_events(
    slow_gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, alias: str
) -> None:
    (fake_openai if alias == "gpt-test" else fake_anthropic).reply_slow(0.35, text="ab")
    raw = stream_raw(
        slow_gateway,
        "/v1/messages",
        {
            "model": alias,
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        {"anthropic-version": "2023-06-01"},
    )
    events = [e for e in raw.decode().split("\n\n") if e]
    names = [e.split("\n")[0] for e in events]
    assert all(n.startswith("event: ") for n in names), names
    for event in events:
        name, data = event.split("\n")[:2]
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "event: ping" in names
    real = [n for n in names if n != "event: ping"]
    assert real[0] == "event: message_start" and real[-1] == "event: message_stop"
