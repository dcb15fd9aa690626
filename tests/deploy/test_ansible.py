"""The role and the playbook are well-formed: ansible-lint with the production profile, and
ansible-playbook's syntax check on the example inventory. (test_playbook.py runs them.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from deployhelpers import REPO, ansible_env

ANSIBLE_DIR = REPO / "deploy" / "ansible"


def run(ansible_bin: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ansible_bin / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        cwd=ANSIBLE_DIR,
        env=ansible_env(tmp_path),
        timeout=600,
        check=False,
    )


def test_ansible_lint_production_profile(ansible_bin: Path, tmp_path: Path) -> None:
    out = run(ansible_bin, tmp_path, "ansible-lint", "--offline", "--profile", "production")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Profile 'production' was required, and it passed" in out.stderr + out.stdout


def test_playbook_syntax_check(ansible_bin: Path, tmp_path: Path) -> None:
    out = run(
        ansible_bin,
        tmp_path,
        "ansible-playbook",
        "--syntax-check",
        "-i",
        "inventory.example",
        "site.yml",
    )
    assert out.returncode == 0, out.stdout + out.stderr


PREFLIGHT = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: meridian
        tasks_from: preflight.yml
"""
SECRET = "mk-" + "S" * 43


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, None),
        ({"meridian_master_key": "short"}, "meridian_master_key is not set (or shorter than 16"),
        ({"meridian_environment": {"OPENAI_API_KEY": f"it's-{SECRET}"}}, "(not: OPENAI_API_KEY)"),
        ({"meridian_environment": {"bad-name": "v"}}, "_ (not: bad-name)"),
        ({"meridian_client_keys": [{"name": "pulse"}]}, "meridian_client_keys[0] (pulse) needs"),
        (
            {"meridian_client_keys": [{"name": "two words", "secret": SECRET}]},
            "meridian_client_keys[0] (two words) needs a name",
        ),
        ({"meridian_wheelhouse": "/nonexistent.tar"}, "(now: /nonexistent.tar)"),
        # The scaling variables: passwords stay out of the config file, workers need Redis.
        (
            {"meridian_storage_url": f"postgresql://meridian:{SECRET}@db.lan/meridian"},
            "A password written into a URL is refused (in: meridian_storage_url)",
        ),
        (
            {"meridian_limits": {"redis_url": f"redis://:{SECRET}@10.0.0.5:6379/0"}},
            "(in: meridian_limits.redis_url)",
        ),
        (
            {
                "meridian_storage_url": "postgresql://meridian@db.lan/meridian",
                "meridian_storage": {"url": "postgresql://meridian@db2.lan/meridian"},
            },
            "(postgresql://USER@HOST/DB; not also meridian_storage.url)",
        ),
        ({"meridian_storage_password": SECRET}, "its password as meridian_storage_password"),
        ({"meridian_workers": 2}, "meridian_workers: 2 needs meridian_limits.redis_url"),
        (
            {
                "meridian_workers": 2,
                "meridian_limits": {"redis_url": "redis://10.0.0.5:6379/0"},
                "meridian_redis_password": SECRET,
                "meridian_storage_url": "postgresql://meridian@db.lan/meridian",
                "meridian_storage_password": SECRET,
            },
            None,
        ),
    ],
)
def test_the_role_refuses_bad_variables_before_changing_anything(
    ansible_bin: Path, tmp_path: Path, variables: dict[str, object], message: str | None
) -> None:
    """The preflight tasks alone, on this machine: they only check. A failure names what is
    wrong and never prints a secret."""
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT)
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "meridian_master_key": "m" * 20,
                "meridian_wheelhouse": str(playbook),  # any file: only its existence is checked
                "meridian_client_keys": [{"name": "ok", "secret": SECRET}],
                **variables,
            }
        )
    )
    local = ["-i", "localhost,", "-c", "local", "-e", f"@{extra}"]
    out = subprocess.run(
        [str(ansible_bin / "ansible-playbook"), *local, str(playbook)],
        capture_output=True,
        text=True,
        cwd=ANSIBLE_DIR,
        env=ansible_env(tmp_path, ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles")),
        timeout=300,
        check=False,
    )
    if message is None:
        assert out.returncode == 0, out.stdout + out.stderr
    else:
        assert out.returncode == 2 and message in out.stdout, out.stdout + out.stderr
    assert SECRET not in out.stdout + out.stderr
