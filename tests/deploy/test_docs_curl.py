"""Every `curl` in docs/clients.md and docs/deploy.md, run as written against a real meridian
(the `meridian serve` command, listening on the old stack's two roles of port) in front of
fake upstreams. The pages cannot drift from what the gateway does."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from deployhelpers import MERIDIAN, REPO, clean_env, free_port, meridian, serving

from fakes import FakeAnthropic, FakeOpenAI

FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
SECTION = re.compile(r"^## (.+)$", re.M)
HOSTS = ("meridian.lan:3456", "meridian.lan:4000")
CLIENTS = {  # the list: each has a section with a smoke test
    "Home Assistant",
    "Pulse",
    "paperless-ai",
    "Open WebUI",
    "Cline",
    "Aider",
    "OpenCode",
    "Claude Code",
    "The official SDKs",
}


@dataclass
class Gateway:
    ports: dict[str, int]  # documented host:port → the port it really listens on
    key: str
    openai: FakeOpenAI
    anthropic: FakeAnthropic


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("docs")
    with FakeOpenAI() as oai, FakeAnthropic() as ant:
        ports = {host: free_port() for host in HOSTS}
        models = {
            alias: {"provider": "ant", "model": alias}
            for alias in ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7")
        } | {
            alias: {"provider": "oai", "model": alias.removeprefix("direct_")}
            for alias in ("direct_gpt-4o", "direct_gpt-4o-mini", "gemini-2.5-flash")
        } | {"nomic-embed-text": {"provider": "oai", "model": "nomic-embed-text"}}
        cfg = tmp / "meridian.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "server": {"listen": [f"127.0.0.1:{p}" for p in ports.values()]},
                    "storage": {"path": str(tmp / "state" / "meridian.db")},
                    "providers": {
                        "ant": {"type": "anthropic", "api_key": "sk-ant-up", "base_url": ant.url},
                        "oai": {"type": "openai", "api_key": "sk-oai-up", "base_url": oai.url},
                    },
                    "models": models,
                }
            )
        )
        env = clean_env(tmp / "home")
        created = meridian("keys", "create", "--name", "docs", "--config", str(cfg), env=env)
        assert created.returncode == 0, created.stderr
        url = f"http://127.0.0.1:{ports[HOSTS[0]]}"
        with serving([*MERIDIAN, "serve", "--config", str(cfg)], url, env):
            yield Gateway(ports, created.stdout.strip(), oai, ant)


def curl_blocks(page: str) -> list[tuple[str, str]]:
    """(section, shell text) of every ```sh block with a curl in it."""
    text = (REPO / "docs" / page).read_text()
    sections = [(m.start(), m.group(1)) for m in SECTION.finditer(text)]
    out = []
    for m in FENCE.finditer(text):
        if "curl " in m.group(1):
            title = next((t for start, t in reversed(sections) if start < m.start()), "")
            out.append((title, m.group(1)))
    return out


def test_every_client_section_has_a_smoke_test() -> None:
    sections = {section for section, _ in curl_blocks("clients.md")}
    assert not CLIENTS - sections


BLOCKS = [(page, *block) for page in ("clients.md", "deploy.md") for block in curl_blocks(page)]


@pytest.mark.parametrize(
    ("page", "section", "script"),
    BLOCKS,
    ids=[f"{p}:{s}:{i}" for i, (p, s, _) in enumerate(BLOCKS)],
)
def test_the_documented_curl_works(gateway: Gateway, page: str, section: str, script: str) -> None:
    for host, port in gateway.ports.items():
        script = script.replace(f"http://{host}", f"http://127.0.0.1:{port}")
    assert "meridian.lan" not in script  # never a request that leaves this machine
    before = len(gateway.openai.requests) + len(gateway.anthropic.requests)
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "MERIDIAN_KEY": gateway.key},
        check=False,
    )
    assert proc.returncode == 0, f"{page} / {section}:\n{script}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), proc.stderr
    assert (
        '"type":"error"' not in proc.stdout.replace(" ", "") and "event: error" not in proc.stdout
    )
    calls = script.count("curl ") - script.count("/v1/models") - script.count("/health")
    after = len(gateway.openai.requests) + len(gateway.anthropic.requests)
    assert after - before == calls  # each model call reached an upstream, once
