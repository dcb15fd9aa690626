"""What the role writes for the scaling variables, rendered by Ansible itself on this machine
(the role's preflight, vars and templates; no host is changed): the defaults give exactly the
configuration and environment file they always gave; a PostgreSQL URL, Redis limits and
workers give the right keys, with every password in the environment file (URL-encoded) and a
``${VAR}`` in the config; and each rendered config is what `meridian check` accepts, connected
to a real PostgreSQL and a real Redis that want those passwords. (test_playbook.py runs the
role into a Debian root; test_ansible.py lints it.)"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployhelpers import MERIDIAN, REPO, ansible_env, clean_env

from meridian.config import load
from meridian.limits.redis import client
from pgserver import PASSWORD, PASSWORD_ROLE, PostgresServer
from redisserver import RedisServer

ANSIBLE_DIR = REPO / "deploy" / "ansible"
ROLE = ANSIBLE_DIR / "roles" / "meridian"
MERIDIAN_BIN = REPO / ".venv" / "bin" / "meridian"  # this checkout's, as the role's venv has it
MASTER = "m" * 24
# Every character a URL gives a meaning to, and the ones the environment file cannot carry
# verbatim: the role must encode them, and meridian's drivers decode them.
HARD_PASSWORD = "p@ss/w:rd#?%&=+ $'\"\\`x"

# The role's defaults, rendered by the role as it was before the scaling variables: the same
# bytes must come out now (an unchanged file means no restart and no reload on upgrade).
DEFAULT_CONFIG = """\
#
# Ansible managed
#
# Rendered from the Ansible role's variables: change those, not this file. ${VAR}s come from
# /etc/meridian/meridian.env. Reference: README.md (Configuration).
server:
  listen:
  - 0.0.0.0:3456
  - 0.0.0.0:4000
  master_key: ${MERIDIAN_MASTER_KEY}
storage:
  path: /var/lib/meridian/meridian.db
providers:
  claude:
    type: claude-code
    config_dir: /var/lib/meridian/claude
  openai:
    type: openai
    api_key: ${OPENAI_API_KEY}
  gemini:
    type: openai
    api_key: ${GEMINI_API_KEY}
    base_url: https://generativelanguage.googleapis.com/v1beta/openai
models:
  claude-haiku-4-5:
    provider: claude
    model: claude-haiku-4-5
  claude-sonnet-4-6:
    provider: claude
    model: claude-sonnet-4-6
  claude-opus-4-7:
    provider: claude
    model: claude-opus-4-7
  direct_gpt-4o:
    provider: openai
    model: gpt-4o
  direct_gpt-4o-mini:
    provider: openai
    model: gpt-4o-mini
  gemini-2.5-flash:
    provider: gemini
    model: gemini-2.5-flash
  gemini-2.5-pro:
    provider: gemini
    model: gemini-2.5-pro
"""
DEFAULT_ENV = f"""\
#
# Ansible managed
#
# The service's secrets, read by systemd (EnvironmentFile=) before it becomes the meridian
# user. Values are single-quoted and carry no quote, backslash, dollar or space (the role
# checks), so this file reads the same as shell: `set -a; . /etc/meridian/meridian.env`.
MERIDIAN_MASTER_KEY='{MASTER}'
GEMINI_API_KEY='g-key'
OPENAI_API_KEY='o-key'
"""

RENDER = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: meridian
        tasks_from: preflight.yml
        public: true
    - ansible.builtin.template:
        src: {role}/templates/meridian.yaml.j2
        dest: "{{{{ out }}}}/meridian.yaml"
        mode: "0640"
    - ansible.builtin.template:
        src: {role}/templates/meridian.env.j2
        dest: "{{{{ out }}}}/meridian.env"
        mode: "0600"
    - ansible.builtin.copy:
        content: "{{{{ meridian_requirement }}}}"
        dest: "{{{{ out }}}}/requirement"
        mode: "0644"
"""


@dataclass
class Rendered:
    config_path: Path
    config_text: str
    config: dict[str, Any]
    env_text: str
    env: dict[str, str]  # as systemd and `set -a; . FILE` read it
    requirement: str  # what pip installs


