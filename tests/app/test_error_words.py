"""A caller reads which provider failed and what happened, in words; never an upstream
address (a base_url may hold a password), nor a library's exception text, nor a key. The
log has the detail, with credentials redacted."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import anthropic
import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway, two_upstreams


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_password_in_base_url_never_reaches_a_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    raw = {
        "providers": {
            "vllm": {"type": "openai", "base_url": f"http://admin:PASSWORD@127.0.0.1:{port}/v1"}
        },
        "models": {"m": {"provider": "vllm", "model": "x"}},
        "router": {"retries": 0},
    }
    with caplog.at_level(logging.INFO), Gateway.start(raw, tmp_path) as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    text = info.value.message
    assert info.value.status_code == 502
    assert "provider `vllm`: cannot connect to the upstream (connection refused)" in text
    assert "PASSWORD" not in text and "127.0.0.1" not in text and str(port) not in text
    logged = "\n".join(r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "PASSWORD" not in logged
    assert f"http://***@127.0.0.1:{port}/v1" in logged  # the detail, for the operator


@pytest.mark.parametrize("client_family", ["anthropic", "openai"])
def test_a_reset_mid_stream_is_told_in_plain_words(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path, client_family: str
) -> None:
    fake_anthropic.reply_reset(after=4)
    with Gateway.start(two_upstreams(fake_openai.url, fake_anthropic.url), tmp_path) as gw:
        if client_family == "anthropic":
            ant = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as info, ant.messages.stream(
                model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "x"}]
            ) as s:
                s.get_final_text()
            message = str(info.value)
        else:
            oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
            with pytest.raises(openai.APIError) as err:
                for _ in oai.chat.completions.create(
                    model="claude-test", messages=[{"role": "user", "content": "x"}], stream=True
                ):
                    pass
            message = str(err.value)
    assert "provider `ant`: the upstream connection was" in message
    assert "mid-stream" in message
    for leak in ("127.0.0.1", str(fake_anthropic.port), "Client", "Error:", "aiohttp"):
        assert leak not in message


def test_logged_bodies_hide_keys_quoted_in_text(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    raw["server"] = {"log_bodies": True}
    with caplog.at_level(logging.INFO), Gateway.start(raw, tmp_path) as gw:
        client_key = "mk-" + "Q" * 43
        prompt = f"my key is {client_key}, and the master is {gw.key}; keep them safe"
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": prompt}]
        )
    bodies = [r for r in caplog.records if r.name == "meridian.body"]
    assert bodies
    logged = json.dumps([r.__dict__.get("body") for r in bodies])
    assert client_key not in logged and gw.key not in logged
    assert "my key is [redacted], and the master is [redacted]; keep them safe" in logged
