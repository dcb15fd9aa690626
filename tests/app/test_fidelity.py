"""What real clients found: structured output reaching each upstream in its native form,
system messages inside Anthropic `messages`, Claude Code's long metadata.user_id, the model
name in answers, thinking budgets without max_tokens, and Claude Code itself as a client.
Every assertion reads what the fake upstream received."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway
from meridian.providers.claude.command import default_cli

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "degrees": {"type": "number"}},
    "required": ["city", "degrees"],
    "additionalProperties": False,
}
JSON_SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
MSG: Any = [{"role": "user", "content": "weather in Paris"}]


@pytest.fixture
def gateway(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Gateway]:
    raw = {
        "providers": {
            "oai": {"type": "openai", "api_key": "sk-o", "base_url": fake_openai.url,
                    "responses_api": True},
            "ant": {"type": "anthropic", "api_key": "sk-a", "base_url": fake_anthropic.url},
            "claude": {"type": "claude-code", "config_dir": str(tmp_path / "claude")},
        },
        "models": {
            "gpt-test": {"provider": "oai", "model": "gpt-4o-mini"},
            "claude-test": {"provider": "ant", "model": "claude-haiku-4-5"},
            "sub-test": {"provider": "claude", "model": "claude-haiku-4-5"},
        },
    }  # fmt: skip
    with Gateway.start(raw, tmp_path) as gw:
        yield gw


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


# ------------------------------------------------------------------ structured output


def test_json_schema_reaches_anthropic_as_output_config_format(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    oai(gateway).chat.completions.create(
        model="claude-test", messages=MSG, response_format=JSON_SCHEMA
    )
    sent = fake_anthropic.last.json
    assert sent["output_config"]["format"] == {"type": "json_schema", "schema": SCHEMA}
    assert "JSON" not in json.dumps(sent.get("system", ""))  # never a prompt instruction
    oai(gateway).chat.completions.create(
        model="claude-test", messages=MSG, response_format={"type": "json_object"}
    )
    assert fake_anthropic.last.json["output_config"]["format"]["schema"] == {"type": "object"}


def test_json_schema_reaches_openai_as_response_format(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    # An Anthropic client's structured output, translated.
    ant(gateway).messages.create(
        model="gpt-test", max_tokens=50, messages=MSG,
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
    )  # fmt: skip
    fmt = fake_openai.last.json["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    # A Responses client's, passed through as it came.
    text: Any = {"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA}}
    oai(gateway).responses.create(model="gpt-test", input="weather?", text=text)
    assert fake_openai.last.json["text"] == text


def test_responses_text_format_reaches_anthropic_natively(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    text: Any = {"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA}}
    oai(gateway).responses.create(model="claude-test", input="weather?", text=text)
    assert fake_anthropic.last.json["output_config"]["format"]["schema"] == SCHEMA


def test_a_deployment_without_structured_output_is_a_clear_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).chat.completions.create(
            model="sub-test", messages=MSG, response_format=JSON_SCHEMA
        )
    assert "provider `claude` has no structured output" in info.value.message


# ------------------------------------------------------------------ Claude Code's quirks


def test_system_messages_inside_anthropic_messages(
    gateway: Gateway, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    """The repro from the field: Claude Code on an alias that is not a Claude model id."""
    body: Any = {
        "model": "gpt-test", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "env"}],
    }  # fmt: skip
    answer = ant(gateway).messages.create(**body)
    assert answer.content
    assert fake_openai.last.json["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "env"},
    ]
    # To an Anthropic upstream the caller's body goes as it came (its betas say what it is).
    ant(gateway).messages.create(**{**body, "model": "claude-test"})
    assert fake_anthropic.last.json["messages"][1] == {"role": "system", "content": "env"}


def test_a_role_the_api_does_not_know_is_refused_in_anthropics_words(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ant(gateway).messages.create(
            model="gpt-test",
            max_tokens=5,
            messages=[{"role": "tool", "content": "x"}],  # type: ignore[misc,list-item]
        )
    assert "messages.0.role: Input should be 'user' or 'assistant'" in info.value.message


def test_a_long_user_id_becomes_an_openai_user_of_64_characters(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "a" * 36, "session_id": "s" * 36})
    assert len(user_id) > 64
    ant(gateway).messages.create(
        model="gpt-test", max_tokens=5, messages=MSG, metadata={"user_id": user_id}
    )
    assert fake_openai.last.json["user"] == hashlib.sha256(user_id.encode()).hexdigest()
    ant(gateway).messages.create(
        model="gpt-test", max_tokens=5, messages=MSG, metadata={"user_id": "alice"}
    )
    assert fake_openai.last.json["user"] == "alice"


# ------------------------------------------------------------------ model names, budgets


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_names_the_upstreams_model_on_every_path(gateway: Gateway, stream: bool) -> None:
    """The upstream's own id (what answered) whichever path: pass-through or translated."""
    models = []
    for alias, upstream in (("gpt-test", "gpt-4o-mini"), ("claude-test", "claude-haiku-4-5")):
        if stream:
            chunks = list(
                oai(gateway).chat.completions.create(model=alias, messages=MSG, stream=True)
            )
            models.append((chunks[0].model, upstream))
            with ant(gateway).messages.stream(model=alias, max_tokens=5, messages=MSG) as s:
                models.append((s.get_final_message().model, upstream))
        else:
            models.append(
                (oai(gateway).chat.completions.create(model=alias, messages=MSG).model, upstream)
            )
            answer = ant(gateway).messages.create(model=alias, max_tokens=5, messages=MSG)
            models.append((answer.model, upstream))
    assert all(got == want for got, want in models), models


def test_a_thinking_budget_without_max_tokens_gets_room_above_it(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    body = {"model": "claude-test", "messages": MSG,
            "thinking": {"type": "enabled", "budget_tokens": 10_000}}  # fmt: skip
    req = urllib.request.Request(
        gateway.url + "/v1/messages", data=json.dumps(body).encode(),
        headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01",
                 "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    sent = fake_anthropic.last.json
    assert sent["max_tokens"] > 10_000 and sent["max_tokens"] == 10_000 + 8_192


# ------------------------------------------------------------------ Claude Code as a client


def test_claude_code_answers_on_an_alias_that_is_not_a_claude_model(
    gateway: Gateway, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """The bundled CLI, headless, pointed at meridian with an OpenAI-served alias: it must
    answer (it puts system messages inside `messages` for a model it does not know)."""
    fake_openai.reply_text("PONG from the OpenAI side")
    home = tmp_path / "cc-home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_API_KEY": gateway.key,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    done = subprocess.run(
        [default_cli(), "-p", "Reply with one word.", "--model", "gpt-test",
         "--tools", "", "--setting-sources="],
        capture_output=True, text=True, env=env, cwd=home, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    assert "PONG from the OpenAI side" in done.stdout
    chat = [r for r in fake_openai.requests if r.path == "/v1/chat/completions"]
    assert chat and chat[-1].json["model"] == "gpt-4o-mini"
    # What made it fail before: a system message after the user's turn, kept in place.
    roles = [m["role"] for m in chat[-1].json["messages"]]
    assert "system" in roles[roles.index("user") :]
