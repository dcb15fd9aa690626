"""Through meridian, over real HTTP, with the official SDKs as clients: the provider wired into
the app by its config type, the real CLI behind it, the fake Anthropic behind that."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from claude_helpers import (
    MARK,
    cli_pids,
    listing,
    upstream_turns,
    wait_gone,
    write_oauth_login,
)
from prometheus_client.parser import text_string_to_metric_families

from fakes import FakeAnthropic
from harness import Gateway

pytestmark = pytest.mark.slow

DISCONNECTS = 50
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _raw(tmp_path: Path, fake: FakeAnthropic, **env: str) -> dict[str, Any]:
    return {
        "providers": {
            "claude": {
                "type": "claude-code",
                "config_dir": str(tmp_path / "claude"),
                "env": {"ANTHROPIC_BASE_URL": fake.url, "MERIDIAN_TEST_MARK": MARK, **env},
                "max_concurrency": 2,
            }
        },
        "models": {"claude-haiku-4-5": {"provider": "claude", "model": "haiku"}},
    }


@pytest.fixture
def gateway(tmp_path: Path, fake_anthropic: FakeAnthropic) -> Iterator[Gateway]:
    write_oauth_login(tmp_path / "claude")
    with Gateway.start(_raw(tmp_path, fake_anthropic), tmp_path) as gw:
        yield gw


def test_anthropic_sdk_streams_and_runs_a_tool_loop(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    fake_anthropic.reply_text("Hello from the subscription.")
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the subscription."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0

    ask = {"role": "user", "content": "Weather in Paris and Oslo?"}
    fake_anthropic.reply_tool_calls(
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})
    )
    first = client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[ask], tools=[WEATHER]
    )  # type: ignore[list-item]
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [c.input for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]

    fake_anthropic.reply_text("Paris 21C, Oslo 9C.")
    results = [
        {"type": "tool_result", "tool_use_id": c.id, "content": f"{c.input['city']}: ok"}
        for c in calls
    ]
    second = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            ask,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": results},
        ],  # type: ignore[list-item]
    )
    assert second.content[0].type == "text" and second.content[0].text == "Paris 21C, Oslo 9C."
    turns = upstream_turns(fake_anthropic.last.json)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["tool_use_id"] for b in turns[2]["content"] if b["type"] == "tool_result"] == [
        c.id for c in calls
    ]


def test_openai_sdk_tool_round_trip_streamed(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {"name": WEATHER["name"], "parameters": WEATHER["input_schema"]},
        }
    ]
    ask = {"role": "user", "content": "Weather in Paris?"}
    fake_anthropic.reply_tool_calls(("get_weather", {"city": "Paris"}))
    first = client.chat.completions.create(model="claude-haiku-4-5", messages=[ask], tools=tools)  # type: ignore[arg-type,list-item]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]

    fake_anthropic.reply_text("Sunny, 21C.")
    chunks = list(
        client.chat.completions.create(
            model="claude-haiku-4-5",
            stream=True,
            stream_options={"include_usage": True},
            tools=tools,  # type: ignore[arg-type]
            messages=[
                ask,
                choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
            ],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Sunny, 21C."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    (result,) = [
        b
        for b in upstream_turns(fake_anthropic.last.json)[-1]["content"]
        if b["type"] == "tool_result"
    ]
    assert result["tool_use_id"] == call.id


def test_not_logged_in_is_503_for_both_sdks_and_in_ready(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    with Gateway.start(_raw(tmp_path, fake_anthropic), tmp_path) as gw:
        a = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ant:
            a.messages.create(
                model="claude-haiku-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            )
        o = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as oai:
            o.chat.completions.create(
                model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}]
            )
        ready = _get(gw.url + "/ready", gw.key)
    for err in (ant.value, oai.value):
        assert err.status_code == 503
        assert err.response.headers["x-should-retry"] == "false"
        assert "meridian auth login" in err.message
    assert ready["providers"]["claude"]["ready"] is False
    # The only provider cannot serve: no alias can be answered, and /ready says so.
    assert ready["status"] == "not ready" and ready["servable"] == []
    assert "claude" in ready["reason"]
    assert fake_anthropic.requests == []


def test_disconnects_mid_stream_leave_nothing_behind(
    gateway: Gateway, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    """Fifty clients leave mid-answer. Each CLI gets the whole graceful stop (interrupt, end
    of input, TERM, KILL), whatever happens to the call's task meanwhile: no process, no
    session record, no scratch file, no run left in the pool. Every wait is on an event (a
    process gone), never on a fixed delay, so load does not change the verdict."""
    provider = gateway.built.runtime.current.providers["claude"]
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    for _ in range(DISCONNECTS):
        fake_anthropic.reply_slow(0.05, text="word " * 400)  # minutes, if nothing stops it
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "go"}]
        ) as stream:
            next(iter(stream.text_stream))
            (pid,) = cli_pids()
        # Leaving the block closes the HTTP response: the client went away.
        assert wait_gone([pid], timeout=10) == []
        assert _settles(lambda: provider.processes.processes == 0)

    assert len(fake_anthropic.requests) == DISCONNECTS
    assert not any(b"message_stop" in r.sent for r in fake_anthropic.requests)
    assert provider.in_flight == 0 and provider.status()["processes"]["idle"] == 0
    assert listing(tmp_path / "claude" / "sessions") in (None, [])
    assert listing(provider.processes.scratch) == []  # every run's home and temp files


def test_the_subscription_windows_show_in_ready_and_metrics(
    gateway: Gateway, fake_anthropic: FakeAnthropic
) -> None:
    now = int(time.time())
    prefix = "anthropic-ratelimit-unified-"
    fake_anthropic.reply_text(
        "hi",
        headers={
            prefix + "status": "allowed",
            prefix + "5h-status": "allowed",
            prefix + "5h-utilization": "0.42",
            prefix + "5h-reset": str(now + 3600),
            prefix + "7d-status": "allowed",
            prefix + "7d-utilization": "0.91",
            prefix + "7d-reset": str(now + 86400),
            prefix + "7d-surpassed-threshold": "0.9",
            prefix + "representative-claim": "seven_day",
            prefix + "reset": str(now + 86400),
        },
    )
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )

    status = _get(gateway.url + "/ready", gateway.key)["providers"]["claude"]["status"]
    assert status["rate_limits"] == [
        {"window": "five_hour", "status": "allowed", "utilization": 0.42,
         "resets_at": now + 3600},
        {"window": "seven_day", "status": "allowed", "utilization": 0.91,
         "resets_at": now + 86400},
    ]  # fmt: skip
    assert status["processes"]["spawns"] == 1 and status["processes"]["busy"] == 0
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
        families = text_string_to_metric_families(resp.read().decode())
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return series[(name, tuple(sorted({"provider": "claude", **labels}.items())))]

    assert value("meridian_provider_window_utilization", window="five_hour") == 0.42
    assert value("meridian_provider_window_utilization", window="seven_day") == 0.91
    assert value("meridian_provider_window_resets_at_seconds", window="five_hour") == now + 3600
    assert value("meridian_provider_processes", state="busy") == 0
    assert value("meridian_provider_processes", state="idle") == 1  # kept for the next turn
    assert value("meridian_provider_continuations_total", outcome="miss") == 0


def _settles(condition: Callable[[], bool], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _get(url: str, key: str | None = None) -> Any:
    """JSON from a GET, whatever the status (/ready answers 503 when not ready)."""
    req = urllib.request.Request(url, headers={"x-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())
