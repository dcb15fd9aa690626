"""The Claude provider's configuration: the built-in aliases and the keys' bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from meridian import catalog
from meridian.config import ConfigError, default_settings, validate


def test_default_aliases_name_exact_models() -> None:
    """A name must mean one model: ``--model sonnet`` follows the CLI's newest Sonnet."""
    settings = default_settings({})
    claude = {
        alias: settings.deployments(alias)[0].model
        for alias in settings.models
        if settings.deployments(alias)[0].provider == "claude"
    }
    for alias, model in claude.items():
        if alias.endswith("-latest"):  # the family shorthands, under names that say so
            assert model == alias.removeprefix("claude-").removesuffix("-latest")
        else:
            assert model == alias
    assert {"claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"} <= set(claude)
    assert {"claude-haiku-latest", "claude-sonnet-latest", "claude-opus-latest"} <= set(claude)
    for model in claude.values():
        assert catalog.limits(model) is not catalog.limits("an-unknown-model")


def _claude(**fields: object) -> dict[str, object]:
    return {"providers": {"claude": {"type": "claude-code", **fields}}}


def test_live_process_keys_and_their_bounds(tmp_path: Path) -> None:
    conf = validate(_claude(), "<test>").providers["claude"]
    assert (conf.continuation_ttl_s, conf.warm_spares, conf.live_memory_mb) == (120, 0, 1024)  # type: ignore[union-attr]
    conf = validate(
        _claude(continuation_ttl_s=0, warm_spares=1, max_concurrency=2, live_memory_mb=512),
        "<test>",
    ).providers["claude"]
    assert (conf.continuation_ttl_s, conf.warm_spares, conf.live_memory_mb) == (0, 1, 512)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "wanted"),
    [
        ({"continuation_ttl_s": -1}, "providers.claude.continuation_ttl_s"),
        ({"warm_spares": 4, "max_concurrency": 4}, "warm_spares must be below max_concurrency"),
        ({"live_memory_mb": -5}, "providers.claude.live_memory_mb"),
    ],
)
def test_bad_live_process_keys_are_named(fields: dict[str, object], wanted: str) -> None:
    with pytest.raises(ConfigError, match=wanted):
        validate(_claude(**fields), "<test>")
