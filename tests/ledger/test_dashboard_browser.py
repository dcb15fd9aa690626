"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Real requests with three client keys go through a real gateway to loopback fake upstreams;
then the page must refuse a wrong key, show the charts with those requests for the master
key, keep the key for the tab only, and accept it from the URL fragment. The screenshot it
takes becomes ``docs/dashboard.png`` with ``MERIDIAN_UPDATE_DOCS=1``.

Needs ``scripts/install-browser`` (CI runs it). Without the browser the test is skipped
locally and fails under CI.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from ledgerhelpers import (
    MASTER_KEY,
    LoopbackServer,
    create_keys,
    rec,
    settings,
    upstreams,
    wire,
)

from fakes import FakeAnthropic, FakeOpenAI, Reply
from meridian.ledger import Ledger
from meridian.model import Usage
from meridian.prices import PriceTable
from meridian.storage import make_store

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"

if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: CI must run scripts/install-browser")
    pytest.skip("no system chromium: run scripts/install-browser", allow_module_level=True)

from playwright import sync_api  # noqa: E402  (a test dependency: never skipped)


def traffic(url: str, keys: dict[str, str], fake_openai: FakeOpenAI) -> int:
    """Requests from three clients on both APIs; returns how many were sent."""
    sent = 0
    plan = [("pulse", "gpt-test", 9), ("notes", "claude-test", 6), ("ci-bot", "gpt-test", 4),
            ("ci-bot", "claude-test", 3), ("notes", "gpt-test", 2)]  # fmt: skip
    for key_name, alias, count in plan:
        secret = keys[key_name]
        for i in range(count):
            prompt = [{"role": "user", "content": f"{key_name} asks question {i} " * (i + 1)}]
            if alias == "gpt-test":
                client = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0)
                with client:
                    stream = client.chat.completions.create(
                        model=alias,
                        messages=prompt,
                        stream=bool(i % 2),  # type: ignore[arg-type]
                    )
                    if i % 2:
                        for _ in stream:  # type: ignore[union-attr]
                            pass
            else:
                with anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0) as c:
                    c.messages.create(model=alias, max_tokens=200, messages=prompt)  # type: ignore[arg-type]
            sent += 1
    # Two upstream failures that a retry gets past (each a "retried" row in recent errors),
    # then a call that fails every attempt: its deployment's circuit opens.
    fake_openai.reply(Reply(status=500, error_type="server_error", error_message="upstream broke"))
    fake_openai.reply(
        Reply(status=429, error_type="rate_limit_exceeded", error_message="slow down")
    )
    client = openai.OpenAI(base_url=url + "/v1", api_key=keys["pulse"], max_retries=0)
    with client:
        for _ in range(2):
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            sent += 1
        for _ in range(3):
            fake_openai.reply(Reply(status=503, error_type="server_error", error_message="down"))
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
        sent += 1
    return sent


def subscription(config_dir: Path, upstream: str) -> dict[str, Any]:
    """A Claude subscription provider (the real bundled CLI) with a stored claude.ai login."""
    config_dir.mkdir(parents=True)
    login = {"accessToken": "sk-ant-oat01-fake", "refreshToken": "sk-ant-ort01-fake",
             "expiresAt": int((time.time() + 3600) * 1000), "subscriptionType": "max",
             "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"]}  # fmt: skip
    (config_dir / ".credentials.json").write_text(json.dumps({"claudeAiOauth": login}))
    return {"type": "claude-code", "config_dir": str(config_dir),
            "env": {"ANTHROPIC_BASE_URL": upstream}}  # fmt: skip


