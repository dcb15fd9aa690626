"""The circuit breaker of each deployment, with an injected clock."""

from __future__ import annotations

from meridian.config import Cooldown
from meridian.errors import ApiError, InvalidRequest, Overloaded, RateLimited, Timeout
from meridian.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(**policy: float) -> tuple[Health, Clock]:
    clock = Clock()
    return Health(Cooldown(**policy), clock), clock  # type: ignore[arg-type]


def test_trips_after_consecutive_failures_and_probes_once() -> None:
    h, clock = health(failures=3, seconds=10, max_s=35)
    for _ in range(2):
        h.failed("p", "m", Overloaded("busy"))
    assert h.available("p", "m")  # two failures: still closed
    h.failed("p", "m", ApiError("boom", status=502))
    assert not h.available("p", "m")
    assert h.state("p", "m").state_at(clock.now) == "open"  # type: ignore[union-attr]
    clock.now += 10
    assert h.available("p", "m")  # the one probe
    assert not h.available("p", "m")  # everyone else waits for its verdict
    h.failed("p", "m", Timeout("slow"))  # the probe failed: twice as long
    assert not h.available("p", "m")
    clock.now += 19
    assert not h.available("p", "m")
    clock.now += 1
    assert h.available("p", "m")
    h.failed("p", "m", Timeout("slow"))
    clock.now += 35  # capped at max_s, not 40
    assert h.available("p", "m")
    h.succeeded("p", "m")
    assert h.state("p", "m") is None and h.available("p", "m") and h.available("p", "m")


def test_a_reported_reset_time_opens_at_once_and_then_simply_passes() -> None:
    h, clock = health(failures=3, seconds=10)
    h.failed("p", "m", RateLimited("quota", retry_after=3600, should_retry=False))
    st = h.state("p", "m")
    assert st is not None and st.limited and st.state_at(clock.now) == "open"
    assert not h.available("p", "m")
    clock.now += 3600
    assert h.available("p", "m") and h.available("p", "m")  # not a probe: just over


def test_what_is_not_the_deployments_fault_changes_nothing() -> None:
    h, _ = health(failures=1)
    h.failed("p", "m", InvalidRequest("bad"))
    h.failed("p", "m", ApiError("bad gateway answer", status=400))
    assert h.state("p", "m") is None and h.available("p", "m")


def test_a_probe_left_without_a_verdict_is_released() -> None:
    h, clock = health(failures=1, seconds=5)
    h.failed("p", "m", Overloaded("busy"))
    clock.now += 5
    assert h.available("p", "m")
    h.release("p", "m")  # the client left during the probe
    assert h.available("p", "m")


def test_forget_a_reconfigured_provider() -> None:
    h, _ = health(failures=1)
    h.failed("p", "m", Overloaded("busy"))
    h.failed("q", "m", Overloaded("busy"))
    h.forget("p")
    assert h.available("p", "m") and not h.available("q", "m")
