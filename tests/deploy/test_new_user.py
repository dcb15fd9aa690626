"""A first-time user on a fresh machine: ``init`` → ``check`` → ``keys create`` → ``serve``
with no environment variable set, and the admin commands asking only for what they read."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from deployhelpers import MERIDIAN, clean_env, free_port, get, meridian, serving

from meridian import config


def test_init_check_keys_serve_with_no_variables_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home)
    cfg = tmp_path / "meridian.yaml"
    state = home / ".local" / "share" / "meridian"

    out = meridian("init", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    assert str(state) in out.stdout
    text = cfg.read_text()
    assert "~" not in text.replace("# ", "")  # no path that expands per user
    assert f'path: "{state}/meridian.db"' in text and f'config_dir: "{state}/claude"' in text

    out = meridian("check", "--config", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    assert f"database: {state}/meridian.db" in out.stdout
    assert f"master key: none yet: `meridian serve` generates {state}/master_key" in out.stdout
    assert not (state / "master_key").exists()  # check only reads

    out = meridian("keys", "create", "--name", "laptop", "--config", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    assert secret.startswith("mk-")
    assert f"in {state}/meridian.db" in out.stderr
    assert not (state / "master_key").exists()  # neither do key commands touch it

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving([*MERIDIAN, "serve", "--config", str(cfg), "--port", str(port)], url, env) as p:
        status, body = get(url + "/v1/models", secret)
        assert status == 200, body
        assert "claude-sonnet-4-6" in {m["id"] for m in json.loads(body)["data"]}
        assert get(url + "/v1/models", "mk-" + "x" * 43)[0] == 401
        key_file = state / "master_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        master = key_file.read_text().strip()
        assert get(url + "/admin/keys", master)[0] == 200
    logged = [json.loads(line) for line in p.output.splitlines() if line.startswith("{")]  # type: ignore[attr-defined]
    generated = [r for r in logged if r["logger"] == "meridian.masterkey"]
    assert generated and generated[0]["path"] == str(key_file)
    assert master not in p.output  # type: ignore[attr-defined]


SECRETS_IN_ENV = """\
server:
  master_key: ${MERIDIAN_MASTER_KEY}
storage:
  path: ${DB_PATH:-%(db)s}
providers:
  oai: {type: openai, api_key: "${OPENAI_API_KEY}", base_url: "http://127.0.0.1:9/v1"}
  sub: {type: claude-code, config_dir: "${CLAUDE_DIR:-%(claude)s}"}
models:
  gpt-4o: {provider: oai, model: gpt-4o}
"""


@pytest.fixture
def secrets_in_env(tmp_path: Path) -> Path:
    cfg = tmp_path / "meridian.yaml"
    cfg.write_text(SECRETS_IN_ENV % {"db": tmp_path / "m.db", "claude": tmp_path / "claude"})
    return cfg


def test_admin_commands_need_only_the_variables_they_read(
    tmp_path: Path, secrets_in_env: Path
) -> None:
    env = clean_env(tmp_path / "home")
    cfg = str(secrets_in_env)
    for argv in (["keys", "create", "--name", "k"], ["keys", "list"], ["usage"]):
        out = meridian(*argv, "--config", cfg, env=env)
        assert out.returncode == 0, (argv, out.stderr)
    out = meridian("auth", "status", "--json", "--config", cfg, env=env)
    assert out.returncode == 1, out.stderr  # not logged in: an answer, not a config error
    assert json.loads(out.stdout)["config_dir"] == str(tmp_path / "claude")

    # serve and check read every key: an unset variable is still an error for them.
    for argv in (["check"], ["serve", "--port", str(free_port())]):
        out = meridian(*argv, "--config", cfg, env=env)
        assert out.returncode == 2, (argv, out.stdout, out.stderr)
        assert f"{cfg}: server.master_key: environment variable MERIDIAN_MASTER_KEY" in out.stderr
        assert "OPENAI_API_KEY" in out.stderr or argv == ["serve"]
        assert "Traceback" not in out.stderr
    out = meridian("check", "--config", cfg, env={**env, "MERIDIAN_MASTER_KEY": "m" * 20})
    assert out.returncode == 2
    assert "providers.oai.api_key: environment variable OPENAI_API_KEY is not set" in out.stderr


def test_a_variable_under_a_key_the_command_reads_is_still_required(
    tmp_path: Path, secrets_in_env: Path
) -> None:
    text = (
        secrets_in_env.read_text()
        .replace("${DB_PATH:-", "${DB_PATH")
        .replace(str(tmp_path / "m.db"), "")
    )
    text = text.replace("${CLAUDE_DIR:-" + str(tmp_path / "claude"), "${CLAUDE_DIR")
    secrets_in_env.write_text(text)
    env = clean_env(tmp_path / "home")
    out = meridian("keys", "list", "--config", str(secrets_in_env), env=env)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("storage.path: environment variable DB_PATH is not set")
    assert "MERIDIAN_MASTER_KEY" not in out.stderr  # only what blocks this command
    out = meridian("auth", "status", "--config", str(secrets_in_env), env=env)
    assert out.returncode == 2
    assert "providers.sub.config_dir: environment variable CLAUDE_DIR is not set" in out.stderr
    # Never a database somewhere else instead: nothing was created.
    assert not (tmp_path / "m.db").exists()
    assert not list((tmp_path / "home").glob("**/*.db"))


def test_the_system_config_is_found_without_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc-meridian.yaml"
    system.write_text(f"storage: {{path: {tmp_path / 'service.db'}}}\n")
    monkeypatch.setattr(config, "SYSTEM_CONFIG", system)
    assert config.resolve(None, env={}).storage.path == tmp_path / "service.db"
    assert config.resolve(None, env={"MERIDIAN_CONFIG": str(system)}).source == str(system)
    system.unlink()
    assert config.resolve(None, env={}).source == "<built-in defaults>"
