"""What a peer without a key can cost: bounded, before authentication, over raw sockets
(the SDKs would never send most of this). Limits are set small here so that the tests are
quick; the defaults are the same mechanism with larger numbers."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway, two_upstreams

LIMITS = {
    "max_connections": 64,
    "max_in_flight": 8,
    "max_header_bytes": 8192,
    "max_headers": 20,
    "header_timeout_s": 0.6,
    "body_timeout_s": 0.6,
}


@pytest.fixture
def guarded(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Gateway]:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["server"] = {"http": LIMITS}
    with Gateway.start(raw, tmp_path) as gw:
        yield gw


def connect(gw: Gateway, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or resets it)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_and_json(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(check: Callable[[], bool], timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_huge_header_is_431_and_never_buffered(guarded: Gateway) -> None:
    """The attack that took RSS from 101 to 310 MB: one 200 MB header value. The server
    stops at the limit, answers 431 in an envelope both SDKs read, and closes."""
    before = rss_kb()
    sock = connect(guarded)
    sent = 0

    def flood() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: ")
            chunk = b"a" * 65536
            while sent < 200 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: what it should do

    writer = threading.Thread(target=flood)
    writer.start()
    raw = read_all(sock)
    writer.join(30)
    sock.close()
    status, headers, body = status_and_json(raw)
    assert status == 431 and headers["connection"] == "close"
    assert body["type"] == "error" and body["error"]["type"] == "request_too_large"
    assert "8192 bytes (server.http.max_header_bytes)" in body["error"]["message"]
    assert sent < 50 * 1024 * 1024  # refused long before the 200 MB were through
    assert rss_kb() - before < 40 * 1024  # and nothing like it was kept


def test_too_many_headers_is_431(guarded: Gateway) -> None:
    sock = connect(guarded)
    lines = "".join(f"x-h{i}: v\r\n" for i in range(30))
    sock.sendall(f"GET /health HTTP/1.1\r\nhost: x\r\n{lines}\r\n".encode())
    status, _, body = status_and_json(read_all(sock))
    sock.close()
    assert status == 431 and "the limit is 20 (server.http.max_headers)" in body["error"]["message"]


def test_a_head_that_never_ends_is_408(guarded: Gateway) -> None:
    sock = connect(guarded)
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
    status, headers, body = status_and_json(read_all(sock))  # waits for the server to close
    sock.close()
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["type"] == "timeout_error"
    assert "headers did not arrive within 0.6 s" in body["error"]["message"]


def test_connections_that_say_nothing_are_closed_and_fds_come_back(guarded: Gateway) -> None:
    """Hundreds of connections that never send a byte (or half a head) are all closed after
    the head's deadline; descriptors and memory return to where they were."""
    baseline = open_fds()
    socks = [connect(guarded) for _ in range(40)]
    for i, sock in enumerate(socks):
        if i % 2:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
    for sock in socks:
        sock.settimeout(10)
        raw = read_all(sock)  # returns when the server closes it
        if raw:
            assert raw.startswith(b"HTTP/1.1 408")
    for sock in socks:
        sock.close()
    assert wait_until(lambda: open_fds() <= baseline + 2)


def test_a_body_that_never_ends_is_408_and_recorded(guarded: Gateway) -> None:
    sock = connect(guarded)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {guarded.key}"
        "\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\": ".encode()
    )
    status, _, body = status_and_json(read_all(sock))
    sock.close()
    assert status == 408 and "body did not arrive within 0.6 s" in body["error"]["message"]
    row = last_usage_row(guarded)
    assert (row["status"], row["error_type"]) == (408, "request_timeout")


def test_a_client_that_leaves_during_upload_is_499(guarded: Gateway) -> None:
    sock = connect(guarded)
    sock.sendall(
        f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {guarded.key}\r\n"
        "content-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"model\": ".encode()
    )
    time.sleep(0.1)
    sock.close()
    row = last_usage_row(guarded)
    assert (row["status"], row["error_type"]) == (499, "client_disconnected")


def last_usage_row(gw: Gateway, timeout: float = 10) -> dict[str, Any]:
    store = gw.built.runtime.store
    assert store is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = store.query("SELECT * FROM usage ORDER BY id DESC LIMIT 1")
        if rows:
            return dict(rows[0])
        time.sleep(0.05)
    raise AssertionError("no usage row was written")


