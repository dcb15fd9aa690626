"""The stream pump: items in order, what is already here without waiting, ends and failures
reported once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meridian.errors import Overloaded
from meridian.streaming import Pump


async def burst(items: list[str], fail: BaseException | None = None) -> AsyncIterator[str]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


async def settle(pump: Pump[str]) -> None:
    for _ in range(5):  # let the pump's task run the source as far as it can
        await asyncio.sleep(0)


def test_get_nowait_hands_out_what_arrived_and_never_the_end() -> None:
    async def main() -> list[object]:
        pump = Pump(burst(["a", "b", "c"]), name="t", keepalive_s=10)
        await settle(pump)
        seen: list[object] = [await pump.get()]
        while (more := pump.get_nowait()) is not None:
            seen.append(more)
        seen.append(pump.get_nowait())  # the end is still there, for get to report
        seen.append(await pump.get())
        seen.append(pump.finished)
        return seen

    assert asyncio.run(main()) == ["a", "b", "c", None, None, True]


def test_get_nowait_leaves_a_failure_for_get_to_raise() -> None:
    async def main() -> None:
        pump = Pump(burst(["a"], Overloaded("boom")), name="t", keepalive_s=10)
        await settle(pump)
        assert await pump.get() == "a"
        assert pump.get_nowait() is None
        with pytest.raises(Overloaded):
            await pump.get()

    asyncio.run(main())


def test_get_nowait_frees_space_for_a_blocked_source() -> None:
    async def main() -> list[str]:
        pump = Pump(burst([str(i) for i in range(10)]), name="t", keepalive_s=10, maxsize=2)
        out: list[str] = []
        while (item := await pump.get()) is not None:
            assert isinstance(item, str)
            out.append(item)
            while (more := pump.get_nowait()) is not None:
                out.append(more)
        return out

    assert asyncio.run(main()) == [str(i) for i in range(10)]
