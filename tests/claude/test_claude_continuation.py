"""Live continuation: the next turn of a conversation (tool results, a follow-up) is served by
the process that answered the last one, over real HTTP with the official SDKs as clients and
client keys. The fake upstream's log is the witness: one process keeps one session id
(``x-claude-code-session-id``) across its requests, and a fresh one sends its own."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from claude_helpers import MARK, cli_pids, upstream_turns, write_oauth_login

from fakes import FakeAnthropic, ReceivedRequest
from harness import Gateway
from meridian.providers.claude import ClaudeCodeProvider

pytestmark = pytest.mark.slow

MODEL = "claude-haiku-4-5"
SYSTEM = "You control the house. Areas: kitchen, hall."
TOOLS: list[Any] = [
    {
        "name": name,
        "description": f"{name} a device or area",
        "input_schema": {
            "type": "object",
            "properties": {"area": {"type": "string"}},
            "required": ["area"],
        },
    }
    for name in ("HassTurnOn", "HassTurnOff")
]
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def gateway(tmp_path: Path, fake_anthropic: FakeAnthropic) -> Iterator[Gateway]:
    write_oauth_login(tmp_path / "claude")
    raw = {
        "providers": {
            "claude": {
                "type": "claude-code",
                "config_dir": str(tmp_path / "claude"),
                "env": {"ANTHROPIC_BASE_URL": fake_anthropic.url, "MERIDIAN_TEST_MARK": MARK},
            }
        },
        "models": {MODEL: {"provider": "claude", "model": MODEL}},
    }
    with Gateway.start(raw, tmp_path) as gw:
        yield gw


def _key(gw: Gateway, name: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/admin/keys",
            body=json.dumps({"name": name}),
            headers={"authorization": f"Bearer {gw.key}", "content-type": "application/json"},
        )
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        assert resp.status == 201, payload
        secret: str = payload["secret"]
        return secret
    finally:
        conn.close()


def _pool(gw: Gateway) -> dict[str, Any]:
    provider = gw.built.runtime.current.providers["claude"]
    assert isinstance(provider, ClaudeCodeProvider)
    status: dict[str, Any] = provider.status()["processes"]
    return status


def _session(request: ReceivedRequest) -> str:
    return request.headers["x-claude-code-session-id"]


def test_a_home_assistant_tool_loop_and_follow_up_continue_one_process(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=_key(gateway, "ha"), max_retries=0)
    ask = {"role": "user", "content": "Kitchen on, hall off."}
    fake_anthropic.reply_tool_calls(
        ("HassTurnOn", {"area": "kitchen"}), ("HassTurnOff", {"area": "hall"}), text="On it."
    )
    with client.messages.stream(
        model=MODEL, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=[ask]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (pid,) = cli_pids()
    calls = [b for b in first.content if b.type == "tool_use"]
    manual = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                              "data": "kitchen: dimmable"}}  # fmt: skip
    results: list[Any] = [
        {"type": "tool_result", "tool_use_id": calls[0].id,
         "content": [{"type": "text", "text": "kitchen on"}, manual]},
        {"type": "tool_result", "tool_use_id": calls[1].id, "is_error": True,
         "content": [{"type": "text", "text": "hall unreachable"},
                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                  "data": PNG}}]},
    ]  # fmt: skip
    fake_anthropic.reply_text("The kitchen is on; the hall did not answer.")
    history: list[Any] = [ask, {"role": "assistant", "content": first.content}]
    history.append({"role": "user", "content": results})
    with client.messages.stream(
        model=MODEL, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=history
    ) as stream:
        second = stream.get_final_message()
    assert second.content[0].type == "text"
    fake_anthropic.reply_text("You're welcome.")
    history += [{"role": "assistant", "content": second.content}]
    history.append({"role": "user", "content": "Thanks!"})
    third = client.messages.create(
        model=MODEL, max_tokens=300, system=SYSTEM, tools=TOOLS, messages=history
    )
    assert third.content[0].type == "text" and third.content[0].text == "You're welcome."

    # One process answered all three: one session upstream, no further spawn.
    assert len({_session(r) for r in fake_anthropic.requests}) == 1
    assert cli_pids() == [pid]
    pool = _pool(gateway)
    assert (pool["spawns"], pool["hits"], pool["idle"]) == (1, 2, 1)
    # The results went upstream as the client sent them, with nothing added to the turn.
    sent = upstream_turns(fake_anthropic.requests[1].json)[-1]["content"]
    assert sent[0]["content"][1] == manual
    assert sent[1]["is_error"] is True and sent[1]["content"][0]["text"] == "hall unreachable"
    assert sent[2]["type"] == "image"
    assert all(b["type"] != "text" for b in sent)  # no "Continue from where you left off."
    final = upstream_turns(fake_anthropic.requests[2].json)
    assert [t["role"] for t in final] == ["user", "assistant", "user", "assistant", "user"]
    assert final[-1]["content"][0]["text"] == "Thanks!"


def test_a_three_turn_openai_chat_continues_one_process(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=_key(gateway, "webui"), max_retries=0
    )
    messages: list[Any] = []
    for ask, reply in [("My name is Ada.", "Hello Ada."), ("And you?", "An assistant."),
                       ("My name?", "Ada.")]:  # fmt: skip
        fake_anthropic.reply_text(reply)
        messages.append({"role": "user", "content": ask})
        answer = client.chat.completions.create(model=MODEL, messages=messages)
        assert answer.choices[0].message.content == reply
        messages.append({"role": "assistant", "content": reply})

    assert len({_session(r) for r in fake_anthropic.requests}) == 1
    pool = _pool(gateway)
    assert (pool["spawns"], pool["hits"]) == (1, 2)
    turns = upstream_turns(fake_anthropic.last.json)
    assert [t["content"][-1]["text"] for t in turns[1::2]] == ["Hello Ada.", "An assistant."]


def test_a_changed_history_or_another_key_never_reaches_a_live_process(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    alice = anthropic.Anthropic(base_url=gateway.url, api_key=_key(gateway, "a"), max_retries=0)
    bob = anthropic.Anthropic(base_url=gateway.url, api_key=_key(gateway, "b"), max_retries=0)
    ask = {"role": "user", "content": "My code word is AZURE-7."}
    fake_anthropic.reply_text("Noted.")
    alice.messages.create(model=MODEL, max_tokens=50, messages=[ask])
    next_turn = [ask, {"role": "assistant", "content": "Noted."},
                 {"role": "user", "content": "What is my code word?"}]  # fmt: skip

    # Bob sends exactly Alice's conversation: a fresh process of his own, from the transcript.
    fake_anthropic.reply_text("bob's answer")
    bob.messages.create(model=MODEL, max_tokens=50, messages=next_turn)
    # Alice edits the history: not the conversation her process holds.
    edited = [ask, {"role": "assistant", "content": "Noted!"}, next_turn[2]]
    fake_anthropic.reply_text("edited answer")
    alice.messages.create(model=MODEL, max_tokens=50, messages=edited)
    # Alice's true next turn still finds her process.
    fake_anthropic.reply_text("AZURE-7.")
    answer = alice.messages.create(model=MODEL, max_tokens=50, messages=next_turn)

    assert answer.content[0].type == "text" and answer.content[0].text == "AZURE-7."
    sessions = [_session(r) for r in fake_anthropic.requests]
    assert len(set(sessions[:3])) == 3 and sessions[3] == sessions[0]
    pool = _pool(gateway)
    assert (pool["spawns"], pool["hits"], pool["misses"]) == (3, 1, 2)
    # Bob's and the edited request carried their whole history themselves.
    for request, assistant in ((fake_anthropic.requests[1], "Noted."),
                               (fake_anthropic.requests[2], "Noted!")):  # fmt: skip
        turns = upstream_turns(request.json)
        assert [t["role"] for t in turns] == ["user", "assistant", "user"]
        assert turns[1]["content"][0]["text"] == assistant
