"""docs/scaling.md's configuration blocks are what meridian accepts, and its two-replica example
is what the Ansible role really writes: every fenced ``yaml`` block that is a meridian config is
validated (``meridian check``'s validation) with the variables it names set; the group
variables of "Two replicas" are rendered by the role and must give the config shown next to
them, with every password in the environment file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from deployhelpers import REPO
from test_role_config import render

from meridian.config import Settings, interpolate, validate

DOC = REPO / "docs" / "scaling.md"
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
CONFIG_KEYS = set(Settings.model_fields) - {"source"}


def blocks(text: str) -> list[Any]:
    return [yaml.safe_load(b) for b in FENCE.findall(text)]


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def is_config(block: Any) -> bool:
    return isinstance(block, dict) and set(block) <= CONFIG_KEYS


def validated(block: dict[str, Any], source: str) -> Settings:
    """As `meridian check` reads a file: ${VAR}s from the environment, then validation."""
    text = yaml.safe_dump(block)
    env = {name: "s3cret-value" for name in VAR.findall(text)}
    return validate(interpolate(block, env), source)


def test_every_config_block_in_the_page_validates() -> None:
    found = [b for b in blocks(DOC.read_text()) if is_config(b)]
    # PostgreSQL, Redis, workers on one host, and the two replicas' rendered config.
    assert len(found) >= 4, found
    for i, block in enumerate(found):
        validated(block, f"docs/scaling.md yaml block {i}")


def test_the_workers_example_shares_its_limits() -> None:
    [block] = [b for b in blocks(section("Workers on one host")) if is_config(b)]
    settings = validated(block, "workers")
    assert settings.server.workers == 2 and settings.limits.redis_url is not None


def test_the_two_replicas_example_is_what_the_role_renders(
    ansible_bin: Path, tmp_path: Path
) -> None:
    text = section("Two replicas")
    found = blocks(text)
    [hosts] = [b for b in found if isinstance(b, dict) and "meridian" in b]
    assert list(hosts["meridian"]["hosts"]) == ["meridian-a.lan", "meridian-b.lan"]
    [group_vars] = [b for b in found if isinstance(b, dict) and "meridian_storage_url" in b]
    [shown] = [b for b in found if is_config(b)]
    vault = {
        "vault_meridian_master_key": "m" * 32,
        "vault_openai_api_key": "sk-openai",
        "vault_meridian_db_password": "db/pass@word",
        "vault_meridian_redis_password": "redis-pass",
        "vault_meridian_key_open_webui": "mk-" + "W" * 43,
    }
    variables = {**group_vars, **vault, "meridian_wheelhouse": str(DOC)}  # any existing file
    rendered = render(ansible_bin, tmp_path, variables)
    assert rendered.config == shown
    assert rendered.requirement == "meridian[postgres,redis]"
    assert rendered.env == {
        "MERIDIAN_MASTER_KEY": "m" * 32,
        "MERIDIAN_STORAGE_PASSWORD": "db%2Fpass%40word",
        "MERIDIAN_REDIS_PASSWORD": "redis-pass",
        "OPENAI_API_KEY": "sk-openai",
    }
    for secret in vault.values():
        assert secret not in rendered.config_text
    settings = validated(rendered.config, "rendered")
    assert settings.server.workers == 2
    assert settings.storage.describe() == "postgresql://***@db.lan/meridian"
