"""Slots and the bounded queue, disconnects, hung CLIs, shutdown: no process outlives any of
them (the autouse fixture checks /proc after every test)."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import aclosing
from pathlib import Path

import pytest
from claude_helpers import ask, cli_pids, eventually, listing, make_config, run, wait_gone

from fakes import FakeAnthropic
from meridian.errors import MeridianError, Overloaded, Timeout
from meridian.model import BlockDelta, Event
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider

pytestmark = pytest.mark.slow

SLOW = "word " * 400  # with delay_s=0.1 per 4-character piece: minutes, if nothing stops it


async def _first_delta(provider: ClaudeCodeProvider, sink: list[Event]) -> asyncio.Task[None]:
    """Start a slow answer in a task and return once its first token arrived."""
    started = asyncio.Event()

    async def consume() -> None:
        async with aclosing(provider.stream(ask("talk"), CallContext("slow"))) as stream:
            async for event in stream:
                sink.append(event)
                if isinstance(event, BlockDelta):
                    started.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(30):
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if task.done():
        await task
    return task


async def test_over_the_limit_is_overloaded_and_the_queue_is_bounded(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(
        tmp_path, fake_anthropic, max_concurrency=1, max_queue=1, queue_timeout_s=0.5
    )
    provider = ClaudeCodeProvider("claude", config)
    await provider.start()
    fake_anthropic.reply_slow(0.1, text=SLOW)
    try:
        busy = await _first_delta(provider, [])
        assert (provider.in_flight, provider.queue_depth) == (1, 0)

        queued = asyncio.create_task(run(provider, ask("second")))
        await eventually(lambda: provider.queue_depth == 1)
        # The queue holds one: a third caller is turned away at once.
        with pytest.raises(Overloaded) as full:
            await run(provider, ask("third"))
        assert full.value.retry_after is not None and full.value.status == 529
        # The queued one gives up after queue_timeout_s.
        with pytest.raises(Overloaded) as waited:
            await queued
        assert "no CLI slot became free" in waited.value.message
        assert provider.queue_depth == 0 and provider.in_flight == 1
        assert len(cli_pids()) == 1  # only the running one was ever spawned
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
    finally:
        await provider.aclose()
    assert provider.in_flight == 0
    assert len(fake_anthropic.requests) == 1


async def test_disconnect_interrupts_at_once_and_frees_the_slot(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_slow(0.1, text=SLOW)
    events: list[Event] = []
    stream = provider.stream(ask("talk"), CallContext("t"))
    async with asyncio.timeout(30):
        async for event in stream:
            events.append(event)
            if isinstance(event, BlockDelta):
                break
    (pid,) = cli_pids()
    async with asyncio.timeout(10):
        await stream.aclose()  # what the surface does when the client goes away

    assert provider.in_flight == 0
    # The CLI is gone, and with it the upstream connection: the answer was abandoned. (Not a
    # byte count after a pause: the fake may finish one write after its client died.)
    assert wait_gone([pid], timeout=2) == []
    assert b"message_stop" not in fake_anthropic.last.sent
    assert listing(provider.config.config_dir / "sessions") in (None, [])


async def test_a_hung_cli_is_killed_at_the_request_timeout(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    config = make_config(tmp_path, fake_anthropic, request_timeout_s=2)
    provider = ClaudeCodeProvider("claude", config)
    await provider.start()
    fake_anthropic.reply_text("too late", headers_delay_s=60)
    try:
        async with asyncio.timeout(20):
            with pytest.raises(Timeout) as info:
                await run(provider, ask("hello"))
        assert info.value.status == 504
        assert provider.in_flight == 0
        assert wait_gone(timeout=2) == []
    finally:
        await provider.aclose()


async def test_aclose_stops_every_live_run(
    provider: ClaudeCodeProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_slow(0.1, text=SLOW)
    task = await _first_delta(provider, [])
    (pid,) = cli_pids()
    async with asyncio.timeout(10):
        await provider.aclose()
    assert wait_gone([pid], timeout=2) == []
    with pytest.raises((MeridianError, asyncio.CancelledError)):
        async with asyncio.timeout(10):
            await task


CHILD = """
import asyncio, signal, sys
sys.path[:0] = {paths!r}
from claude_helpers import ask
from meridian.providers.base import CallContext
from meridian.providers.claude import ClaudeCodeProvider
from meridian.config import ClaudeCodeProviderConfig

async def main():
    config = ClaudeCodeProviderConfig.model_validate_json(sys.argv[1])
    provider = ClaudeCodeProvider("claude", config)
    await provider.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def talk():
        async for event in provider.stream(ask("talk"), CallContext("child")):
            if type(event).__name__ == "BlockDelta":
                print("streaming", flush=True)
                await stop.wait()

    task = asyncio.create_task(talk())
    await stop.wait()
    await provider.aclose()  # what the app's lifespan does on SIGTERM
    task.cancel()
    print("closed", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_stopping_the_server_leaves_no_cli_behind(
    tmp_path: Path, fake_anthropic: FakeAnthropic, sig: signal.Signals
) -> None:
    """SIGTERM: the app's lifespan closes the provider. SIGKILL: nothing runs in meridian,
    and the kernel's parent-death signal takes the CLI down with it."""
    config = make_config(tmp_path, fake_anthropic)
    fake_anthropic.reply_slow(0.1, text=SLOW)
    tests = Path(__file__).parent
    script = CHILD.format(paths=[str(tests), str(tests.parent)])
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, config.model_dump_json(), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"streaming"
        (pid,) = cli_pids()
        child.send_signal(sig)
        assert await asyncio.wait_for(child.wait(), 20) == (0 if sig == signal.SIGTERM else -sig)
        assert wait_gone([pid], timeout=1) == []
        assert b"message_stop" not in fake_anthropic.last.sent  # the answer stopped upstream
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
