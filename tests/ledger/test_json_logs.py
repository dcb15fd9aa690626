"""JSON logs: one parseable object per line, one line per request, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from ledgerhelpers import MASTER_KEY, rec

from meridian import logs
from meridian.model import Usage


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("INFO", out)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_line_per_request(stream: io.StringIO) -> None:
    log = logs.RequestLog()
    log.record(rec(1, usage=Usage(120, 30, 5, 0, 2), latency_ms=123.456, ttft_ms=9.87, stream=True))
    log.record(rec(2, status=429, error_type="rate_limit", key_name="notes", provider=None))
    first, second = lines(stream)
    assert first["logger"] == "meridian.request"
    assert first["level"] == "info"
    assert str(first["ts"]).endswith("+00:00")
    assert {k: first[k] for k in (
        "request_id", "key", "surface", "endpoint", "alias", "provider", "upstream_model",
        "status", "input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens",
        "latency_ms", "ttft_ms", "stream", "error_type",
    )} == {
        "request_id": "req_000001", "key": "pulse", "surface": "openai",
        "endpoint": "/v1/chat/completions", "alias": "gpt-test", "provider": "oai",
        "upstream_model": "gpt-4o-mini", "status": 200, "input_tokens": 120,
        "output_tokens": 30, "cache_read_tokens": 5, "reasoning_tokens": 2,
        "latency_ms": 123.5, "ttft_ms": 9.9, "stream": True, "error_type": None,
    }  # fmt: skip
    assert (second["status"], second["error_type"], second["key"], second["provider"]) == (
        429,
        "rate_limit",
        "notes",
        None,
    )


def test_other_loggers_and_extras_and_exceptions(stream: io.StringIO) -> None:
    log = logging.getLogger("meridian.test")
    log.info("hello %s", "world", extra={"listeners": ["127.0.0.1:4000"], "n": 3})
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("it failed")
    logs.startup(log, ["127.0.0.1:4000"], {"oai": "openai"}, ["b", "a"])
    hello, failed, started = lines(stream)
    assert hello["msg"] == "hello world" and hello["listeners"] == ["127.0.0.1:4000"]
    assert hello["n"] == 3
    assert failed["level"] == "error" and "ValueError: bad" in str(failed["exc"])
    assert started["aliases"] == ["a", "b"] and started["providers"] == {"oai": "openai"}


def test_configure_twice_does_not_double_lines(stream: io.StringIO) -> None:
    again = io.StringIO()
    handler = logs.configure("INFO", again)
    try:
        logging.getLogger("meridian.test").info("once")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == ""
    assert len(again.getvalue().splitlines()) == 1


def test_bodies_are_off_by_default(stream: io.StringIO) -> None:
    logs.RequestLog().body("req_1", "request", {"messages": [{"content": "secret plans"}]})
    assert stream.getvalue() == ""


def test_bodies_when_asked_for_have_secrets_redacted(stream: io.StringIO) -> None:
    client_key = "mk-AbC123" + "x" * 40
    log = logs.RequestLog(log_bodies=True, secrets=[MASTER_KEY, client_key])
    body = {
        "model": "gpt-test",
        "messages": [
            {"role": "user", "content": f"my key is {client_key}, and the master {MASTER_KEY}"},
            {"role": "user", "content": "sk-proj-abcdefabcdef"},
        ],
        "metadata": {"api_key": "anything", "Authorization": "Bearer zzz"},
    }
    log.body("req_1", "request", json.dumps(body).encode())
    log.body("req_1", "upstream", b"not json at all")
    (line, raw) = lines(stream)
    text = stream.getvalue()
    assert client_key not in text and MASTER_KEY not in text
    assert "sk-proj-abcdefabcdef" not in text and "zzz" not in text
    logged = line["body"]
    assert isinstance(logged, dict)
    assert logged["model"] == "gpt-test"
    assert logged["messages"][0]["content"] == "my key is [redacted], and the master [redacted]"
    assert logged["metadata"] == {"api_key": "[redacted]", "Authorization": "[redacted]"}
    assert raw["body"] == "not json at all" and raw["kind"] == "upstream"


def test_request_lines_carry_no_secret(stream: io.StringIO) -> None:
    # A record holds the key's name; whatever the caller sent as a key never reaches it.
    logs.RequestLog().record(rec(1, key_name="pulse"))
    text = stream.getvalue()
    assert "pulse" in text
    assert MASTER_KEY not in text and "mk-" not in text and "sk-" not in text


def test_a_request_line_written_directly_is_the_line_logging_writes(
    stream: io.StringIO,
) -> None:
    """With only meridian's handler in the way (the server's setup) the request line skips
    the logging machinery; it must be the same line, key for key and in the same order."""
    root = logging.getLogger()
    request_logger = logging.getLogger("meridian.request")
    ours = next(h for h in root.handlers if getattr(h, "_meridian_json", False))
    others = [h for h in root.handlers if h is not ours]
    log = logs.RequestLog()
    r = rec(1, usage=Usage(120, 30, 5, 0, 2), latency_ms=123.456, ttft_ms=9.87, stream=True)
    listener = logging.NullHandler()  # another handler: the standard path serves both
    root.addHandler(listener)
    try:
        assert logs._sole_json_handler(request_logger) is None
        log.record(r)
    finally:
        root.removeHandler(listener)
    for h in others:
        root.removeHandler(h)
    try:
        assert logs._sole_json_handler(request_logger) is ours
        log.record(r)
        request_logger.addFilter(lambda record: True)  # a filter: the standard path again
        try:
            assert logs._sole_json_handler(request_logger) is None
        finally:
            request_logger.filters.clear()
    finally:
        for h in others:
            root.addHandler(h)
    standard, direct = lines(stream)
    assert list(direct) == list(standard)
    assert {k: v for k, v in direct.items() if k != "ts"} == {
        k: v for k, v in standard.items() if k != "ts"
    }
    assert len(str(direct["ts"])) == len(str(standard["ts"]))
    assert str(direct["ts"]).endswith("+00:00")
