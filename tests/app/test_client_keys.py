"""Client keys end to end: created through the admin API, used by the official SDKs."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from typing import Any

import anthropic
import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway


def admin(
    gw: Gateway, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(
            method,
            path,
            body=None if body is None else json.dumps(body),
            headers={
                "authorization": f"Bearer {key or gw.key}",
                "content-type": "application/json",
            },
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def new_key(gw: Gateway, **fields: Any) -> str:
    status, payload = admin(gw, "POST", "/admin/keys", fields)
    assert status == 201, payload
    secret: str = payload["secret"]
    return secret


def clients(gw: Gateway, key: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0),
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0),
    )


MSG = [{"role": "user", "content": "hi"}]


def test_scoped_key_on_both_apis(gateway: Gateway, fake_anthropic: FakeAnthropic) -> None:
    oai, ant = clients(gateway, new_key(gateway, name="pulse", models=["claude-test"]))
    assert oai.chat.completions.create(model="claude-test", messages=MSG).choices[0].message.content
    assert ant.messages.create(model="claude-test", max_tokens=5, messages=MSG).content  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError, match="may not use"):
        oai.chat.completions.create(model="gpt-test", messages=MSG)
    with pytest.raises(anthropic.PermissionDeniedError, match="may not use"):
        ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    assert [m.id for m in oai.models.list()] == ["claude-test"]
    assert [m.id for m in ant.models.list()] == ["claude-test"]
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-test")


def test_client_key_cannot_manage_keys(gateway: Gateway) -> None:
    key = new_key(gateway, name="paperless")
    assert admin(gateway, "GET", "/admin/keys", key=key)[0] == 403
    assert admin(gateway, "GET", "/admin/keys", key="mk-wrong")[0] == 401


def test_rpm_limit_on_both_apis(gateway: Gateway) -> None:
    oai, ant = clients(gateway, new_key(gateway, name="ha", rpm=2))
    oai.chat.completions.create(model="gpt-test", messages=MSG)
    ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as o_info:
        oai.chat.completions.create(model="gpt-test", messages=MSG)
    with pytest.raises(anthropic.RateLimitError) as a_info:
        ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    for headers in (o_info.value.response.headers, a_info.value.response.headers):
        assert 0 < int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"


def test_token_budget_is_final(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    oai, ant = clients(gateway, new_key(gateway, name="cline", budget_tokens_month=100))
    fake_openai.reply_text("big", input_tokens=90, output_tokens=20)
    # Admitted: its estimate (a few input tokens + max_tokens 5) fits the budget; it then
    # uses more input than estimated, which is the most a key can overshoot by.
    oai.chat.completions.create(model="gpt-test", messages=MSG, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model="gpt-test", messages=MSG)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "budget" in str(info.value) and "110" in str(info.value)
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    assert len(fake_openai.requests) == 1


def test_revoked_and_rotated_keys(gateway: Gateway) -> None:
    key = new_key(gateway, name="webui")
    oai, _ = clients(gateway, key)
    oai.chat.completions.create(model="gpt-test", messages=MSG)
    status, rotated = admin(gateway, "POST", "/admin/keys/webui/rotate")
    assert status == 200
    with pytest.raises(openai.AuthenticationError):
        oai.chat.completions.create(model="gpt-test", messages=MSG)
    fresh, _ = clients(gateway, rotated["secret"])
    fresh.chat.completions.create(model="gpt-test", messages=MSG)
    assert admin(gateway, "DELETE", "/admin/keys/webui")[0] == 200
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        fresh.chat.completions.create(model="gpt-test", messages=MSG)


def test_expired_key(gateway: Gateway) -> None:
    key = new_key(gateway, name="old", expires="1h")
    _, ant = clients(gateway, key)
    ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
    # An hour passes: the row's expiry moves into the past, as another process would see it.
    with sqlite3.connect(gateway.settings.storage.path) as db:
        db.execute("UPDATE keys SET expires_at = ? WHERE name = 'old'", (time.time() - 1,))
    deadline = time.monotonic() + 5
    while True:
        try:
            ant.messages.create(model="gpt-test", max_tokens=5, messages=MSG)  # type: ignore[arg-type]
        except anthropic.AuthenticationError as exc:
            assert "expired" in str(exc)
            break
        assert time.monotonic() < deadline, "the expired key still works"
        time.sleep(0.1)
