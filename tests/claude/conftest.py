"""The Claude subscription provider against the REAL bundled CLI and a loopback fake Anthropic.

Every CLI this suite starts carries ``MERIDIAN_TEST_MARK`` in its environment (through the
provider's ``env``, the only way anything reaches it), so ``cli_pids`` finds exactly ours in
/proc, and the autouse `no_orphans` fixture fails any test that leaves one behind.

A spawn costs ~0.4 CPU-s: tests here share runs where they can, and every wait is bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from claude_helpers import make_config, wait_gone

from fakes import FakeAnthropic
from meridian.config import ClaudeCodeProviderConfig
from meridian.providers.claude import ClaudeCodeProvider


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    yield
    assert wait_gone() == [], "a claude CLI process outlived its test"


@pytest.fixture
def config(tmp_path: Path, fake_anthropic: FakeAnthropic) -> ClaudeCodeProviderConfig:
    return make_config(tmp_path, fake_anthropic)


@pytest.fixture
async def provider(config: ClaudeCodeProviderConfig) -> AsyncIterator[ClaudeCodeProvider]:
    p = ClaudeCodeProvider("claude", config)
    await p.start()
    try:
        yield p
    finally:
        await p.aclose()
