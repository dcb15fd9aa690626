"""The three things the bench talks to, and the config each one is started with.

Every proxy gets the same two aliases (`payloads.OPENAI_ALIAS`, `payloads.ANTHROPIC_ALIAS`)
pointing at the same fake upstream, so the columns differ only in the proxy between.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from payloads import ANTHROPIC_ALIAS, ANTHROPIC_MODEL, MASTER_KEY, OPENAI_ALIAS, OPENAI_MODEL
from procs import Server

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def upstream_server(workdir: Path, delta_delay_ms: float) -> Server:
    def launch(port: int) -> list[str]:
        return [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port),
                "--delta-delay-ms", str(delta_delay_ms)]

    return Server("fake upstream", launch, "/health", workdir / "upstream.log")


def byte_compile() -> None:
    """Compile meridian's modules as installing its wheel does (pip writes the .pyc files).
    A source checkout run with PYTHONDONTWRITEBYTECODE set would otherwise compile every
    module on every start, and the cold start would time the compiler."""
    spec = importlib.util.find_spec("meridian")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)


def meridian_command(explicit: str | None) -> list[str]:
    """argv prefix that runs meridian: the flag, the venv's console script, or ``-m``."""
    if explicit:
        return explicit.split()
    script = Path(sys.executable).with_name("meridian")
    if script.exists():
        return [str(script)]
    found = shutil.which("meridian")
    return [found] if found else [sys.executable, "-m", "meridian"]


def meridian_server(
    workdir: Path, upstream_port: int, command: list[str], *, ledger: bool = True,
    name: str = "meridian", env: dict[str, str] | None = None, responses_api: bool = False,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Server:
    """meridian on the fake upstream; ``ledger=False`` sets ``storage.usage_ledger: false``;
    ``env`` adds to its environment (e.g. a PYTHONPATH to another version's source);
    ``responses_api`` says the OpenAI upstream serves /v1/responses itself; ``sections``
    adds settings to the config's sections (``{"limits": {"redis_url": ...}}``; a
    ``storage.url`` replaces the SQLite file)."""

    def launch(port: int) -> list[str]:
        up = f"http://127.0.0.1:{upstream_port}"
        config = {
            "server": {"listen": [f"127.0.0.1:{port}"], "master_key": MASTER_KEY},
            "storage": {"path": str(db_path(workdir, port)), "usage_ledger": ledger},
            "providers": {
                "fake_oai": {"type": "openai", "api_key": "dummy", "base_url": up + "/v1",
                             **({"responses_api": True} if responses_api else {})},
                "fake_ant": {"type": "anthropic", "api_key": "dummy", "base_url": up},
            },
            "models": {
                OPENAI_ALIAS: {"provider": "fake_oai", "model": OPENAI_MODEL},
                ANTHROPIC_ALIAS: {"provider": "fake_ant", "model": ANTHROPIC_MODEL},
            },
        }
        for section, values in (sections or {}).items():
            config.setdefault(section, {}).update(values)
        if "url" in config["storage"]:
            del config["storage"]["path"]
        path = workdir / f"meridian-{port}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return [*command, "serve", "--config", str(path)]

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_")}
    return Server(name, launch, "/health", workdir / f"{name}.log", {**environ, **(env or {})})


def floor_server(workdir: Path, upstream_port: int) -> Server:
    """The Python floor (`floor.py`): a bare Starlette + uvicorn + aiohttp pass-through."""

    def launch(port: int) -> list[str]:
        return [sys.executable, str(BENCH / "floor.py"), "--port", str(port),
                "--upstream", f"http://127.0.0.1:{upstream_port}"]

    return Server("floor", launch, "/health", workdir / "floor.log")


def db_path(workdir: Path, port: int) -> Path:
    """The SQLite file of the meridian started on `port`."""
    return workdir / f"meridian-{port}.db"


def find_litellm(explicit: str | None) -> Path | None:
    """The `litellm` executable of its own venv, or None (the column is then skipped)."""
    default = [BENCH / "litellm-venv", Path("/tmp/litellm-venv")]
    candidates = [Path(explicit)] if explicit else default
    for c in candidates:
        exe = c / "bin" / "litellm" if c.is_dir() else c
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    return None


def litellm_version(exe: Path) -> str:
    """The installed version, read from the venv's metadata (importing litellm takes seconds)."""
    python = exe.with_name("python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                              timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
    return done.stdout.strip()


def litellm_server(workdir: Path, upstream_port: int, exe: Path) -> Server:
    up = f"http://127.0.0.1:{upstream_port}"
    config = {
        "model_list": [
            {"model_name": OPENAI_ALIAS, "litellm_params": {
                "model": f"openai/{OPENAI_MODEL}", "api_base": up + "/v1", "api_key": "dummy"}},
            {"model_name": ANTHROPIC_ALIAS, "litellm_params": {
                "model": f"anthropic/{ANTHROPIC_MODEL}", "api_base": up, "api_key": "dummy"}},
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    def launch(port: int) -> list[str]:
        return [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"]

    env = dict(os.environ)
    # No network here: use the bundled cost map instead of retrying a download at startup.
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    return Server("LiteLLM", launch, "/health/liveliness", workdir / "litellm.log", env)
