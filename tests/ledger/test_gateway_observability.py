"""The ledger, metrics and logs behind a real gateway, driven by the official SDKs.

A burst of concurrent requests on both APIs (streamed and not) against loopback fake
upstreams; then a graceful stop. Every request is in the ledger exactly once, with the
tokens the fake upstream reported; /metrics and the JSON log lines agree.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from ledgerhelpers import MASTER_KEY, LoopbackServer, settings, upstreams, wire
from prometheus_client.parser import text_string_to_metric_families

from fakes import FakeAnthropic, FakeOpenAI
from meridian import logs
from meridian.storage import make_store

N = 40


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("INFO", out)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


async def burst(url: str) -> None:
    oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    ant = anthropic.AsyncAnthropic(base_url=url, api_key=MASTER_KEY, max_retries=0, timeout=30)

    async def one(i: int) -> None:
        text = f"request {i} " + "x" * i
        if i % 2 == 0:
            messages = [{"role": "user", "content": text}]
            if i % 4 == 0:
                await oai.chat.completions.create(model="gpt-test", messages=messages)  # type: ignore[arg-type,list-item]
            else:
                stream = await oai.chat.completions.create(
                    model="gpt-test", messages=messages, stream=True,  # type: ignore[arg-type,list-item]
                    stream_options={"include_usage": True},
                )  # fmt: skip
                async for _ in stream:
                    pass
        else:
            kwargs = {"model": "claude-test", "max_tokens": 64,
                      "messages": [{"role": "user", "content": text}]}  # fmt: skip
            if i % 4 == 1:
                await ant.messages.create(**kwargs)  # type: ignore[arg-type]
            else:
                async with ant.messages.stream(**kwargs) as s:  # type: ignore[arg-type]
                    await s.get_final_message()

    try:
        await asyncio.gather(*(one(i) for i in range(N)))
    finally:
        await oai.close()
        await ant.close()


def test_burst_is_recorded_exactly(
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    log_stream: io.StringIO,
    store_url: str,
) -> None:
    raw = {**upstreams(fake_openai.url, fake_anthropic.url), "storage": {"url": store_url}}
    conf = settings(raw, tmp_path)
    wired = wire(conf)
    with LoopbackServer(wired.app) as server:
        asyncio.run(asyncio.wait_for(burst(server.url), 60))
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as resp:
            scraped = resp.read().decode()
    # The server has stopped: the lifespan flushed the ledger and closed the store.

    replies = [r.reply for r in fake_openai.requests + fake_anthropic.requests if r.reply]
    assert len(replies) == N
    store = make_store(store_url).open()
    try:
        row = store.query(
            "SELECT COUNT(*), COUNT(DISTINCT request_id), SUM(input_tokens), SUM(output_tokens), "
            "SUM(stream), COUNT(CASE WHEN status = 200 THEN 1 END), COUNT(cost_usd) FROM usage"
        )[0]
        per_alias = dict(store.query("SELECT alias, COUNT(*) FROM usage GROUP BY alias"))
    finally:
        store.close()
    assert row[0] == row[1] == N
    assert row[2] == sum(r.input_tokens or 0 for r in replies) > 0
    assert row[3] == sum(r.output_tokens or 0 for r in replies) > 0
    assert row[4] == N // 2
    assert row[5] == N
    assert row[6] == N  # gpt-4o-mini and claude-haiku-4-5 both have list prices
    assert per_alias == {"gpt-test": N // 2, "claude-test": N // 2}

    # /metrics, scraped before the stop, counted the same calls.
    requests = 0.0
    for family in text_string_to_metric_families(scraped):
        if family.name == "meridian_requests":
            requests = sum(s.value for s in family.samples if s.name.endswith("_total"))
    assert requests == N

    # One JSON line per request, and no key material anywhere in the log.
    text = log_stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    request_lines = [line for line in lines if line.get("logger") == "meridian.request"]
    assert len(request_lines) == N
    assert {line["key"] for line in request_lines} == {"master"}
    assert MASTER_KEY not in text
    assert "sk-upstream" not in text
    assert "request 7 " not in text  # prompt text stays out of the logs
