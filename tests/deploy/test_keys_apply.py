"""``meridian keys apply FILE``: declared keys, created or updated, idempotent, with a dry run;
and ``meridian keys generate`` for the secrets such a file refers to."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from deployhelpers import clean_env, meridian

from meridian.keys import KeyStore
from meridian.resolver import StoreKeyResolver
from meridian.storage import make_store


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path / "home")


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "meridian.yaml"
    path.write_text(
        f"storage: {{path: {tmp_path / 'm.db'}}}\n"
        "providers: {oai: {type: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {gpt-4o: {provider: oai, model: gpt-4o}, mini: {provider: oai, model: m}}\n"
    )
    return path


def generate(env: dict[str, str]) -> str:
    out = meridian("keys", "generate", env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def apply(cfg: Path, keys: Path, env: dict[str, str], *flags: str) -> dict:  # type: ignore[type-arg]
    out = meridian("keys", "apply", str(keys), "--json", *flags, "--config", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def actions(report: dict) -> dict[str, tuple[str, list[str]]]:  # type: ignore[type-arg]
    return {k["name"]: (k["action"], k["fields"]) for k in report["keys"]}


def stored(db: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    store = make_store(str(db)).open()
    try:
        return {k.name: k.as_dict(0) for k in KeyStore(store).list()}
    finally:
        store.close()


async def resolves(db: Path, secret: str) -> str | None:
    store = make_store(str(db)).open()
    resolver = StoreKeyResolver(KeyStore(store))
    try:
        principal = await resolver.resolve(secret)
        return None if principal is None else principal.name
    finally:
        await resolver.aclose()
        store.close()


async def test_apply_creates_updates_and_is_idempotent(
    tmp_path: Path, cfg: Path, env: dict[str, str]
) -> None:
    pulse, paperless = generate(env), generate(env)
    assert pulse != paperless and len(pulse) == 46
    (tmp_path / "paperless.secret").write_text(paperless + "\n")
    env["PULSE_KEY"] = pulse
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        "- name: pulse\n  models: [mini]\n  rpm: 60\n  secret_env: PULSE_KEY\n"
        f"- name: paperless\n  budget_usd_month: 5\n  expires: 2099-01-01\n"
        f"  secret_file: {tmp_path / 'paperless.secret'}\n"
        "- name: laptop\n"
    )
    db = tmp_path / "m.db"

    dry = apply(cfg, keys, env, "--dry-run")
    assert dry["dry_run"] and dry["changed"] and not db.exists()  # a dry run creates nothing
    assert actions(dry) == {
        "pulse": ("create", ["secret"]),
        "paperless": ("create", ["secret"]),
        "laptop": ("create", []),
    }

    first = apply(cfg, keys, env)
    assert first["changed"] and first["database"] == str(db)
    assert [k["action"] for k in first["keys"]] == ["create"] * 3
    generated = next(k["secret"] for k in first["keys"] if k["name"] == "laptop")
    assert all("secret" not in k for k in first["keys"] if k["name"] != "laptop")
    have = stored(db)
    assert (have["pulse"]["models"], have["pulse"]["rpm"]) == (["mini"], 60)
    assert have["paperless"]["budget_usd_month"] == 5.0
    assert have["paperless"]["expires_at"] == "2099-01-01T00:00:00Z"
    assert await resolves(db, pulse) == "pulse"
    assert await resolves(db, paperless) == "paperless"
    assert await resolves(db, generated) == "laptop"

    again = apply(cfg, keys, env)
    assert not again["changed"]
    assert {a for a, _ in actions(again).values()} == {"unchanged"}

    # Change a limit, drop another, rotate one secret through the environment.
    env["PULSE_KEY"] = new_pulse = generate(env)
    keys.write_text(
        "- name: pulse\n  models: [mini, gpt-4o]\n  max_parallel: 3\n  secret_env: PULSE_KEY\n"
        f"- name: paperless\n  budget_usd_month: 5\n  expires: 2099-01-01\n"
        f"  secret_file: {tmp_path / 'paperless.secret'}\n"
        "- name: laptop\n  revoked: true\n"
    )
    dry = apply(cfg, keys, env, "--dry-run")
    assert actions(dry) == {
        "pulse": ("update", ["models", "rpm", "max_parallel", "secret"]),
        "paperless": ("unchanged", []),
        "laptop": ("revoke", []),
    }
    assert stored(db)["pulse"]["rpm"] == 60  # the dry run wrote nothing
    assert actions(apply(cfg, keys, env)) == actions(dry)
    have = stored(db)
    assert (have["pulse"]["models"], have["pulse"]["rpm"]) == (["mini", "gpt-4o"], None)
    assert have["pulse"]["max_parallel"] == 3
    assert have["laptop"]["status"] == "revoked"
    assert await resolves(db, new_pulse) == "pulse"
    assert await resolves(db, pulse) is None
    assert not apply(cfg, keys, env)["changed"]


def test_apply_without_json_reports_on_stderr_and_secrets_on_stdout(
    tmp_path: Path, cfg: Path, env: dict[str, str]
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("- name: laptop\n")
    out = meridian("keys", "apply", str(keys), "--dry-run", "--config", str(cfg), env=env)
    assert out.returncode == 0 and out.stdout == ""
    assert "laptop: would create" in out.stderr and "(dry run: nothing written)" in out.stderr
    out = meridian("keys", "apply", str(keys), "--config", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    name, secret = out.stdout.split()
    assert name == "laptop" and secret.startswith("mk-")
    assert f"against {tmp_path / 'm.db'}: 1 to create" in out.stderr
    out = meridian("keys", "apply", str(keys), "--config", str(cfg), env=env)
    assert "laptop: unchanged" in out.stderr and "nothing to change" in out.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: a\n  expires: 90d\n", "a duration would move the expiry"),
        ("- name: a\n  expires: 2020-01-01\n", "a: expires: 2020-01-01T00:00:00Z is in the past"),
        ("- name: a\n  secret_env: NOPE\n", "a: secret_env: environment variable NOPE is not set"),
        ("- name: a\n  secret_file: /nonexistent/x\n", "a: secret_file: /nonexistent/x: No such"),
        ("- name: a\n  rpm: 0\n", "a: rpm: Input should be greater than 0"),
        ("- name: a\n  colour: red\n", "a: colour: Extra inputs are not permitted"),
        ("- name: a\n- name: a\n", "a: named twice"),
        ("- name: a\n  revoked: true\n  rpm: 5\n", "a revoked key takes only name and revoked"),
        ("name: a\n", "expected a list of keys"),
        ("- name: a\n  secret_env: SHORT\n", "secret: expected 'mk-' and 43 URL-safe characters"),
    ],
)
def test_a_bad_file_changes_nothing_and_says_why(
    tmp_path: Path, cfg: Path, env: dict[str, str], text: str, message: str
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("- name: fine\n" + text if text.startswith("-") else text)
    out = meridian(
        "keys", "apply", str(keys), "--config", str(cfg), env={**env, "SHORT": "mk-short"}
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("meridian keys: invalid key file\n")
    assert message in out.stderr and str(keys) in out.stderr
    assert not (tmp_path / "m.db").exists()  # nothing applied, not even the good entry


def test_keys_run_as_root_act_as_the_databases_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it is what `sudo meridian keys ...` does")
    # Not under pytest's tmp_path: its parents are 0700 root, which the owner cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="meridian-owner-"))
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, 65534, 65534)  # nobody, as the service's user would own it
        cfg = base / "meridian.yaml"
        cfg.write_text(f"storage: {{path: {state / 'meridian.db'}}}\n")
        env = clean_env(tmp_path / "home")
        out = meridian("keys", "create", "--name", "k", "--config", str(cfg), env=env)
        assert out.returncode == 0, out.stderr
        assert f"in {state / 'meridian.db'} (as nobody, its owner)" in out.stderr
        files = sorted(state.iterdir())
        assert files and {f.stat().st_uid for f in files} == {65534}, files
        out = meridian("keys", "list", "--json", "--config", str(cfg), env=env)
        assert out.returncode == 0 and json.loads(out.stdout)[0]["name"] == "k"
    finally:
        shutil.rmtree(base)


def test_auth_login_as_root_refuses_a_login_the_service_user_owns(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it is what `sudo meridian auth login` does")
    claude = tmp_path / "claude"
    claude.mkdir()
    os.chown(claude, 65534, 65534)
    cfg = tmp_path / "meridian.yaml"
    cfg.write_text(f"providers: {{sub: {{type: claude-code, config_dir: {claude}}}}}\n")
    env = clean_env(tmp_path / "home")
    for action in ("login", "refresh-token"):
        out = meridian("auth", action, "--config", str(cfg), env=env)
        assert out.returncode == 2, out.stderr
        assert out.stderr == (
            f"meridian: {claude} belongs to nobody: run this as that user, e.g. "
            f"runuser -u nobody -- meridian auth {action} --config {cfg}\n"
        )
    assert list(claude.iterdir()) == []
