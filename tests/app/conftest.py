from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeAnthropic, FakeOpenAI
from harness import Gateway, two_upstreams


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
