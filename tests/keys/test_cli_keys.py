"""``meridian keys``: the handlers called directly, then the real command in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from keyhelpers import Clock

from meridian import cli_keys, config
from meridian.errors import AuthenticationFailed
from meridian.keys import KeyStore
from meridian.resolver import StoreKeyResolver
from meridian.storage import Store

RAW = {
    "providers": {
        "oai": {"type": "openai", "api_key": "sk-upstream", "base_url": "http://127.0.0.1:9"}
    },
    "models": {"gpt-test": {"provider": "oai", "model": "gpt-4o-mini"}},
}


@pytest.fixture
def settings(store_url: str) -> config.Settings:
    return config.validate({**RAW, "storage": {"url": store_url}}, "test.yaml")


def run(settings: config.Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="meridian")
    cli_keys.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", *argv])
    return int(args.handler(settings, args))


def test_create_prints_the_secret_alone_on_stdout(
    settings: config.Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            settings,
            "create",
            "--name",
            "pulse",
            "--models",
            "gpt-test,oai/gpt-4.1",
            "--rpm",
            "60",
            "--tpm",
            "100000",
            "--budget-tokens-month",
            "5000000",
            "--budget-usd-month",
            "12.5",
            "--expires",
            "90d",
        )
        == 0
    )
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("mk-") and len(secret) == 46
    assert "will not be shown again" in err
    assert "warning" not in err  # an alias and a provider-prefixed model are both known
    [info] = KeyStore(store).list()
    assert (info.name, info.models, info.rpm, info.tpm) == (
        "pulse",
        ("gpt-test", "oai/gpt-4.1"),
        60,
        100000,
    )
    assert (info.budget_tokens_month, info.budget_usd_month) == (5000000, 12.5)
    assert info.expires_at is not None and info.prefix == secret[:9]


def test_create_warns_about_unknown_models_but_creates_the_key(
    settings: config.Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "create", "--name", "k", "--models", "gpt-test,gtp-tset,nope/x") == 0
    out, err = capsys.readouterr()
    assert "warning: not a model of test.yaml: gtp-tset, nope/x" in err
    assert out.startswith("mk-")


def test_errors_are_one_line_and_exit_1(
    settings: config.Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "create", "--name", "k") == 0
    capsys.readouterr()
    cases = [
        (["create", "--name", "k"], "an active key named 'k' already exists"),
        (["create", "--name", "j", "--expires", "someday"], "expires: expected a duration"),
        (["create", "--name", "j", "--rpm", "0"], "rpm: expected a positive integer"),
        (["revoke", "nope"], "no key named 'nope'"),
        (["rotate", "nope"], "no key named 'nope'"),
    ]
    for argv, message in cases:
        assert run(settings, *argv) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith(f"meridian keys: {message}") and err.count("\n") == 1


def test_list_json_and_table(settings: config.Settings, capsys: pytest.CaptureFixture[str]) -> None:
    run(settings, "create", "--name", "ha", "--rpm", "5")
    run(settings, "create", "--name", "gone")
    run(settings, "revoke", "gone")
    secret = capsys.readouterr().out.split()[0]
    assert run(settings, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["name"], k["status"], k["rpm"]) for k in listed] == [
        ("gone", "revoked", None),
        ("ha", "active", 5),
    ]
    assert run(settings, "list", "--json", "--active") == 0
    assert [k["name"] for k in json.loads(capsys.readouterr().out)] == ["ha"]
    assert run(settings, "list") == 0
    table = capsys.readouterr().out
    for text in ("name", "prefix", "used this month", "ha", secret[:9], "5 rpm", "revoked"):
        assert text in table
    assert secret[9:] not in table


def test_rotate_prints_the_new_secret(
    settings: config.Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    run(settings, "create", "--name", "k")
    old = capsys.readouterr().out.strip()
    run(settings, "rotate", "k")
    out, err = capsys.readouterr()
    new = out.strip()
    assert new != old and "the old secret no longer works" in err
    assert KeyStore(store).get("k").prefix == new[:9]


# ----------------------------------------------------------------- the real command


def meridian(config_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    ambient = ("MERIDIAN_", "OPENAI_", "ANTHROPIC_", "GEMINI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ambient)}
    return subprocess.run(
        [sys.executable, "-m", "meridian", "keys", *argv, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
async def test_the_meridian_keys_command_against_a_live_resolver(
    tmp_path: Path, store_url: str, store: Store, clock: Clock
) -> None:
    cfg = tmp_path / "meridian.yaml"
    cfg.write_text(json.dumps({**RAW, "storage": {"url": store_url}}))  # JSON is YAML
    # A "server" in this process: its resolver reads the same file over its own connection.
    resolver = StoreKeyResolver(KeyStore(store, clock=clock))
    assert await resolver.resolve("mk-" + "z" * 43) is None

    created = meridian(cfg, "create", "--name", "pulse", "--models", "gpt-test", "--rpm", "60")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert "will not be shown again" in created.stderr
    principal = await resolver.resolve(secret)  # no wait: a miss checks the database
    assert principal is not None and principal.models == frozenset({"gpt-test"})

    listed = meridian(cfg, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)] == ["pulse"]
    assert secret[9:] not in listed.stdout

    rotated = meridian(cfg, "rotate", "pulse")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert await resolver.resolve(new) is not None
    clock.advance(1.1)
    assert await resolver.resolve(secret) is None

    revoked = meridian(cfg, "revoke", "pulse")
    assert revoked.returncode == 0, revoked.stderr
    clock.advance(1.1)
    with pytest.raises(AuthenticationFailed, match="key 'pulse' was revoked"):
        await resolver.resolve(new)

    again = meridian(cfg, "revoke", "pulse")
    assert again.returncode == 1
    assert again.stderr == "meridian keys: key 'pulse' is already revoked\n"
    await resolver.aclose()
