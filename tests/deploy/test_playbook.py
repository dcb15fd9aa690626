"""The playbook, run for real: deploy/ansible/site.yml into a Debian 12 root (debootstrap) through
Ansible's chroot connection, twice, installing meridian from a wheelhouse built from this
checkout. Then, inside that root: the files, owners and modes; the rendered unit (the shipped
one, byte for byte in every directive) checked by systemd-analyze; `meridian check` on the
rendered config; and the service's own command, run as its user with its environment,
answering /health and requests made with the keys the role declared, against fake upstreams.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployhelpers import REPO, ansible_env, free_port, get, wait_healthy

from fakes import FakeAnthropic, FakeOpenAI
from redisserver import RedisServer

MASTER = "sk-master-test-0123456789abcdef"
KEYS = {  # as `meridian keys generate` makes them
    "open-webui": "mk-" + "W" * 43,
    "pulse": "mk-" + "P" * 43,
}
PLAYBOOK = REPO / "deploy" / "ansible" / "site.yml"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
STRACE = shutil.which("strace") or "/usr/bin/strace"
MERIDIAN_BIN = "/opt/meridian/venv/bin/meridian"
# The role's default aliases, kept by the test (which adds one).
DEFAULT_MODELS = yaml.safe_load((PLAYBOOK.parent / "roles/meridian/defaults/main.yml").read_text())[
    "meridian_models"
]


@dataclass
class Deployment:
    root: Path
    runs: list[dict[str, Any]]  # the json callback's report of each run
    anthropic_port: int  # the old stack's two ports, here free ones
    openai_port: int
    upstream: FakeOpenAI
    anthropic: FakeAnthropic  # what the Claude CLI calls, for the claude-code provider "cli"
    variables: dict[str, Any]  # what the playbook was given


def playbook(ansible_bin: Path, tmp: Path, root: Path, variables: dict[str, Any]) -> dict[str, Any]:
    inventory = tmp / "hosts.json"
    inventory.write_text(
        json.dumps(
            {
                "meridian": {
                    "hosts": {
                        "debian12": {
                            "ansible_connection": "community.general.chroot",
                            "ansible_host": str(root),
                            "ansible_python_interpreter": "/usr/bin/python3",
                            "ansible_become": False,  # already root
                        }
                    }
                }
            }
        )
    )
    extra = tmp / "vars.json"
    extra.write_text(json.dumps(variables))
    proc = subprocess.run(
        [
            str(ansible_bin / "ansible-playbook"),
            "-i",
            str(inventory),
            "-e",
            f"@{extra}",
            str(PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        cwd=PLAYBOOK.parent,
        env=ansible_env(tmp / "home", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def deployed(
    ansible_bin: Path,
    wheelhouse: Path,  # first: debootstrap runs meanwhile
    debian_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    tmp = tmp_path_factory.mktemp("playbook")
    with FakeOpenAI() as upstream, FakeAnthropic() as anthropic:
        anthropic_port, openai_port = free_port(), free_port()
        variables = {
            "meridian_wheelhouse": str(wheelhouse),
            "meridian_master_key": MASTER,
            "meridian_environment": {
                "OPENAI_API_KEY": "sk-upstream-openai",
                "GEMINI_API_KEY": "sk-upstream-gemini",
            },
            "meridian_listen": [f"127.0.0.1:{anthropic_port}", f"127.0.0.1:{openai_port}"],
            # The role's providers and aliases, with the direct ones pointed at the fake.
            "meridian_providers": {
                "claude": {"type": "claude-code", "config_dir": "/var/lib/meridian/claude"},
                # The bundled CLI, run by the service, against a fake Anthropic API: an API
                # key in the provider's env stands in for a subscription login.
                "cli": {
                    "type": "claude-code",
                    "config_dir": "/var/lib/meridian/claude-cli",
                    "env": {"ANTHROPIC_BASE_URL": anthropic.url, "ANTHROPIC_API_KEY": "dummy"},
                },
                "openai": {
                    "type": "openai",
                    "api_key": "${OPENAI_API_KEY}",
                    "base_url": upstream.url,
                },
                "gemini": {
                    "type": "openai",
                    "api_key": "${GEMINI_API_KEY}",
                    "base_url": upstream.origin + "/v1beta/openai",
                },
            },
            "meridian_models": {
                **DEFAULT_MODELS,
                "claude-via-cli": {"provider": "cli", "model": "claude-haiku-4-5"},
            },
            "meridian_client_keys": [
                {
                    "name": "open-webui",
                    "secret": KEYS["open-webui"],
                    "models": ["direct_gpt-4o-mini", "gemini-2.5-flash", "claude-via-cli"],
                },
                {
                    "name": "pulse",
                    "secret": KEYS["pulse"],
                    "models": ["claude-haiku-4-5"],
                    "rpm": 60,
                },
            ],
            "meridian_node_exporter": True,
        }
        runs = [playbook(ansible_bin, tmp, debian_root, variables) for _ in range(2)]
        yield Deployment(
            debian_root, runs, anthropic_port, openai_port, upstream, anthropic, variables
        )


def stats(run: dict[str, Any]) -> dict[str, int]:
    return run["stats"]["debian12"]  # type: ignore[no-any-return]


def task(run: dict[str, Any], name: str) -> dict[str, Any]:
    for play in run["plays"]:
        for t in play["tasks"]:
            if t["task"]["name"] in (name, f"meridian : {name}"):  # role tasks carry its name
                return t["hosts"]["debian12"]  # type: ignore[no-any-return]
    raise AssertionError(f"no task {name!r} in the run")


def test_the_second_run_changes_nothing(deployed: Deployment) -> None:
    first, second = deployed.runs
    assert stats(first)["changed"] > 0 and stats(first)["failures"] == 0
    assert stats(second)["changed"] == 0, [
        t["task"]["name"]
        for play in second["plays"]
        for t in play["tasks"]
        if t["hosts"]["debian12"].get("changed")
    ]
    assert stats(second)["failures"] == 0 and stats(second)["unreachable"] == 0


def test_python_is_bootstrapped_on_a_host_without_it(deployed: Deployment) -> None:
    first, second = deployed.runs
    assert (
        "installed" in task(first, "Install Python for Ansible (a fresh host has none)")["stdout"]
    )
    assert "present" in task(second, "Install Python for Ansible (a fresh host has none)")["stdout"]


def test_the_service_waits_for_the_claude_login(deployed: Deployment) -> None:
    for run in deployed.runs:
        assert task(run, "Start meridian").get("skipped")
        message = task(run, "Say how to log in to Claude")["msg"]
        assert "no Claude login yet for claude. On the host" in message  # not "cli": a key
        assert "runuser -u meridian -- meridian auth login" in message
        assert not task(run, "Enable meridian at boot").get("failed")


def ids(root: Path, table: str) -> dict[int, str]:
    """uid or gid → name, from the root's own /etc/passwd or /etc/group (not this host's)."""
    rows = (line.split(":") for line in (root / "etc" / table).read_text().splitlines())
    return {int(r[2]): r[0] for r in rows if len(r) > 2}


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("etc/meridian", "root", "meridian", 0o750),
        ("etc/meridian/meridian.yaml", "root", "meridian", 0o640),
        ("etc/meridian/meridian.env", "root", "root", 0o600),
        ("etc/meridian/keys.yaml", "root", "meridian", 0o640),
        ("etc/meridian/keys.d", "root", "root", 0o700),
        ("etc/meridian/keys.d/open-webui", "root", "root", 0o600),
        ("var/lib/meridian", "meridian", "meridian", 0o700),
        ("var/lib/meridian/claude", "meridian", "meridian", 0o700),
        # Created by `meridian keys apply` run as root: it acted as the directory's owner.
        ("var/lib/meridian/meridian.db", "meridian", "meridian", 0o600),
        ("etc/systemd/system/meridian.service", "root", "root", 0o644),
        ("opt/meridian/venv/bin/meridian", "root", "root", 0o755),
    ],
)
def test_files_owners_and_modes(
    deployed: Deployment, path: str, owner: str, group: str, mode: int
) -> None:
    st = (deployed.root / path).stat()
    users, groups = ids(deployed.root, "passwd"), ids(deployed.root, "group")
    assert (users[st.st_uid], groups[st.st_gid], stat.S_IMODE(st.st_mode)) == (owner, group, mode)


def test_the_user_and_the_links(deployed: Deployment) -> None:
    root = deployed.root
    [entry] = [
        r for r in (root / "etc/passwd").read_text().splitlines() if r.startswith("meridian:")
    ]
    assert entry.split(":")[5:] == ["/var/lib/meridian", "/usr/sbin/nologin"]
    assert os.readlink(root / "usr/local/bin/meridian") == "/opt/meridian/venv/bin/meridian"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "meridian.service") == "/etc/systemd/system/meridian.service"
    # The optional node exporter, switched on here: Debian's package, enabled.
    assert (wants / "prometheus-node-exporter.service").is_symlink()


def test_the_defaults_are_the_old_stacks_aliases() -> None:
    assert set(DEFAULT_MODELS) == {
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
        "direct_gpt-4o",
        "direct_gpt-4o-mini",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
    }


def test_secrets_are_only_in_the_files_for_secrets(deployed: Deployment) -> None:
    etc = deployed.root / "etc/meridian"
    env = (etc / "meridian.env").read_text()
    assert f"MERIDIAN_MASTER_KEY='{MASTER}'" in env.splitlines()
    assert "OPENAI_API_KEY='sk-upstream-openai'" in env.splitlines()
    assert (etc / "keys.d/pulse").read_text() == KEYS["pulse"] + "\n"
    for public in ("meridian.yaml", "keys.yaml"):
        text = (etc / public).read_text()
        for secret in (MASTER, "sk-upstream-openai", *KEYS.values()):
            assert secret not in text, (public, secret)
    config = (etc / "meridian.yaml").read_text()
    assert "master_key: ${MERIDIAN_MASTER_KEY}" in config
    for alias in (
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
        "direct_gpt-4o",
        "direct_gpt-4o-mini",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
    ):
        assert f"\n  {alias}:\n" in config


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_rendered_unit_is_the_shipped_unit(deployed: Deployment) -> None:
    rendered = (deployed.root / "etc/systemd/system/meridian.service").read_text()
    shipped = (REPO / "deploy" / "meridian.service").read_text()
    assert directives(rendered) == directives(shipped)


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_systemd_analyze_verifies_the_unit(deployed: Deployment) -> None:
    out = analyze(deployed.root, "verify", "/etc/systemd/system/meridian.service")
    assert out.returncode == 0 and "meridian.service" not in out.stdout + out.stderr, out


def test_the_exposure_score_is_the_documented_one(deployed: Deployment) -> None:
    out = analyze(deployed.root, "security", "--offline=true", "meridian.service")
    assert out.returncode == 0, out.stderr
    measured = re.search(r"Overall exposure level for meridian\.service: (\d+\.\d)", out.stdout)
    assert measured, out.stdout
    documented = re.search(r"exposure level (\d+\.\d)", (REPO / "docs/deploy.md").read_text())
    assert documented and documented.group(1) == measured.group(1), out.stdout


def in_root(root: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROOT, str(root), "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
        check=False,
    )


def test_meridian_check_passes_on_the_rendered_config(deployed: Deployment) -> None:
    out = in_root(deployed.root, "set -a; . /etc/meridian/meridian.env; exec meridian check")
    assert out.returncode == 0, out.stderr
    assert "ok /etc/meridian/meridian.yaml: 4 providers, 8 models" in out.stdout
    assert "master key: server.master_key" in out.stdout
    # An operator's root shell has no service environment: check says what is missing...
    out = in_root(deployed.root, "meridian check")
    assert out.returncode == 2 and "MERIDIAN_MASTER_KEY is not set" in out.stderr
    # ... while the key commands need none of it, and open the service's database as its owner.
    out = in_root(deployed.root, "meridian keys list --json")
    assert out.returncode == 0, out.stderr
    assert {k["name"] for k in json.loads(out.stdout)} == {"open-webui", "pulse"}
    assert "/var/lib/meridian/meridian.db (as meridian, its owner)" in out.stderr


def unit_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart as its User, with its Environment= and EnvironmentFile=: what
    systemd would run, less the sandbox (which systemd-analyze checks instead)."""
    unit = (root / "etc/systemd/system/meridian.service").read_text()
    values: dict[str, list[str]] = {}
    for line in directives(unit):
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    [user], [group] = values["User"], values["Group"]
    passwd = {r.split(":")[0]: r.split(":") for r in (root / "etc/passwd").read_text().splitlines()}
    groups = {r.split(":")[0]: r.split(":") for r in (root / "etc/group").read_text().splitlines()}
    uid, gid, home = passwd[user][2], groups[group][2], passwd[user][5]
    env = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    env.update(v.split("=", 1) for v in values["Environment"])  # type: ignore[arg-type]
    [env_file] = values["EnvironmentFile"]
    for line in (root / env_file.lstrip("-/")).read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value.strip("'")
    [umask] = values["UMask"]
    [exec_start] = values["ExecStart"]
    argv = [
        CHROOT,
        f"--userspec={uid}:{gid}",
        f"--groups={gid}",
        str(root),
        "/bin/sh",
        "-c",
        f'umask {umask} && exec "$@"',
        "sh",
        *exec_start.split(),
    ]
    return argv, env


