"""A client that leaves stops its upstream call, in every phase and on both paths, and the
ledger says 499 with the tokens actually produced. What the fake upstream saw is the proof:
its handler cancelled, or its writes failing, rather than the answer running its course."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI, FakeUpstream
from harness import Gateway, two_upstreams

# (client path, alias, which fake serves it, the path meridian takes)
CASES = [
    ("/v1/chat/completions", "gpt-test", "openai", "relay"),
    ("/v1/messages", "claude-test", "anthropic", "relay"),
    ("/v1/chat/completions", "claude-test", "anthropic", "translate"),
    ("/v1/messages", "gpt-test", "openai", "translate"),
]


@pytest.fixture
def gateway(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Any:
    with Gateway.start(two_upstreams(fake_openai.url, fake_anthropic.url), tmp_path) as gw:
        yield gw


def fake_for(name: str, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> FakeUpstream:
    return fake_openai if name == "openai" else fake_anthropic


def send(gw: Gateway, path: str, alias: str, *, stream: bool) -> socket.socket:
    body = json.dumps(
        {"model": alias, "max_tokens": 4000, "stream": stream,
         "messages": [{"role": "user", "content": "write a lot"}]}
    ).encode()  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    # A small receive buffer: the client reads slowly, the upstream is fast.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {gw.key}\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode() + body
    )
    return sock


def rows(gw: Gateway, n: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    store = gw.built.runtime.store
    assert store is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [dict(r) for r in store.query("SELECT * FROM usage ORDER BY id")]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {n} usage rows")


@pytest.mark.parametrize(("path", "alias", "upstream", "way"), CASES)
def test_a_slow_reader_that_leaves_mid_stream_stops_a_fast_upstream(
    gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    path: str, alias: str, upstream: str, way: str,
) -> None:  # fmt: skip
    """The case that was read to its end: ~20,000 tokens sent as fast as the upstream can,
    to a client that reads a little and leaves."""
    fake = fake_for(upstream, fake_openai, fake_anthropic)
    fake.reply_text("word " * 16_000, piece_size=4, output_tokens=20_000)
    sock = send(gateway, path, alias, stream=True)
    got = b""
    while len(got) < 20_000:
        got += sock.recv(4096)
    assert got.startswith(b"HTTP/1.1 200")
    sock.close()
    assert fake.last.ended.wait(10), "the upstream call was never closed"
    assert fake.last.outcome in ("cancelled", "disconnected")
    total = len(fake.last.reply.text or "") // 4  # type: ignore[union-attr]
    assert fake.last.events_sent < total  # it did not run its course
    row = rows(gateway)[0]
    assert (row["status"], row["error_type"], row["path"]) == (499, "client_disconnected", way)
    # What was produced before the client left is counted (the stream's own usage report
    # never came): at least the text the client was sent.
    assert row["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "alias", "upstream", "way"), CASES)
def test_a_client_that_leaves_before_the_first_byte_stops_the_upstream(
    gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    path: str, alias: str, upstream: str, way: str, stream: bool,
) -> None:  # fmt: skip
    """The upstream takes its time to answer; the client gives up first. The upstream's
    handler must be cancelled (it sleeps 30 s before answering: it can only end early by
    being cancelled), and the call is a 499."""
    fake = fake_for(upstream, fake_openai, fake_anthropic)
    fake.reply_text("late", headers_delay_s=30)
    sock = send(gateway, path, alias, stream=stream)
    deadline = time.monotonic() + 10
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.requests, "the call never reached the upstream"
    sock.close()
    assert fake.last.ended.wait(10), "the upstream call was never closed"
    assert fake.last.outcome == "cancelled"
    row = rows(gateway)[0]
    assert (row["status"], row["error_type"]) == (499, "client_disconnected")
    assert row["stream"] == int(stream)


def test_a_client_that_leaves_while_the_first_event_is_late_stops_the_upstream(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    """Headers came, the first event has not: the commit point is still ahead."""
    fake_anthropic.reply_text("late", stall_at=0, stall_s=30)
    sock = send(gateway, "/v1/messages", "claude-test", stream=True)
    deadline = time.monotonic() + 10
    while not fake_anthropic.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the headers are in
    sock.close()
    assert fake_anthropic.last.ended.wait(10)
    assert fake_anthropic.last.events_sent == 0
    assert rows(gateway)[0]["status"] == 499
