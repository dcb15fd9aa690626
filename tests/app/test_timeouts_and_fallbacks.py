"""Timeouts, fallbacks and retries do what the config says, on both paths, through the
official SDKs, and every attempt is on record (ledger rows, metrics, the log)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway

MSG: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def start(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def go(models: dict[str, Any], **sections: Any) -> Gateway:
        timeouts = sections.pop("timeouts", {})
        raw = {
            "providers": {
                "oai": {"type": "openai", "api_key": "sk-o", "base_url": fake_openai.url,
                        "timeouts": timeouts.get("oai", {})},
                "ant": {"type": "anthropic", "api_key": "sk-a", "base_url": fake_anthropic.url,
                        "timeouts": timeouts.get("ant", {})},
            },
            "models": models,
            **sections,
        }  # fmt: skip
        gw = Gateway.start(raw, tmp_path / str(len(started)))
        started.append(gw)
        return gw

    yield go
    for gw in started:
        gw.stop()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


def usage_rows(gw: Gateway, n: int) -> list[dict[str, Any]]:
    store = gw.built.runtime.store
    assert store is not None
    end = time.monotonic() + 10
    while time.monotonic() < end:
        rows = [dict(r) for r in store.query("SELECT * FROM usage ORDER BY id")]
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {n} usage rows, got {len(rows)}")


A = {"provider": "ant", "model": "claude-haiku-4-5"}
O = {"provider": "oai", "model": "gpt-4o-mini"}  # noqa: E741


# ------------------------------------------------------------------ per-provider timeouts


def test_first_byte_s_is_the_providers_own(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    """A 2 s provider timeout let a 4 s answer through before: not any more."""
    gw = start({"m": O}, timeouts={"oai": {"first_byte_s": 0.3}}, router={"retries": 0})
    fake_openai.reply_text("late", headers_delay_s=3)
    with pytest.raises(openai.APIStatusError) as info:
        oai(gw).chat.completions.create(model="m", messages=MSG)
    assert info.value.status_code == 504
    assert "providers.oai.timeouts.first_byte_s" in info.value.message
    row = usage_rows(gw, 1)[0]
    assert (row["status"], row["error_type"], row["provider"]) == (504, "timeout", "oai")


@pytest.mark.parametrize("alias", ["ant-stream", "oai-stream"])
def test_idle_s_ends_a_stalled_stream_with_an_error_event(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    alias: str,
) -> None:  # fmt: skip
    gw = start(
        {"ant-stream": A, "oai-stream": O},
        timeouts={"oai": {"idle_s": 0.4}, "ant": {"idle_s": 0.4}},
    )
    for fake in (fake_openai, fake_anthropic):
        fake.reply_text("one two three four five", piece_size=4, stall_at=4, stall_s=30)
    with ant(gw).messages.stream(model=alias, max_tokens=50, messages=MSG) as stream:
        got = ""
        with pytest.raises(anthropic.APIStatusError) as info:
            for text in stream.text_stream:
                got += text
    assert got  # the start of the answer came through before the stall
    assert "sent nothing for 0.4 s (timeouts.idle_s)" in str(info.value)


def test_the_call_deadline_applies_to_streams(
    start: Callable[..., Gateway], fake_anthropic: FakeAnthropic
) -> None:
    """request_timeout_s was ignored by streams (6 s let them run 36 s)."""
    gw = start({"m": A}, server={"request_timeout_s": 1.0})
    fake_anthropic.reply_slow(0.1, text="tick " * 100, piece_size=5)  # ~10 s in all
    chunks = []
    with pytest.raises(openai.APIError) as info:
        stream = oai(gw).chat.completions.create(model="m", messages=MSG, stream=True)
        for chunk in stream:
            chunks.append(chunk)
    assert chunks and "server.request_timeout_s" in str(info.value)
    assert fake_anthropic.last.ended.wait(5) and fake_anthropic.last.outcome != "completed"


def test_an_alias_may_have_its_own_deadline(
    start: Callable[..., Gateway], fake_anthropic: FakeAnthropic
) -> None:
    gw = start(
        {"quick": {"deployments": [A], "timeout_s": 0.5, "retries": 0}, "slow": A},
        server={"request_timeout_s": 30},
    )
    fake_anthropic.reply_text("late", headers_delay_s=2)
    with pytest.raises(anthropic.APIStatusError) as info:
        ant(gw).messages.create(model="quick", max_tokens=5, messages=MSG)
    assert info.value.status_code == 504
    fake_anthropic.reply_text("in time", headers_delay_s=1)
    done = ant(gw).messages.create(model="slow", max_tokens=5, messages=MSG)
    assert done.content[0].text == "in time"  # type: ignore[union-attr]


# ------------------------------------------------------------------ fallbacks


@pytest.mark.parametrize("stream", [False, True])
def test_a_timeout_falls_back_within_the_deadline(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    stream: bool,
) -> None:  # fmt: skip
    """One asyncio.timeout covered every attempt: the first deployment spent the whole
    budget and there was no fallback. Now each gets its share of what is left."""
    gw = start({"sturdy": [A, O]}, server={"request_timeout_s": 2.0})
    fake_anthropic.reply_text("too late", headers_delay_s=30)
    fake_openai.reply_text("from the fallback")
    if stream:
        with ant(gw).messages.stream(model="sturdy", max_tokens=20, messages=MSG) as s:
            text = s.get_final_text()
    else:
        answer = ant(gw).messages.create(model="sturdy", max_tokens=20, messages=MSG)
        text = answer.content[0].text  # type: ignore[union-attr]
    assert text == "from the fallback"
    failed, served = usage_rows(gw, 2)
    assert (failed["final"], failed["provider"], failed["status"], failed["error_type"]) == (
        0, "ant", 504, "timeout",
    )  # fmt: skip
    assert (served["final"], served["provider"], served["status"]) == (1, "oai", 200)
    assert failed["request_id"] == served["request_id"]
    assert fake_anthropic.last.ended.wait(5) and fake_anthropic.last.outcome == "cancelled"


@pytest.mark.parametrize("client", ["anthropic", "openai"])
def test_an_error_first_stream_falls_back_on_the_pass_through_path(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic,
    client: str,
) -> None:  # fmt: skip
    """Anthropic's usual overload signal: 200, then an error event before any content."""
    gw = start({"sturdy": [A, O]})
    fake_anthropic.reply_stream_error(after=0, type="overloaded_error", message="Overloaded")
    fake_openai.reply_text("from the fallback")
    if client == "anthropic":
        with ant(gw).messages.stream(model="sturdy", max_tokens=20, messages=MSG) as s:
            text = s.get_final_text()
            served_by = s.response.headers["x-meridian-deployment"]
    else:
        raw = oai(gw).chat.completions.with_raw_response.create(
            model="sturdy", messages=MSG, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        served_by = raw.headers["x-meridian-deployment"]
    assert text == "from the fallback"
    assert served_by == "oai/gpt-4o-mini"
    assert usage_rows(gw, 2)[0]["error_type"] == "overloaded"


def test_a_stream_that_fails_after_it_began_is_not_retried(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    gw = start({"sturdy": [A, O]})
    fake_anthropic.reply_stream_error(after=4, type="overloaded_error", message="Overloaded")
    with pytest.raises(anthropic.APIStatusError), ant(gw).messages.stream(
        model="sturdy", max_tokens=20, messages=MSG
    ) as s:
        s.get_final_text()
    assert fake_openai.requests == []  # bytes had reached the client: no second answer


def test_the_answer_names_the_deployment_that_served_it(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI
) -> None:
    gw = start({"m": O})
    raw = oai(gw).chat.completions.with_raw_response.create(model="m", messages=MSG)
    assert raw.headers["x-meridian-deployment"] == "oai/gpt-4o-mini"


# ------------------------------------------------------------------ retries


def test_retries_honour_retry_after(
    start: Callable[..., Gateway], fake_anthropic: FakeAnthropic
) -> None:
    gw = start({"m": A})
    fake_anthropic.reply_rate_limited(retry_after=0.3)
    fake_anthropic.reply_overloaded()
    fake_anthropic.reply_text("third time lucky")
    answer = ant(gw).messages.create(model="m", max_tokens=5, messages=MSG)
    assert answer.content[0].text == "third time lucky"  # type: ignore[union-attr]
    assert len(fake_anthropic.requests) == 3
    rows = usage_rows(gw, 3)
    assert [(r["final"], r["status"]) for r in rows] == [(0, 429), (0, 529), (1, 200)]


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        (400, {}),
        (401, {}),
        (403, {}),
        (429, {"type": "insufficient_quota", "code": "insufficient_quota"}),
    ],
)
def test_never_retried(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, status: int, extra: dict[str, str]
) -> None:
    gw = start({"m": O})
    fake_openai.reply_error(status, "no", **extra)
    with pytest.raises(openai.APIStatusError):
        oai(gw).chat.completions.create(model="m", messages=MSG)
    assert len(fake_openai.requests) == 1