def test_connections_beyond_the_limit_are_shed_with_503(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["server"] = {"http": {**LIMITS, "max_connections": 10, "header_timeout_s": 30}}
    with Gateway.start(raw, tmp_path) as gw:
        held = [connect(gw) for _ in range(10)]
        # Make sure the server has accepted all ten before the next one.
        assert wait_until(lambda: len(gw.built.guard.connections) == 10)
        extra = [connect(gw) for _ in range(5)]
        for sock in extra:
            status, headers, body = status_and_json(read_all(sock))
            assert status == 503 and headers["retry-after"] == "1"
            assert "(server.http.max_connections)" in body["error"]["message"]
            sock.close()
        assert gw.built.guard.shed == 5
        for sock in held:
            sock.close()
        assert wait_until(lambda: not gw.built.guard.connections)
        with connect(gw) as sock:  # room again
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("path", "auth", "status", "kind"),
    [
        ("/v1/messages", "x-api-key", 529, "overloaded_error"),
        ("/v1/chat/completions", "authorization", 503, "server_error"),
    ],
)
def test_requests_beyond_max_in_flight_are_shed_in_the_callers_envelope(
    guarded: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    path: str, auth: str, status: int, kind: str,
) -> None:  # fmt: skip
    """Eight slow streams hold every slot: the ninth is refused at once, before reading
    its body or checking its key, and /health still answers."""
    for fake in (fake_openai, fake_anthropic):
        for _ in range(8):
            fake.reply_slow(0.2, text="slow " * 20)
    model = "claude-test" if "messages" in path else "gpt-test"
    body = json.dumps(
        {"model": model, "max_tokens": 50, "stream": True,
         "messages": [{"role": "user", "content": "x"}]}
    ).encode()  # fmt: skip
    key = guarded.key if auth == "x-api-key" else f"Bearer {guarded.key}"
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\n{auth}: {key}\r\nanthropic-version: 2023-06-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    streams = [connect(guarded) for _ in range(8)]
    for sock in streams:
        sock.sendall(head + body)
    for sock in streams:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    with connect(guarded) as sock:
        sock.sendall(head.replace(key.encode(), b"wrong-key"))  # no body, a bad key: no matter
        got, headers, payload = status_and_json(read_all(sock))
    assert got == status and headers["retry-after"] == "1"
    assert payload["error"]["type"] == kind
    assert "(server.http.max_in_flight)" in payload["error"]["message"]
    with connect(guarded) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")
    for sock in streams:
        sock.close()


@pytest.mark.parametrize("depth", [254, 600, 1023])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_deep_json_is_a_400_not_a_500(guarded: Gateway, path: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = (
        '{"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": '
        f'"x"}}], "metadata": {{"deep": {nested}}}}}'
    ).encode()
    with connect(guarded) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {guarded.key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode() + body
        )
        status, _, payload = status_and_json(read_all(sock))
    assert status == 400
    assert "nested more than 128 levels deep" in payload["error"]["message"]


def test_an_unauthenticated_upload_is_refused_and_the_connection_closed(
    guarded: Gateway,
) -> None:
    """A 401 before the body was read: reading megabytes only to drop them would let a
    caller with no key keep the server busy, so the connection closes."""
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000\r\n\r\n{"
        )
        status, headers, _ = status_and_json(read_all(sock))
    assert status == 401 and headers["connection"] == "close"


def test_an_http_10_stream_is_not_chunked(guarded: Gateway) -> None:
    body = json.dumps(
        {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    with connect(guarded) as sock:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {guarded.key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        raw = read_all(sock)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    # The body is the SSE stream itself, ended by the connection's end.
    assert rest.startswith(b"data: {") and rest.rstrip().endswith(b"data: [DONE]")


def test_405_stays_405_in_the_openai_envelope(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        sock.sendall(
            f"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            f"{guarded.key}\r\nconnection: close\r\n\r\n".encode()
        )
        status, headers, payload = status_and_json(read_all(sock))
    assert status == 405 and headers["allow"] == "POST"
    assert set(payload["error"]) >= {"message", "type", "param", "code"}


def test_no_redirect_is_built_from_the_host_header(guarded: Gateway) -> None:
    for path in ("/v1/models/", "/health/", "/"):
        with connect(guarded) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nhost: evil.example\r\nauthorization: Bearer "
                f"{guarded.key}\r\nconnection: close\r\n\r\n".encode()
            )
            raw = read_all(sock)
        assert b"evil.example" not in raw
        status = int(raw.split()[1])
        assert status in (200, 307)
        if status == 307:
            assert b"\r\nlocation: /ui\r\n" in raw