def render(ansible_bin: Path, tmp: Path, variables: dict[str, Any], role: Path = ROLE) -> Rendered:
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    playbook = tmp / "render.yml"
    playbook.write_text(RENDER.format(role=role))
    extra = tmp / "vars.json"
    base = {
        "meridian_master_key": MASTER,
        "meridian_wheelhouse": str(playbook),  # any file: only its existence is checked
        "meridian_environment": {"OPENAI_API_KEY": "o-key", "GEMINI_API_KEY": "g-key"},
    }
    extra.write_text(json.dumps({**base, **variables, "out": str(out)}))
    local = ["-i", "localhost,", "-c", "local", "-e", f"@{extra}"]
    proc = subprocess.run(
        [str(ansible_bin / "ansible-playbook"), *local, str(playbook)],
        capture_output=True,
        text=True,
        cwd=ANSIBLE_DIR,
        env=ansible_env(tmp, ANSIBLE_ROLES_PATH=str(role.parent)),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    env_text = (out / "meridian.env").read_text()
    config_text = (out / "meridian.yaml").read_text()
    return Rendered(
        out / "meridian.yaml",
        config_text,
        yaml.safe_load(config_text),
        env_text,
        read_env(env_text),
        (out / "requirement").read_text(),
    )


def read_env(text: str) -> dict[str, str]:
    """The environment file as `sh` reads it (`set -a; . FILE`), which is also how systemd's
    EnvironmentFile= reads single-quoted values."""
    proc = subprocess.run(
        ["/bin/sh", "-c", 'set -a && . "$0" && exec env -0', "/dev/stdin"],
        input=text,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    pairs = (item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k not in ("PATH", "PWD", "SHLVL", "_")}


def check(rendered: Rendered, home: Path) -> subprocess.CompletedProcess[str]:
    """`meridian check` on the rendered file, with only the rendered environment: what the
    role's `validate:` runs before the file replaces the live one."""
    env = clean_env(home, **rendered.env)
    return subprocess.run(
        [*MERIDIAN, "check", "--config", str(rendered.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_defaults_render_exactly_the_config_and_environment_of_before(
    ansible_bin: Path, tmp_path: Path
) -> None:
    now = render(ansible_bin, tmp_path / "now", {})
    assert now.config_text == DEFAULT_CONFIG
    assert now.env_text == DEFAULT_ENV
    assert now.requirement == "meridian"  # no extras: nothing new to install
    assert "workers" not in now.config["server"] and "limits" not in now.config
    settings = load(now.config_path, now.env)
    assert settings.storage.url is None and settings.server.workers == 1


@pytest.fixture
def pg_password(postgres: PostgresServer) -> Any:
    """The session server's password role, for this test with a password full of characters a
    URL and the environment file give a meaning to (its own again afterwards)."""
    quoted = HARD_PASSWORD.replace("'", "''")
    postgres.sql(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD '{quoted}'")
    try:
        yield HARD_PASSWORD
    finally:
        postgres.sql(f"ALTER ROLE {PASSWORD_ROLE} PASSWORD '{PASSWORD}'")


def test_a_postgresql_url_writes_storage_url_with_the_password_from_the_environment(
    ansible_bin: Path, tmp_path: Path, postgres: PostgresServer, pg_password: str
) -> None:
    database = postgres.new_database()
    url = f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres.port}/{database}"
    r = render(
        ansible_bin,
        tmp_path,
        {"meridian_storage_url": url, "meridian_storage_password": pg_password},
    )
    assert r.config["storage"] == {
        "url": f"postgresql://{PASSWORD_ROLE}:${{MERIDIAN_STORAGE_PASSWORD}}@127.0.0.1:"
        f"{postgres.port}/{database}"
    }
    assert pg_password not in r.config_text
    assert r.requirement == "meridian[postgres]"
    # URL-encoded in the file, so that it survives the URL it is put into.
    assert r.env["MERIDIAN_STORAGE_PASSWORD"] == (
        "p%40ss%2Fw%3Ard%23%3F%25%26%3D%2B%20%24%27%22%5C%60x"
    )
    assert "MERIDIAN_STORAGE_PASSWORD='p%40ss%2Fw" in r.env_text
    # meridian check connects with it: the password reached PostgreSQL intact (this role
    # must give it: scram-sha-256 on 127.0.0.1).
    out = check(r, tmp_path / "home")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"postgresql://***@127.0.0.1:{postgres.port}/{database}" in out.stdout
    assert "connected" in out.stdout
    assert pg_password not in out.stdout + out.stderr
    # A wrong one is refused: the check above did use the password.
    wrong = clean_env(tmp_path / "home", **{**r.env, "MERIDIAN_STORAGE_PASSWORD": "nope"})
    out = subprocess.run(
        [*MERIDIAN, "check", "--config", str(r.config_path)],
        capture_output=True,
        text=True,
        env=wrong,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1 and "password authentication failed" in out.stdout + out.stderr


def test_a_url_in_meridian_storage_replaces_the_sqlite_path(
    ansible_bin: Path, tmp_path: Path
) -> None:
    """storage.url given among the other storage keys, as before the variable existed: the
    role no longer adds storage.path next to it (which meridian refuses: both set)."""
    url = "postgresql:///meridian?host=/run/postgresql"
    r = render(ansible_bin, tmp_path, {"meridian_storage": {"url": url, "retention_days": 30}})
    assert r.config["storage"] == {"url": url, "retention_days": 30}
    assert r.requirement == "meridian[postgres]"
    settings = load(r.config_path, r.env)
    assert settings.storage.url == url


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_redis_limits_and_workers_with_the_password_from_the_environment(
    ansible_bin: Path, tmp_path: Path, transport: str
) -> None:
    redis = RedisServer(tmp_path / "redis", password=HARD_PASSWORD).start()
    try:
        if transport == "unix":
            url = f"unix://{redis.socket}"
            expected = f"unix://:${{MERIDIAN_REDIS_PASSWORD}}@{redis.socket}"
        else:
            # The same server over TCP: a second listener on a free port.
            port = tcp_port(redis)
            url = f"redis://127.0.0.1:{port}/0"
            expected = f"redis://:${{MERIDIAN_REDIS_PASSWORD}}@127.0.0.1:{port}/0"
        r = render(
            ansible_bin,
            tmp_path,
            {
                "meridian_workers": 2,
                "meridian_limits": {"redis_url": url, "on_store_error": "closed"},
                "meridian_redis_password": HARD_PASSWORD,
            },
        )
        assert r.config["server"]["workers"] == 2
        assert r.config["limits"] == {"redis_url": expected, "on_store_error": "closed"}
        assert list(r.config) == ["server", "storage", "limits", "providers", "models"]
        assert r.config["storage"] == {"path": "/var/lib/meridian/meridian.db"}
        assert HARD_PASSWORD not in r.config_text
        assert r.requirement == "meridian[redis]"
        assert r.env["MERIDIAN_REDIS_PASSWORD"].startswith("p%40ss%2Fw%3Ard")
        # What meridian check accepts (workers: 2 needs limits.redis_url), and what the
        # limiter's own client does with the URL: Redis takes the password.
        out = check(r, tmp_path / "home")
        assert out.returncode == 0, out.stdout + out.stderr
        settings = load(r.config_path, r.env)
        assert settings.server.workers == 2 and settings.limits.on_store_error == "closed"
        assert settings.limits.redis_url is not None
        assert ping(settings.limits.redis_url.get_secret_value()) is True
    finally:
        redis.stop()


def tcp_port(redis: RedisServer) -> int:
    from deployhelpers import free_port

    port = free_port()
    assert redis.command("CONFIG", "SET", "port", str(port)) == "+OK"
    return port


def ping(url: str) -> Any:
    async def once() -> Any:
        redis = client(url, timeout_s=5)
        try:
            return await redis.ping()
        finally:
            await redis.aclose()

    return asyncio.run(once())


def test_the_unit_is_the_same_with_workers(ansible_bin: Path, tmp_path: Path) -> None:
    """The supervisor and its workers run under the unit as it is: nothing in it depends on
    the scaling variables (docs/deploy.md says why each setting allows the fork)."""
    text = (ROLE / "templates" / "meridian.service.j2").read_text()
    assert not re.search(r"workers|redis|storage_url|TasksMax|MemoryDenyWriteExecute=yes", text)
    assert "KillMode=mixed" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text


MIGRATE = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: meridian
        tasks_from: migrate.yml
"""


def test_the_roles_migrate_task_migrates_postgresql_once_then_reports_no_change(
    ansible_bin: Path, tmp_path: Path, postgres: PostgresServer, pg_password: str
) -> None:
    """The role's own `meridian migrate` task, run here with the rendered files and this
    checkout's meridian: changed on an empty database, unchanged on the next run."""
    database = postgres.new_database()
    url = f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{postgres.port}/{database}"
    r = render(
        ansible_bin,
        tmp_path,
        {"meridian_storage_url": url, "meridian_storage_password": pg_password},
    )
    playbook = tmp_path / "migrate.yml"
    playbook.write_text(MIGRATE)
    extra = tmp_path / "migrate-vars.json"
    extra.write_text(
        json.dumps(
            {
                "meridian_config_dir": str(r.config_path.parent),
                "meridian_bin": str(MERIDIAN_BIN),
                "meridian_master_key": MASTER,
            }
        )
    )
    local = ["-i", "localhost,", "-c", "local", "-e", f"@{extra}"]
    results = []
    for _ in range(2):
        proc = subprocess.run(
            [str(ansible_bin / "ansible-playbook"), *local, str(playbook)],
            capture_output=True,
            text=True,
            cwd=ANSIBLE_DIR,
            env=ansible_env(
                tmp_path,
                ANSIBLE_ROLES_PATH=str(ROLE.parent),
                ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ),
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
        [task] = [
            t["hosts"]["localhost"]
            for play in json.loads(proc.stdout)["plays"]
            for t in play["tasks"]
            if t["task"]["name"].endswith("Run the database's migrations")
        ]
        results.append(task)
    first, second = results
    assert first["changed"] and " -> " in first["stdout"], first["stdout"]
    assert not second["changed"] and "up to date" in second["stdout"], second["stdout"]
    assert f"postgresql://***@127.0.0.1:{postgres.port}/{database}" in first["stdout"]
