"""The bounds on live processes, each set by a config key: how long an idle process waits
(``continuation_ttl_s``), how many processes there are (``max_concurrency``, idle ones
included and evicted first), how much memory idle ones hold (``live_memory_mb``), and warm
spares (``warm_spares``). Real CLIs against the fake upstream; counts from the pool and
/proc."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from claude_helpers import cli_pids, eventually, make_config, run

from fakes import FakeAnthropic
from meridian.model import Message, Request, Response, TextBlock
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider
from meridian.providers.claude.slots import Slots

pytestmark = pytest.mark.slow

Chat = Callable[..., Any]


@pytest.fixture
async def make(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> AsyncIterator[Callable[..., ClaudeCodeProvider]]:
    made: list[ClaudeCodeProvider] = []

    def build(**fields: Any) -> ClaudeCodeProvider:
        provider = ClaudeCodeProvider("claude", make_config(tmp_path, fake_anthropic, **fields))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


async def _turns(
    provider: ClaudeCodeProvider, caller: str, *asks: str, system: str = "Be brief."
) -> list[Response]:
    """A conversation of ``asks``, each request carrying the answers so far."""
    messages: tuple[Message, ...] = ()
    answers = []
    for text in asks:
        messages += (Message("user", (TextBlock(text),)),)
        request = Request(model="claude-haiku-4-5", messages=messages, system=(TextBlock(system),))
        _, answer = await run(provider, request, CallContext("t", caller=caller))
        messages += (Message("assistant", answer.content),)
        answers.append(answer)
    return answers


async def test_without_continuation_every_turn_spawns(
    make: Callable[..., ClaudeCodeProvider],
) -> None:
    provider = make(continuation_ttl_s=0)
    await _turns(provider, "key:1", "one", "two")
    status = provider.status()["processes"]
    assert (status["spawns"], status["hits"], status["idle"]) == (2, 0, 0)
    assert cli_pids() == []


async def test_an_idle_process_is_stopped_after_the_ttl(
    make: Callable[..., ClaudeCodeProvider],
) -> None:
    provider = make(continuation_ttl_s=0.5)
    await _turns(provider, "key:1", "one")
    (pid,) = cli_pids()
    assert provider.status()["processes"]["idle"] == 1
    # (the loop must run for the timer: an async wait, not wait_gone's sleep)
    await eventually(lambda: pid not in cli_pids() and provider.processes.processes == 0)
    assert provider.status()["processes"]["evictions"] == {"ttl": 1}
    await _turns(provider, "key:1", "one", "two")  # its next turn: a fresh process
    assert provider.status()["processes"]["hits"] == 1  # (the second turn of this one)


async def test_a_new_request_takes_the_slot_of_the_longest_idle_process(
    make: Callable[..., ClaudeCodeProvider],
) -> None:
    provider = make(max_concurrency=1)
    await _turns(provider, "key:1", "alice one")
    await _turns(provider, "key:2", "bob one")  # the only slot is alice's idle process
    status = provider.status()["processes"]
    assert status["evictions"] == {"slot": 1} and status["idle"] == 1
    assert len(cli_pids()) == 1
    await _turns(provider, "key:1", "alice one", "alice two")
    assert provider.status()["processes"]["hits"] == 1  # only alice's own new second turn


async def test_idle_processes_stay_under_the_memory_cap(
    make: Callable[..., ClaudeCodeProvider],
) -> None:
    provider = make(live_memory_mb=1)  # less than any CLI holds
    await _turns(provider, "key:1", "one")
    status = provider.status()["processes"]
    assert status["evictions"] == {"memory": 1} and status["idle"] == 0
    assert cli_pids() == []


async def test_a_warm_spare_answers_the_next_first_turn(
    make: Callable[..., ClaudeCodeProvider], fake_anthropic: FakeAnthropic
) -> None:
    provider = make(warm_spares=1, max_concurrency=3)
    await _turns(provider, "key:1", "first conversation")
    await eventually(lambda: provider.status()["processes"]["spares"] == 1, within_s=30)
    fake_anthropic.reply_text("from the spare")
    (answer,) = await _turns(provider, "key:1", "second conversation")
    assert answer.content == (TextBlock("from the spare"),)
    status = provider.status()["processes"]
    assert status["spare_hits"] == 1
    # Another key, or other options, never get it.
    await eventually(lambda: provider.status()["processes"]["spares"] == 1, within_s=30)
    await _turns(provider, "key:2", "third conversation")
    await _turns(provider, "key:1", "fourth", system="Be verbose.")
    assert provider.status()["processes"]["spare_hits"] == 1


async def test_a_freed_slot_goes_to_the_waiter_not_a_newcomer() -> None:
    slots = Slots(limit=1, max_queue=4, timeout_s=5, name="claude")
    assert slots.take()
    waiting = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.release()  # passed straight on
    assert not slots.take()  # a request arriving meanwhile cannot have it
    await waiting
    assert slots.used == 1
    slots.release()
    assert slots.used == 0 and slots.take()
