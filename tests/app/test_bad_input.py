"""Malformed and unauthorised requests: the right 4xx, in the caller's envelope, and the
server stays up. Raw HTTP, because the SDKs refuse to send most of these."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from fakes import FakeOpenAI
from harness import Gateway

ANTHROPIC = {
    "x-api-key": "K",
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
}
OPENAI = {"authorization": "Bearer K", "content-type": "application/json"}


def send(
    gw: Gateway, path: str, body: bytes | str, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    headers = {
        k: v.replace("K", gw.key) if k in ("x-api-key", "authorization") else v
        for k, v in headers.items()
    }
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw)
    finally:
        conn.close()


def anthropic_error(payload: Any) -> tuple[str, str]:
    assert payload["type"] == "error" and payload["request_id"].startswith("req_")
    return payload["error"]["type"], payload["error"]["message"]


def openai_error(payload: Any) -> tuple[str, str]:
    assert set(payload["error"]) >= {"message", "type", "param", "code"}
    return payload["error"]["type"], payload["error"]["message"]


CASES = [
    # (body, status, anthropic type, openai type, words in the message)
    (b"{not json", 400, "invalid_request_error", "invalid_request_error", "not valid JSON"),
    (b"[1, 2]", 400, "invalid_request_error", "invalid_request_error", "JSON object"),
    (b"", 400, "invalid_request_error", "invalid_request_error", "empty"),
    (
        json.dumps({"model": 3, "messages": [{"role": "user", "content": "x"}]}),
        400,
        "invalid_request_error",
        "invalid_request_error",
        "model",
    ),
    (
        json.dumps({"model": "gpt-test"}),
        400,
        "invalid_request_error",
        "invalid_request_error",
        "messages",
    ),
    (
        json.dumps({"model": "gpt-test", "messages": "hi"}),
        400,
        "invalid_request_error",
        "invalid_request_error",
        "messages",
    ),
    (
        json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        404,
        "not_found_error",
        "invalid_request_error",
        "does not exist",
    ),
    (
        json.dumps(
            {"model": "gpt-test", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}
        ),
        400,
        "invalid_request_error",
        "invalid_request_error",
        "stream",
    ),
]


@pytest.mark.parametrize(("body", "status", "a_type", "o_type", "words"), CASES)
def test_bad_bodies(
    gateway: Gateway, body: bytes | str, status: int, a_type: str, o_type: str, words: str
) -> None:
    got, _, payload = send(gateway, "/v1/messages", body, ANTHROPIC)
    assert got == status
    kind, message = anthropic_error(payload)
    assert kind == a_type and words.lower() in message.lower()
    got, _, payload = send(gateway, "/v1/chat/completions", body, OPENAI)
    assert got == status
    kind, message = openai_error(payload)
    assert kind == o_type and words.lower() in message.lower()


@pytest.mark.parametrize("alias", ["gpt-test", "claude-test"])
def test_wrong_types_inside_messages_on_the_translated_path(gateway: Gateway, alias: str) -> None:
    body = json.dumps(
        {"model": alias, "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}
    )
    path, headers, check = (
        ("/v1/messages", ANTHROPIC, anthropic_error)
        if alias == "gpt-test"
        else ("/v1/chat/completions", OPENAI, openai_error)
    )
    status, _, payload = send(gateway, path, body, headers)
    assert status == 400
    assert "role" in check(payload)[1]


def test_body_over_the_limit(start_gateway: Any, fake_openai: FakeOpenAI) -> None:
    gw = start_gateway(
        {
            "server": {"max_body_mb": 0.01},
            "providers": {"oai": {"type": "openai", "base_url": fake_openai.url}},
            "models": {"gpt-test": {"provider": "oai", "model": "gpt-4o"}},
        }
    )
    big = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 20_000}]})
    status, _, payload = send(gw, "/v1/chat/completions", big, OPENAI)
    assert status == 413 and "limit" in openai_error(payload)[1]
    status, _, payload = send(gw, "/v1/messages", big, ANTHROPIC)
    assert status == 413 and anthropic_error(payload)[0] == "request_too_large"
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic Zm9vOmJhcg=="},
    ],
)
def test_wrong_or_missing_key(
    gateway: Gateway, fake_openai: FakeOpenAI, auth: dict[str, str]
) -> None:
    body = json.dumps(
        {"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    status, _, payload = send(
        gateway, "/v1/messages", body, {"anthropic-version": "2023-06-01", **auth}
    )
    assert status == 401 and anthropic_error(payload)[0] == "authentication_error"
    status, _, payload = send(gateway, "/v1/chat/completions", body, auth)
    assert status == 401 and openai_error(payload)[0] == "authentication_error"
    status, _, payload = send(gateway, "/v1/models", b"", auth, method="GET")
    assert status == 401
    assert fake_openai.requests == []


@pytest.mark.parametrize("headers", [OPENAI, ANTHROPIC])
def test_both_key_headers_work_on_both_apis(gateway: Gateway, headers: dict[str, str]) -> None:
    body = json.dumps(
        {"model": "gpt-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    for path in ("/v1/messages", "/v1/chat/completions"):
        status, resp_headers, _ = send(gateway, path, body, headers)
        assert status == 200, path
        assert resp_headers["x-request-id"].startswith("req_")


def test_unknown_path_and_method(gateway: Gateway) -> None:
    status, _, payload = send(gateway, "/v1/nope", b"{}", OPENAI)
    assert status == 404 and openai_error(payload)[0] == "invalid_request_error"
    status, _, payload = send(gateway, "/v1/messages", b"", ANTHROPIC, method="GET")
    assert status == 405 and anthropic_error(payload)[0] == "invalid_request_error"


def test_server_stays_up_after_bad_input(gateway: Gateway) -> None:
    for body, *_ in CASES:
        send(gateway, "/v1/chat/completions", body, OPENAI)
    status, _, payload = send(gateway, "/health", b"", {}, method="GET")
    assert status == 200 and payload == {"status": "ok"}
    body = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})
    assert send(gateway, "/v1/chat/completions", body, OPENAI)[0] == 200


def test_health_and_ready_need_no_key(gateway: Gateway) -> None:
    status, _, payload = send(gateway, "/ready", b"", {}, method="GET")
    assert (status, payload) == (200, {"status": "ready"})
    # The details are the operator's.
    status, _, payload = send(gateway, "/ready", b"", {"x-api-key": "K"}, method="GET")
    assert status == 200
    assert payload["store"] == "open"
    assert set(payload["providers"]) == {"oai", "ant"}
    assert payload["servable"] == ["gpt-test", "o3-test", "claude-test", "fallback-test"]
