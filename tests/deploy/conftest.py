"""Fixtures for the deployment tests: the controller's tools, the wheelhouse built from this
checkout, and a Debian 12 root made by debootstrap that the playbook deploys into through
Ansible's chroot connection. Each is made once per session: debootstrap and the wheelhouse are
the expensive parts, and every test reads the same deployed root.

What a chroot is not: systemd is not running there (so the unit is checked with
systemd-analyze instead of being started), and it shares this machine's network (so the
meridian it runs reaches the fake upstreams on 127.0.0.1). Package installs inside it come
from Debian's mirror, as on a real host; nothing is cached between sessions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deployhelpers import ANSIBLE_BIN, REPO

MIRROR = os.environ.get("MERIDIAN_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    """.venv-ansible/bin, where scripts/install-deploy-tools puts Ansible and ansible-lint."""
    if not (ANSIBLE_BIN / "ansible-playbook").exists():
        pytest.fail(
            f"{ANSIBLE_BIN}/ansible-playbook is missing: run scripts/install-deploy-tools",
            pytrace=False,
        )
    return ANSIBLE_BIN


@dataclass
class Bootstrap:
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bootstrap]:
    """debootstrap, started: a minimal Debian 12 (bookworm) with systemd installed, as a fresh
    LXC has it, and no Python (the playbook must bootstrap that itself). It runs while the
    wheelhouse is built; `debian_root` waits for it."""
    if os.geteuid() != 0:
        pytest.fail("debootstrap and chroot need root", pytrace=False)
    debootstrap = _need("debootstrap", "run scripts/install-deploy-tools")
    base = tmp_path_factory.mktemp("debian12")
    log = base / "debootstrap.log"
    with log.open("w") as out:  # a file, not a pipe: nobody reads it until the end
        root = base / "root"
        proc = subprocess.Popen(
            [debootstrap, "--variant=minbase", "--include=systemd", "bookworm", str(root), MIRROR],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Bootstrap(root, log, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, bootstrap: Bootstrap) -> Path:
    """deploy/build-wheelhouse run on this checkout: meridian's wheel and its pinned
    dependencies in one tar file, as an operator's controller makes it; for Debian 12 by
    name (WHEELHOUSE_ARCH), as from a controller of another kind."""
    out = tmp_path_factory.mktemp("wheelhouse") / "meridian-wheelhouse.tar"
    env = {
        **os.environ,
        "PYTHON": str(REPO / ".venv" / "bin" / "python"),
        "WHEELHOUSE_ARCH": os.uname().machine,
    }
    proc = subprocess.run(
        [str(REPO / "deploy" / "build-wheelhouse"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="session")
def debian_root(bootstrap: Bootstrap) -> Iterator[Path]:
    """The finished debootstrap root, with /proc mounted, for the chroot connection."""
    assert bootstrap.proc.wait(timeout=1800) == 0, bootstrap.log.read_text()[-8000:]
    root = bootstrap.root
    # No init runs in a chroot: keep packages' maintainer scripts from starting daemons here.
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    proc_dir = root / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "--lazy", str(proc_dir)], check=False)
        # Never follow anything out of the root: it is gone only once nothing is mounted.
        if not os.path.ismount(proc_dir):
            shutil.rmtree(root, ignore_errors=True)
