"""The limiter's one pipelined Redis connection (`meridian.limits.line`), on a real Redis:
replies reach the calls that asked, in any interleaving; errors stay with their call; a
timeout drops the connection and the next call connects again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions

from meridian.limits.line import Line, Script, pack
from meridian.limits.redis import StoreUnavailable, client, connect
from redisserver import RedisServer


def test_pack_is_resp() -> None:
    assert pack(["SET", "k", "v"]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    # Lengths count bytes, not characters.
    assert pack(["ECHO", "é"]) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(
    redis_url: str, redis_server: RedisServer
) -> None:
    line = Line(client(redis_url, timeout_s=5))
    try:
        before = int(_field(redis_server, "connected_clients"))
        replies = await asyncio.gather(*(line.call(["ECHO", f"n{i}"]) for i in range(300)))
        assert replies == [f"n{i}".encode() for i in range(300)]
        # Every call went over one connection (plus the probe's own, counted by INFO).
        assert int(_field(redis_server, "connected_clients")) == before + 1
    finally:
        await line.aclose()


async def test_an_error_reply_fails_its_call_only(redis_url: str) -> None:
    line = Line(client(redis_url, timeout_s=5))
    try:
        calls: list[Any] = [line.call(["ECHO", "a"]), line.call(["NOSUCHCOMMAND"]),
                            line.call(["ECHO", "b"])]  # fmt: skip
        a, failed, b = await asyncio.gather(*calls, return_exceptions=True)
        assert (a, b) == (b"a", b"b")
        assert isinstance(failed, redis.exceptions.ResponseError)
        assert await line.call(["PING"]) in (b"PONG", "PONG", True)
    finally:
        await line.aclose()


async def test_a_script_redis_forgot_is_sent_whole(
    redis_url: str, redis_server: RedisServer
) -> None:
    line = Line(client(redis_url, timeout_s=5))
    script = Script("return ARGV[1] .. KEYS[1]")
    try:
        assert await line.script(script, ["k"], ["x"]) == b"xk"
        assert redis_server.command("SCRIPT", "FLUSH") == "+OK"
        assert await line.script(script, ["k"], ["y"]) == b"yk"
    finally:
        await line.aclose()


async def test_a_hung_redis_times_out_and_the_next_call_connects_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    limits = connect(server.url, timeout_s=0.3)
    try:
        await limits.ping()
        server.pause()
        waiting = [asyncio.ensure_future(limits.ping()) for _ in range(3)]
        said = []
        for call in waiting:
            with pytest.raises(StoreUnavailable) as failed:
                await call
            said.append(str(failed.value))
        # The first call to time out drops the line; a call whose own deadline had not come
        # yet (two loaded cores spread them) fails with the line instead of waiting on.
        assert said[0] == "no answer in time", said
        assert set(said) <= {
            "no answer in time",
            "ConnectionError: Redis connection lost: a call timed out",
        }, said
        server.resume()
        # A fresh connection: the old one's late replies are gone. Its 0.3 s may run out on
        # two loaded cores too, so it gets a few tries; a line that never reconnects fails.
        for attempt in range(20):
            try:
                await limits.ping()
                break
            except StoreUnavailable:
                if attempt == 19:
                    raise
    finally:
        server.resume()
        await limits.aclose()
        server.stop()


def _field(server: RedisServer, name: str) -> str:
    """One field of INFO, over a raw socket of its own."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(server.socket))
        sock.sendall(pack(["INFO", "clients"]))
        data = b""
        # Every line of the reply is whole once it ends with CRLF.
        while not ((name + ":").encode() in data and data.endswith(b"\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    raise AssertionError(f"no {name} in INFO: {data!r}")