def test_retries_stop_at_the_configured_count_and_budget(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    gw = start(
        {"one": {"deployments": [O], "retries": 1}, "patient": A},
        router={"retries": 2, "retry_budget_s": 1.0},
    )
    for _ in range(5):
        fake_openai.reply_overloaded()
    with pytest.raises(openai.APIStatusError):
        oai(gw).chat.completions.create(model="one", messages=MSG)
    assert len(fake_openai.requests) == 2  # the alias's own retries: 1
    fake_anthropic.reply_rate_limited(retry_after=5)  # longer than the 1 s budget
    with pytest.raises(anthropic.RateLimitError) as info:
        ant(gw).messages.create(model="patient", max_tokens=5, messages=MSG)
    assert len(fake_anthropic.requests) == 1
    assert info.value.response.headers["retry-after"] == "5"


# ------------------------------------------------------------------ cooldowns


def test_a_failing_deployment_is_skipped_then_probed(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    gw = start(
        {"sturdy": [A, O], "ant-only": A},
        router={"retries": 0, "cooldown": {"failures": 2, "seconds": 0.5}},
    )
    for _ in range(2):
        fake_anthropic.reply_server_error()
    for _ in range(2):
        assert ant(gw).messages.create(model="sturdy", max_tokens=5, messages=MSG).content
    assert len(fake_anthropic.requests) == 2
    # Open: skipped without a request, straight to the fallback.
    ant(gw).messages.create(model="sturdy", max_tokens=5, messages=MSG)
    assert len(fake_anthropic.requests) == 2
    # An alias whose only deployment is open is refused at once, with when to come back.
    with pytest.raises(anthropic.APIStatusError) as info:
        ant(gw).messages.create(model="ant-only", max_tokens=5, messages=MSG)
    assert info.value.status_code == 529 and "cooling down" in info.value.message
    assert int(info.value.response.headers["retry-after"]) >= 1
    ready = gw_json(gw, "/ready")
    assert ready["servable"] == ["sturdy"]
    assert ready["deployments"][0]["state"] == "open"
    assert "meridian_deployment_state{model=\"claude-haiku-4-5\",provider=\"ant\"} 2.0" in (
        gw_text(gw, "/metrics")
    )
    # After the cooldown one call probes it; it answers, and the circuit closes.
    time.sleep(0.6)
    answer = ant(gw).messages.create(model="ant-only", max_tokens=5, messages=MSG)
    assert answer.content and len(fake_anthropic.requests) == 3
    assert gw_json(gw, "/ready")["deployments"] == []


def test_a_reported_reset_time_is_honoured(
    start: Callable[..., Gateway], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    """An exhausted quota that says when it resets: skipped until then, at once."""
    gw = start({"sturdy": [O, A]})
    fake_openai.reply_error(
        429, "quota", type="insufficient_quota", code="insufficient_quota", retry_after=3600
    )
    for _ in range(3):
        ant(gw).messages.create(model="sturdy", max_tokens=5, messages=MSG)
    assert len(fake_openai.requests) == 1 and len(fake_anthropic.requests) == 3
    state = gw_json(gw, "/ready")["deployments"][0]
    assert state["state"] == "open" and state["retry_in_s"] > 3000


def gw_json(gw: Gateway, path: str) -> Any:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(gw.url + path, headers={"x-api-key": gw.key})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def gw_text(gw: Gateway, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(gw.url + path, timeout=10) as resp:
        return str(resp.read().decode())
