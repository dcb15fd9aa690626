"""Every per-key limit under 50 concurrent calls, streaming and not, through the official
SDK over real HTTP: no limit is exceeded by more than one call's worth (calls reserve their
estimated cost when admitted; here each call uses a few tokens more than estimated). Each
runs with the limits in memory and with them in Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway, two_upstreams

N = 50
PER_CALL = 30  # tokens the fake reports for every call: 10 in, 20 out (= max_tokens)


@pytest.fixture(params=["memory", "redis"])
def gateway(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> Any:
    """Limits in memory, or shared through a real Redis (limits.redis_url)."""
    raw = two_upstreams(fake_openai.url, fake_anthropic.url)
    if request.param == "redis":
        # 5 s: 50 clients share this process with the gateway (see test_replicas.py).
        raw["limits"] = {"redis_url": request.getfixturevalue("redis_url"), "timeout_s": 5}
    with Gateway.start(raw, tmp_path) as gw:
        yield gw


def new_key(gw: Gateway, **limits: Any) -> str:
    import json
    import urllib.request

    req = urllib.request.Request(
        gw.url + "/admin/keys",
        data=json.dumps({"name": f"k{time.monotonic_ns()}", **limits}).encode(),
        headers={"authorization": f"Bearer {gw.key}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["secret"])


def burst(gw: Gateway, key: str, *, stream: bool) -> tuple[int, int, list[openai.RateLimitError]]:
    """N calls at once; (answered, refused, the refusals)."""

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)

    def one(_: int) -> Any:
        try:
            if stream:
                chunks = client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "hi"}],
                    max_tokens=20, stream=True,
                )  # fmt: skip
                for _ in chunks:
                    pass
            else:
                client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "hi"}],
                    max_tokens=20,
                )  # fmt: skip
        except openai.RateLimitError as err:
            return err
        return None

    with client, ThreadPoolExecutor(N) as pool:
        results = list(pool.map(one, range(N)))
    refused = [r for r in results if r is not None]
    return N - len(refused), len(refused), refused


def used(gw: Gateway, key_prefix: str) -> int:
    """Tokens the key's answered calls used, from the ledger."""
    rows = gw.usage_rows("key_name LIKE ? AND status = 200", (key_prefix + "%",))
    return sum(r["input_tokens"] + r["output_tokens"] for r in rows)


def every_reply(fake: FakeOpenAI, **fields: Any) -> None:
    for _ in range(N):
        fake.reply_text("twenty tokens of text", input_tokens=10, output_tokens=20, **fields)


@pytest.mark.parametrize("stream", [False, True])
def test_token_budget(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    every_reply(fake_openai, delay_s=0.05 if stream else 0.0, headers_delay_s=0.3)
    key = new_key(gateway, budget_tokens_month=100)
    answered, refused, errors = burst(gateway, key, stream=stream)
    assert 1 <= answered <= 4 and answered + refused == N
    assert used(gateway, "k") <= 100 + PER_CALL
    # The concurrent refusals say calls in flight hold the budget (worth a retry soon).
    assert any("in flight" in str(e) for e in errors)
    # Once it is all spent, the refusal is final.
    answered, _, errors = burst(gateway, key, stream=stream)
    assert answered == 0 or used(gateway, "k") <= 100 + PER_CALL
    assert all(e.response.headers.get("x-should-retry") == "false" for e in errors[-5:])


@pytest.mark.parametrize("stream", [False, True])
def test_tokens_per_minute(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    every_reply(fake_openai, headers_delay_s=0.3)
    key = new_key(gateway, tpm=100)
    answered, refused, _ = burst(gateway, key, stream=stream)
    assert 1 <= answered <= 4 and answered + refused == N
    assert used(gateway, "k") <= 100 + PER_CALL


@pytest.mark.parametrize("stream", [False, True])
def test_usd_budget(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    every_reply(fake_openai, headers_delay_s=0.3)
    # gpt-4o-mini: 10 in + 20 out is $0.0000135 a call; the estimate (a little input and
    # max_tokens 20) is close to it.
    key = new_key(gateway, budget_usd_month=0.0001)
    answered, refused, _ = burst(gateway, key, stream=stream)
    assert 1 <= answered <= 8 and answered + refused == N
    spent = sum(r["cost_usd"] or 0 for r in gateway.usage_rows("key_name LIKE 'k%'"))
    assert spent <= 0.0001 + 0.0000135


@pytest.mark.parametrize("stream", [False, True])
def test_requests_per_minute(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    every_reply(fake_openai)
    key = new_key(gateway, rpm=10)
    answered, refused, _ = burst(gateway, key, stream=stream)
    assert (answered, refused) == (10, 40)


@pytest.mark.parametrize("stream", [False, True])
def test_max_parallel(gateway: Gateway, fake_openai: FakeOpenAI, stream: bool) -> None:
    """Slow answers: all 50 arrive while the first ones still run."""
    every_reply(fake_openai, headers_delay_s=2.0)
    key = new_key(gateway, max_parallel=3)
    answered, refused, errors = burst(gateway, key, stream=stream)
    assert (answered, refused) == (3, 47)
    assert all("max_parallel 3" in str(e) for e in errors)
    assert all(e.response.headers["retry-after"] == "1" for e in errors)
