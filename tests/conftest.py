"""Fixtures shared by every test suite. Keep this file small: one fixture, one purpose.

``tests/`` is on ``sys.path`` (pytest's rootdir-less ``prepend`` import mode puts this
file's directory there), so test modules import the fakes as ``from fakes import ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes import FakeAnthropic, FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A loopback OpenAI-compatible server; configure ``base_url=fake_openai.url``."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A loopback Anthropic Messages server; configure ``base_url=fake_anthropic.url``."""
    with FakeAnthropic() as fake:
        yield fake
