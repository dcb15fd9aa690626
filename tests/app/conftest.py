from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway


def two_upstreams(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    """Aliases on both families: gpt-* on the OpenAI fake, claude-* on the Anthropic fake."""
    return {
        "providers": {
            "oai": {"type": "openai", "api_key": "sk-upstream-openai", "base_url": openai_url},
            "ant": {"type": "anthropic", "api_key": "sk-upstream-anthropic", "base_url": anthropic_url},
        },
        "models": {
            "gpt-test": {"provider": "oai", "model": "gpt-4o-mini"},
            "o3-test": {"provider": "oai", "model": "o3-mini"},
            "claude-test": {"provider": "ant", "model": "claude-haiku-4-5"},
            "fallback-test": [
                {"provider": "ant", "model": "claude-sonnet-4-6"},
                {"provider": "oai", "model": "gpt-4o"},
            ],
        },
    }


@pytest.fixture
def gateway(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[Gateway]:
    with Gateway.start(two_upstreams(fake_openai.url, fake_anthropic.url), tmp_path) as gw:
        yield gw


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Gateway]]:
    started: list[Gateway] = []

    def start(raw: dict[str, Any]) -> Gateway:
        gw = Gateway.start(raw, tmp_path)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