def post(url: str, key: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
    )
    if "x-api-key" not in headers:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@dataclass
class Served:
    """What the service did, once, for the tests that read it."""

    responses: dict[str, tuple[int, Any]]
    output: str
    exit_code: int
    trace: Path  # strace -f of the service and everything it started


@pytest.fixture(scope="module")
def served(deployed: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """Run the unit's command in the root, under strace, and make the calls clients make."""
    trace = tmp_path_factory.mktemp("strace") / "service.trace"
    argv, env = unit_command(deployed.root)
    strace = [STRACE, "-f", "-qq", "-o", str(trace)]
    proc = subprocess.Popen(
        [*strace, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ant = f"http://127.0.0.1:{deployed.anthropic_port}"
    oai = f"http://127.0.0.1:{deployed.openai_port}"
    chat = {"messages": [{"role": "user", "content": "ping"}]}
    responses: dict[str, tuple[int, Any]] = {}
    try:
        wait_healthy(ant, proc)
        responses["health"] = get(oai + "/health")
        responses["openai"] = post(
            oai + "/v1/chat/completions",
            KEYS["open-webui"],
            {"model": "direct_gpt-4o-mini", **chat},
        )
        responses["anthropic"] = post(
            ant + "/v1/messages",
            KEYS["open-webui"],
            {"model": "gemini-2.5-flash", "max_tokens": 20, **chat},
            **{"x-api-key": KEYS["open-webui"], "anthropic-version": "2023-06-01"},
        )
        responses["gemini-upstream"] = (0, deployed.upstream.requests[-1])
        responses["cli"] = post(
            oai + "/v1/chat/completions", KEYS["open-webui"], {"model": "claude-via-cli", **chat}
        )
        responses["scoped"] = post(
            oai + "/v1/chat/completions", KEYS["pulse"], {"model": "direct_gpt-4o-mini", **chat}
        )
        responses["wrong-key"] = post(oai + "/v1/chat/completions", "mk-" + "x" * 43, {})
        responses["admin"] = get(ant + "/admin/keys", MASTER)
        responses["ready"] = get(ant + "/ready", MASTER)
        responses["reloaded"] = reload_with_an_alias_added(deployed.root, proc, oai)
    finally:
        signal_service(proc, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    return Served(responses, out + err, proc.returncode, trace)


def signal_service(proc: subprocess.Popen[str], signum: int) -> None:
    """The service is strace's child: signal it, as systemd would (KillMode=mixed)."""
    child = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in child or [str(proc.pid)]:
        os.kill(int(pid), signum)


def reload_with_an_alias_added(
    root: Path, proc: subprocess.Popen[str], oai: str
) -> tuple[int, Any]:
    """What `systemctl reload` does after the role changed the config: SIGHUP (the unit's
    ExecReload). The running process must serve an alias it did not have."""
    config = root / "etc/meridian/meridian.yaml"
    original = config.read_text()
    chat = {"messages": [{"role": "user", "content": "ping"}]}
    try:
        doc = yaml.safe_load(original)
        doc["models"]["after-reload"] = doc["models"]["direct_gpt-4o-mini"]
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        before = post(oai + "/v1/chat/completions", MASTER, {"model": "after-reload", **chat})
        assert before[0] == 404, before
        signal_service(proc, signal.SIGHUP)
        deadline = time.monotonic() + 60
        answer = before
        while answer[0] != 200 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            answer = post(oai + "/v1/chat/completions", MASTER, {"model": "after-reload", **chat})
        return answer
    finally:
        config.write_text(original)


def test_the_service_answers_with_the_keys_the_role_declared(
    deployed: Deployment, served: Served
) -> None:
    r = served.responses
    assert r["health"][0] == 200
    status, body = r["openai"]
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "pong from gpt-4o-mini"
    status, body = r["anthropic"]
    assert status == 200, body
    assert body["content"][0]["text"] == "pong from gemini-2.5-flash"
    upstream = r["gemini-upstream"][1]
    assert upstream.path == "/v1beta/openai/chat/completions"
    assert upstream.headers["authorization"] == "Bearer sk-upstream-gemini"
    assert r["scoped"][0] == 403, r["scoped"]  # pulse may use claude-haiku-4-5 only
    assert r["wrong-key"][0] == 401
    assert r["admin"][0] == 200 and "open-webui" in r["admin"][1].decode()
    # /ready (details for the master key) tells the operator what the playbook said: the
    # Claude login is missing. The other aliases still serve, so the gateway is ready.
    assert r["ready"][0] == 200, r["ready"]
    assert b"meridian auth login" in r["ready"][1], r["ready"]
    assert served.exit_code == 0, served.output
    assert "meridian started" in served.output
    # SIGHUP (ExecReload) swapped the config in the same process: the new alias answered.
    status, body = r["reloaded"]
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "pong from gpt-4o-mini"
    assert served.output.count("meridian started") == 1
    assert "configuration reloaded" in served.output
    for secret in (MASTER, *KEYS.values()):
        assert secret not in served.output


def test_the_service_runs_the_bundled_claude_cli_as_its_user(
    deployed: Deployment, served: Served
) -> None:
    status, body = served.responses["cli"]
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "pong from claude-haiku-4-5"
    assert any(req.path.startswith("/v1/messages") for req in deployed.anthropic.requests)


def service_syscalls(trace: Path) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """System calls made by the service (from its exec of meridian on) and by every process
    it started, by name → the programs that made them; and (program, trace line) for each."""
    program: dict[int, str] = {}  # pid → what it runs, for the service's processes only
    starting: dict[int, str] = {}  # pid → the program its execve in progress runs
    calls: dict[str, set[str]] = {}
    lines = []
    for line in trace.read_text().splitlines():
        m = re.match(r"(\d+)\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)", line)
        if m is None:
            continue
        pid, name = int(m.group(1)), m.group(2)
        if name == "execve":
            exe = re.match(r'\d+\s+execve\("([^"]+)"', line)
            if exe:  # its result may come on a later "<... execve resumed>" line
                starting[pid] = exe.group(1)
            if line.endswith("= 0") and pid in starting:
                path = starting.pop(pid)
                if pid not in program and path == MERIDIAN_BIN:
                    program[pid] = path  # chroot and sh ran before, as root: systemd's part
                    continue
                if pid in program:
                    program[pid] = path
        if pid not in program:
            continue
        lines.append((program[pid], line))
        calls.setdefault(name, set()).add(program[pid])
        child = re.search(r"= (\d+)$", line)
        if name in ("clone", "clone3", "fork", "vfork") and child:
            program[int(child.group(1))] = program[pid]
    return calls, lines


def syscall_set(*items: str) -> set[str]:
    """System call names, with @groups expanded as systemd-analyze lists them."""
    names: set[str] = set()
    for item in items:
        if not item.startswith("@"):
            names.add(item)
            continue
        out = subprocess.run(
            ["systemd-analyze", "syscall-filter", item],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        members = (line.strip() for line in out.splitlines()[1:])
        names |= syscall_set(*(m for m in members if m and not m.startswith("#")))
    return names


def test_every_system_call_made_passes_the_units_filter(
    deployed: Deployment, served: Served
) -> None:
    """Not the sandbox itself (no systemd here), but what it would judge: the calls that
    meridian and the Claude CLI made, run as the service's user, against SystemCallFilter=
    and RestrictAddressFamilies=, and why the unit leaves MemoryDenyWriteExecute= out."""
    calls, lines = service_syscalls(served.trace)
    assert {"execve", "connect", "accept4"} <= set(calls), sorted(calls)
    unit = directives((deployed.root / "etc/systemd/system/meridian.service").read_text())
    # An allow list, then removals (~) and additions, applied in order, as systemd does.
    allowed: set[str] = set()
    for f in (line.split("=", 1)[1] for line in unit if line.startswith("SystemCallFilter=")):
        if f.startswith("~"):
            allowed -= syscall_set(*f[1:].split())
        else:
            allowed |= syscall_set(*f.split())
    assert set(calls) - allowed == set(), {n: calls[n] for n in set(calls) - allowed}
    [families] = [line.split("=", 1)[1] for line in unit if line.startswith("RestrictAddress")]
    used = {m.group(1) for _, line in lines if (m := re.search(r"socket\((AF_[A-Z0-9]+)", line))}
    assert used and used <= set(families.split()), used
    # The CLI's JIT maps writable, executable memory: MemoryDenyWriteExecute=yes would kill it.
    wx = {program for program, line in lines if "PROT_WRITE|PROT_EXEC" in line}
    assert any(program.endswith("/claude") for program in wx), wx


def documented_block(marker: str) -> str:
    """The first fenced block after ``marker`` in docs/deploy.md."""
    text = (REPO / "docs/deploy.md").read_text()
    after = text[text.index(marker) :]
    return after.split("```\n", 2)[1]


def test_the_documented_backup_and_restore_work(deployed: Deployment) -> None:
    """docs/deploy.md's commands, run as written in the root, less `sudo` (we are root) and
    `systemctl` (systemd's part: nothing runs meridian in the root between tests)."""

    def as_root(block: str) -> str:
        lines = [line.removeprefix("sudo ") for line in block.splitlines()]
        return "\n".join(line for line in lines if not line.startswith("systemctl "))

    out = in_root(deployed.root, "set -e\n" + as_root(documented_block("**Backup.**")))
    assert out.returncode == 0, out.stderr
    [backup] = list((deployed.root / "root").glob("meridian-*.db"))
    out = in_root(deployed.root, "meridian keys create --name made-after-the-backup")
    assert out.returncode == 0, out.stderr
    restore = as_root(documented_block("**Restore**")).replace(
        "/root/meridian-2026-01-31.db", f"/root/{backup.name}"
    )
    out = in_root(deployed.root, "set -e\n" + restore)
    assert out.returncode == 0, out.stderr
    out = in_root(deployed.root, "meridian keys list --json")
    assert {k["name"] for k in json.loads(out.stdout)} == {"open-webui", "pulse"}
    db = deployed.root / "var/lib/meridian/meridian.db"
    users = ids(deployed.root, "passwd")
    assert (users[db.stat().st_uid], stat.S_IMODE(db.stat().st_mode)) == ("meridian", 0o600)


# --- Scaled up: a third run with workers and Redis-shared limits -----------------------------
# After every test above (they read the first deployment): the same root, the same variables
# plus `meridian_workers: 2` and a Redis URL whose password the role keeps in the environment
# file. A real redis-server on this host's loopback (the chroot shares its network), with a
# password, stands in for the fleet's Redis.
REDIS_PASSWORD = "redis/pass@word:1"


@dataclass
class Scaled:
    root: Path
    run: dict[str, Any]
    redis: RedisServer
    responses: dict[str, Any]
    output: str
    exit_code: int
    trace: Path


def redis_over_tcp(tmp: Path) -> tuple[RedisServer, int]:
    redis = RedisServer(tmp, password=REDIS_PASSWORD).start()
    port = free_port()
    assert redis.command("CONFIG", "SET", "port", str(port)) == "+OK"  # and loopback TCP
    return redis, port


def generations(url: str) -> dict[str, int]:
    """Each worker's config generation, from the merged /metrics."""
    status, body = get(url + "/metrics")
    assert status == 200, body
    found = re.findall(rb'meridian_config_generation\{[^}]*worker="(\d+)"[^}]*\} ([0-9.]+)', body)
    return {w.decode(): int(float(v)) for w, v in found}


def until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scaled(
    ansible_bin: Path,
    deployed: Deployment,
    wheelhouse: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    tmp = tmp_path_factory.mktemp("scaled")
    redis, port = redis_over_tcp(tmp / "redis")
    try:
        variables = json.loads(json.dumps(deployed.variables))  # a deep copy
        variables["meridian_workers"] = 2
        variables["meridian_limits"] = {"redis_url": f"redis://127.0.0.1:{port}/0"}
        variables["meridian_redis_password"] = REDIS_PASSWORD
        # A limit on the key the calls use, so that admitting them goes through Redis.
        variables["meridian_client_keys"][0]["rpm"] = 1000
        run = playbook(ansible_bin, tmp, deployed.root, variables)
        trace = tmp / "service.trace"
        argv, env = unit_command(deployed.root)
        proc = subprocess.Popen(
            [STRACE, "-f", "-qq", "-o", str(trace), *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        oai = f"http://127.0.0.1:{deployed.openai_port}"
        chat = {"model": "direct_gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}]}
        responses: dict[str, Any] = {}
        try:
            wait_healthy(oai, proc)
            until(lambda: set(generations(oai)) == {"0", "1"}, "both workers in /metrics")
            responses["calls"] = [
                post(oai + "/v1/chat/completions", KEYS["open-webui"], chat) for _ in range(4)
            ]
            responses["redis_keys"] = redis.command("DBSIZE")
            responses["reloaded"] = reload_with_an_alias_added(deployed.root, proc, oai)

            # SIGHUP went to the supervisor (systemd's main PID): both workers reloaded. The
            # sample that shows it is kept: a later scrape may reach the other worker, whose
            # view of its sibling is a snapshot up to a second old.
            def both_reloaded() -> bool:
                responses["generations"] = generations(oai)
                return all(g >= 2 for g in responses["generations"].values())

            until(both_reloaded, "both workers reloaded")
        finally:
            signal_service(proc, signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        yield Scaled(deployed.root, run, redis, responses, out + err, proc.returncode, trace)
    finally:
        redis.stop()


def test_scaling_up_installs_the_redis_extra_and_keeps_the_password_out_of_the_config(
    scaled: Scaled,
) -> None:
    assert stats(scaled.run)["failures"] == 0 and stats(scaled.run)["changed"] > 0
    etc = scaled.root / "etc/meridian"
    config = yaml.safe_load((etc / "meridian.yaml").read_text())
    assert config["server"]["workers"] == 2
    assert config["limits"]["redis_url"].startswith("redis://:${MERIDIAN_REDIS_PASSWORD}@")
    assert REDIS_PASSWORD not in (etc / "meridian.yaml").read_text()
    assert "MERIDIAN_REDIS_PASSWORD='redis%2Fpass%40word%3A1'" in (etc / "meridian.env").read_text()
    out = in_root(scaled.root, "/opt/meridian/venv/bin/python -c 'import redis'")
    assert out.returncode == 0, out.stderr
    # The unit is the same with workers: nothing in it depends on them.
    rendered = (scaled.root / "etc/systemd/system/meridian.service").read_text()
    assert directives(rendered) == directives((REPO / "deploy/meridian.service").read_text())


def test_two_workers_serve_share_limits_in_redis_and_reload_on_sighup(scaled: Scaled) -> None:
    r = scaled.responses
    for status, body in r["calls"]:
        assert status == 200, body
    assert r["redis_keys"] not in (":0", ""), r["redis_keys"]  # the limits are kept there
    status, body = r["reloaded"]
    assert status == 200, body
    assert r["generations"] == {"0": 2, "1": 2}, r["generations"]
    assert "supervising 2 workers" in scaled.output
    assert scaled.output.count("configuration reloaded") == 2
    assert scaled.exit_code == 0, scaled.output
    assert REDIS_PASSWORD not in scaled.output


def test_the_supervisor_and_workers_pass_the_units_filter(scaled: Scaled) -> None:
    """The fork, the signal forwarding and the Redis connections, against SystemCallFilter=
    and RestrictAddressFamilies= as for one process above."""
    calls, lines = service_syscalls(scaled.trace)
    assert {"clone", "wait4", "rt_sigtimedwait"} <= set(calls), sorted(calls)
    unit = directives((scaled.root / "etc/systemd/system/meridian.service").read_text())
    allowed: set[str] = set()
    for f in (line.split("=", 1)[1] for line in unit if line.startswith("SystemCallFilter=")):
        if f.startswith("~"):
            allowed -= syscall_set(*f[1:].split())
        else:
            allowed |= syscall_set(*f.split())
    assert set(calls) - allowed == set(), {n: calls[n] for n in set(calls) - allowed}
    [families] = [line.split("=", 1)[1] for line in unit if line.startswith("RestrictAddress")]
    used = {m.group(1) for _, line in lines if (m := re.search(r"socket\((AF_[A-Z0-9]+)", line))}
    assert used and used <= set(families.split()), used
