"""The role and the playbook are well-formed: ansible-lint with the production profile, and
ansible-playbook's syntax check on the example inventory. (test_playbook.py runs them.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

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