def subscription_call(url: str, secret: str, fake: FakeAnthropic) -> int:
    """One answer through the CLI; the upstream reports the subscription's usage windows."""
    now = int(time.time())
    unified = "anthropic-ratelimit-unified-"
    fake.reply_text(
        "From the subscription.",
        headers={unified + "status": "allowed", unified + "representative-claim": "seven_day",
                 unified + "5h-status": "allowed", unified + "5h-utilization": "0.42",
                 unified + "5h-reset": str(now + 3600), unified + "7d-status": "allowed",
                 unified + "7d-utilization": "0.91", unified + "7d-reset": str(now + 86400),
                 unified + "reset": str(now + 86400)},
    )  # fmt: skip
    with anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0) as client:
        client.messages.create(
            model="claude-sub", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    return 1


def seed_history(db: Path) -> int:
    """A day of older traffic (2 to 24 hours ago) so the 24h charts look like a real day;
    the assertions about the real requests use the last hour, which this leaves empty."""
    now = time.time()
    plan = [("pulse", "gpt-test", "oai", "gpt-4o-mini"), ("notes", "claude-test", "ant",
            "claude-haiku-4-5"), ("ci-bot", "gpt-test", "oai", "gpt-4o-mini")]  # fmt: skip
    records = []
    for slot in range(8, 96):  # 15-minute slots, newest first
        ts = now - slot * 900
        busy = 1 + math.sin(slot / 96 * 2 * math.pi) ** 2 * 4
        for j, (key, alias, provider, model) in enumerate(plan):
            for n in range(int(busy * (3 - j) / 2)):
                r = rec(
                    len(records),
                    started_at=ts - n * 7,
                    key_name=key,
                    alias=alias,
                    provider=provider,
                    upstream_model=model,
                    usage=Usage(300 + 40 * n, 60 + 11 * j),
                    latency_ms=400.0 + 90 * j + 13 * n,
                )
                records.append(r)

    async def write() -> None:
        store = make_store(str(db)).open()
        ledger = Ledger(store, PriceTable())
        for r in records:
            ledger.record(r)
        await ledger.aclose()
        store.close()

    # Its own thread: Playwright's sync API keeps an event loop running in this one.
    worker = threading.Thread(target=lambda: asyncio.run(write()))
    worker.start()
    worker.join(30)
    return len(records)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


def test_dashboard_in_chromium(
    browser: Any, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = upstreams(fake_openai.url, fake_anthropic.url)
    raw["providers"]["sub"] = subscription(tmp_path / "claude", fake_anthropic.url)
    raw["models"]["claude-sub"] = {"provider": "sub", "model": "claude-haiku-4-5"}
    conf = settings(raw, tmp_path)
    keys = create_keys(conf.storage.path, "pulse", "notes", "ci-bot")
    seeded = seed_history(conf.storage.path)
    wired = wire(conf)
    with LoopbackServer(wired.app) as server:
        sent = traffic(server.url, keys, fake_openai)
        sent += subscription_call(server.url, keys["notes"], fake_anthropic)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(server.url + "/ui")

        # No key: the login form, and nothing else.
        page.wait_for_selector("#login-form", state="visible")
        assert page.is_hidden("#dashboard")
        page.fill("#key-input", keys["pulse"])  # a client key is not the master key
        page.click("#login-form button[type=submit]")
        page.wait_for_function(
            "() => document.querySelector('#login-error').textContent.length > 0"
        )
        assert "not accepted" in page.inner_text("#login-error")
        assert page.is_hidden("#dashboard")
        assert page.evaluate("sessionStorage.getItem('meridian.key')") is None
        assert page.evaluate("fetch('ui/api/overview').then(r => r.status)") == 401

        # The master key: charts with the requests just made. The ledger writes every 0.5 s;
        # the page's Refresh button asks again until the last request is in.
        page.fill("#key-input", MASTER_KEY)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#dashboard", state="visible")
        page.wait_for_function("() => document.body.dataset.loaded")
        page.evaluate("document.body.dataset.loaded = ''")
        page.select_option("#window", "1h")
        for _ in range(40):
            page.wait_for_function("() => document.body.dataset.loaded")
            total = page.get_attribute("#chart-requests-alias", "data-total")
            if total == str(sent):
                break
            page.evaluate("document.body.dataset.loaded = ''")
            page.wait_for_timeout(250)
            page.click("#refresh")
        assert page.get_attribute("#chart-requests-alias", "data-total") == str(sent)
        assert page.get_attribute("#chart-requests-key", "data-total") == str(sent)
        assert int(page.get_attribute("#chart-tokens-alias", "data-total") or 0) > 0
        assert page.locator("#chart-requests-alias svg rect.bar").count() > 0
        assert page.locator("#chart-tokens-key svg rect.bar").count() > 0
        legend = page.inner_text("#chart-requests-alias .legend")
        assert "gpt-test" in legend and "claude-test" in legend
        key_legend = page.inner_text("#chart-requests-key .legend")
        assert all(name in key_legend for name in ("pulse", "notes", "ci-bot"))
        assert "ready" in page.inner_text("#providers")
        # The subscription's usage windows and its live CLI process (kept for the next turn).
        windows = page.inner_text("#windows")
        assert "five-hour" in windows and "42%" in windows
        assert "seven-day" in windows and "91%" in windows
        processes = page.locator("#processes tbody tr").first.locator("td")
        assert processes.nth(0).inner_text() == "sub"
        assert [processes.nth(i).inner_text() for i in (1, 2, 8)] == ["0", "1", "1"]
        keys_table = page.inner_text("#keys")
        assert "pulse" in keys_table and "ci-bot" in keys_table
        errors = page.inner_text("#errors")
        assert "500" in errors and "429" in errors and "retried" in errors
        deployments = page.inner_text("#deployments")
        assert "oai/gpt-4o-mini" in deployments and "open" in deployments
        assert "all" in page.inner_text("#latency")
        assert page.inner_text("#cards").count(str(sent)) >= 1

        # The whole day, older traffic included, for the screenshot in the docs.
        page.evaluate("document.body.dataset.loaded = ''")
        page.select_option("#window", "24h")
        page.wait_for_function("() => document.body.dataset.loaded")
        assert page.get_attribute("#chart-requests-alias", "data-total") == str(sent + seeded)
        # Tests leave tracked files alone unless asked: MERIDIAN_UPDATE_DOCS=1 refreshes it.
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("MERIDIAN_UPDATE_DOCS") == "1":
            shutil.copyfile(shot, DOCS / "dashboard.png")

        # The key lasts for the tab: a reload stays in; logging out forgets it.
        page.reload()
        page.wait_for_selector("#dashboard", state="visible")
        page.click("#logout")
        page.wait_for_selector("#login-form", state="visible")
        assert page.evaluate("sessionStorage.getItem('meridian.key')") is None
        context.close()

        # A new tab knows nothing; a key in the URL fragment signs in and leaves the URL.
        fresh = browser.new_context()
        page = fresh.new_page()
        page.set_default_timeout(15_000)
        page.goto(server.url + "/ui")
        page.wait_for_selector("#login-form", state="visible")
        page.goto(server.url + "/ui#key=" + MASTER_KEY)
        page.reload()  # a fragment-only navigation does not reload the page
        page.wait_for_selector("#dashboard", state="visible")
        assert "#" not in page.url
        assert MASTER_KEY not in page.url
        fresh.close()
