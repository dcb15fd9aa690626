"""``limits.*`` in the config: accepted URLs, refused ones, the missing client library, and
what a Redis URL looks like in a log line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import settings
from meridian import server
from meridian.config import ConfigError
from meridian.redact import redact_store_url


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@cache.lan:6380/2", "unix:///run/redis.sock"]
)
def test_redis_urls_are_accepted(url: str, tmp_path: Path) -> None:
    limits = settings({"limits": {"redis_url": url}}, tmp_path).limits
    assert limits.redis_url is not None and limits.redis_url.get_secret_value() == url
    assert limits.on_store_error == "open" and limits.timeout_s == 1.0


def test_other_urls_and_modes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.redis_url"):
        settings({"limits": {"redis_url": "http://localhost:6379"}}, tmp_path)
    with pytest.raises(ConfigError, match="on_store_error"):
        settings({"limits": {"on_store_error": "maybe"}}, tmp_path)


def test_without_the_redis_library_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # what an absent package looks like
    for name in ("meridian.limits.redis", "meridian.limits.shared", "meridian.cooldowns"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    raw = {"limits": {"redis_url": "redis://localhost:6379/0"}}
    with pytest.raises(ConfigError, match=r"pip install 'meridian\[redis\]'"):
        server.assemble(settings(raw, tmp_path))


def test_a_redis_url_in_a_log_line_has_no_password() -> None:
    assert redact_store_url("redis://:s3cret@cache:6379/1") == "redis://***@cache:6379/1"
    assert redact_store_url("rediss://app:s3cret@cache:6380") == "rediss://***@cache:6380"
    assert (
        redact_store_url("unix:///run/redis.sock?db=2&password=s3cret")
        == "unix:///run/redis.sock?db=2&password=***"
    )
    assert redact_store_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_changing_limits_needs_a_restart(tmp_path: Path) -> None:
    from meridian.generation import restart_only_changes

    old = settings({}, tmp_path)
    new = settings({"limits": {"redis_url": "redis://localhost:6379/0"}}, tmp_path)
    assert restart_only_changes(old, new) == ["limits"]
    assert restart_only_changes(old, old) == []
