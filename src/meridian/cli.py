"""The ``meridian`` command: parse arguments, resolve settings, call one function.

Every subcommand's handler takes ``(settings, args)`` and returns an exit code; errors a
person can act on (a bad config, a port in use) are one line on stderr and exit code 2 or 1,
never a traceback.

``serve`` and ``check`` read the whole config, so an unset ``${VAR}`` anywhere in it is an
error for them. The admin commands read only part of it (`_READS`): ``keys`` and ``usage``
the ``storage`` section, ``auth`` its claude-code provider. For them an unset ``${VAR}``
elsewhere, typically a secret such as ``${MERIDIAN_MASTER_KEY}`` that lives in the service's
environment file, is no error; one under a key they do read still is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from meridian import __version__
from meridian.config import (
    ClaudeCodeProviderConfig,
    ConfigError,
    Settings,
    data_dir,
    resolve,
    unset_message,
)

Handler = Callable[[Settings, argparse.Namespace], int]


def _claude_providers(settings: Settings) -> list[str]:
    return [f"providers.{n}" for n, c in settings.providers.items() if c.type == "claude-code"]


# What each admin command reads of the config, as key paths (None, the default: all of it).
_READS: dict[str, Callable[[Settings], list[str]]] = {
    "keys": lambda settings: ["storage"],
    "usage": lambda settings: ["storage"],
    "migrate": lambda settings: ["storage"],
    "auth": _claude_providers,
}


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from meridian import logs, masterkey, server

    if args.host or args.port:
        listen = []
        for item in settings.server.listen:
            host, _, port = item.rpartition(":")
            listen.append(f"{args.host or host}:{args.port or port}")
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update={"listen": listen})}
        )
    from meridian.storage import StoreError

    logs.configure("INFO")
    try:
        masterkey.ensure(settings)  # the one place a missing key file is generated (logged)
        return server.serve(settings)
    except (StoreError, ConfigError) as exc:
        print(f"meridian: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"meridian: {exc}", file=sys.stderr)
        return 1


# The state paths in the packaged example; `init` writes the chosen data directory instead.
_EXAMPLE_DIR = "/var/lib/meridian"


def _init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"meridian: {target} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    # Absolute, fixed now: whoever runs a command with this file later (root, the service's
    # user, a shell with another $HOME) opens the same database.
    state = Path(args.data_dir or data_dir()).expanduser().absolute()
    text = resources.files("meridian").joinpath("example-config.yaml").read_text(encoding="utf-8")
    for name in ("meridian.db", "claude"):
        text = text.replace(json.dumps(f"{_EXAMPLE_DIR}/{name}"), json.dumps(str(state / name)))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} (state in {state}); edit it, then run: meridian check --config {target}")
    return 0


def _probe_redis(settings: Settings) -> tuple[bool, str]:
    """Whether the Redis of ``limits.redis_url`` answers, and what `meridian check` says."""
    from meridian.limits.redis import StoreUnavailable, connect

    assert settings.limits.redis_url is not None
    url = settings.limits.redis_url.get_secret_value()

    async def ping() -> None:
        limits = connect(url, timeout_s=settings.limits.timeout_s)
        try:
            await limits.ping()
        finally:
            await limits.aclose()

    try:
        asyncio.run(ping())
    except StoreUnavailable as exc:
        return False, f"cannot use Redis: {exc}"
    return True, "connected"


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from meridian import masterkey

    # Piped (a log, a CI step): wide enough that no cell is folded.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(
        f"[green]ok[/green] {settings.source}: "
        f"{len(settings.providers)} providers, {len(settings.models)} models"
    )
    from meridian.cli_storage import probe

    def reached(what: str, ok: bool, said: str) -> bool:
        if ok:
            console.print(f"{what} ({said})", highlight=False, soft_wrap=True)
        else:
            console.print(what, highlight=False, soft_wrap=True)
            console.print(f"[red]error[/red] {escape(said)}", highlight=False, soft_wrap=True)
        return ok

    usable = reached(f"database: {settings.storage.describe()}", *probe(settings))
    if settings.limits.redis_url is not None:
        from meridian.redact import redact_store_url

        where = f"limits: {redact_store_url(settings.limits.redis_url.get_secret_value())}"
        usable = reached(where, *_probe_redis(settings)) and usable
    console.print(f"master key: {masterkey.describe(settings)}", highlight=False, soft_wrap=True)
    if not usable:
        return 1
    if not args.live:
        table = Table("alias", "provider", "model", "type")
        for alias in settings.models:
            for dep in settings.deployments(alias):
                table.add_row(alias, dep.provider, dep.model, settings.providers[dep.provider].type)
        console.print(table)
        return 0
    from meridian.check import live_check

    rows = asyncio.run(live_check(settings, timeout_s=args.timeout))
    table = Table("alias", "served by", "result", "latency", "answer", "failed first")
    failed = 0
    for row in rows:
        failed += not row.ok
        result = "[green]ok[/green]" if row.ok else f"[red]error[/red] {row.error}"
        table.add_row(
            row.alias,
            row.deployment,
            result,
            f"{row.latency_ms:.0f} ms",
            row.answer,
            ", ".join(row.failed),
        )
    console.print(table)
    return 1 if failed else 0


def _parser(
    extensions: Sequence[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]],
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meridian", description="One LLM gateway: the Anthropic and OpenAI APIs, one service."
    )
    parser.add_argument("--version", action="version", version=f"meridian {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="config file (default: $MERIDIAN_CONFIG, else built-in defaults)",
        )
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host", help="override the host of every listener")
    serve.add_argument("--port", type=int, help="override the port of every listener")
    serve.set_defaults(handler=_serve)

    init = sub.add_parser("init", help="write a commented example config")
    init.add_argument("path", nargs="?", default="meridian.yaml")
    init.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the database and the Claude login go (default: the user's data directory)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(plain=_init)

    check = with_config(sub.add_parser("check", help="validate the config and list the models"))
    check.add_argument(
        "--live",
        action="store_true",
        help="send a one-word request through every alias and show the result",
    )
    check.add_argument("--timeout", type=float, default=60.0, help="seconds per alias (--live)")
    check.set_defaults(handler=_check)

    for extend in extensions:
        extend(sub)
    for leaf in _leaves(sub):
        if leaf is not init and "config" not in {a.dest for a in leaf._actions}:
            with_config(leaf)
    return parser


def _leaves(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[argparse.ArgumentParser]:
    """Every parser that runs a handler, so ``--config`` works after any subcommand."""
    out = []
    for parser in sub.choices.values():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        out.extend(_leaves(nested[0]) if nested else [parser])
    return out


def _extensions() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    from meridian import cli_auth, cli_keys, cli_reload, cli_storage, cli_usage

    return [
        cli_auth.add_parser,
        cli_keys.add_parser,
        cli_reload.add_parser,
        cli_storage.add_parser,
        cli_usage.add_parser,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(_extensions()).parse_args(argv)
    if getattr(args, "plain", None):
        return int(args.plain(args))
    reads = _READS.get(args.command)
    unset: dict[str, str] | None = None if reads is None else {}
    try:
        settings = resolve(getattr(args, "config", None), unset=unset)
        if unset:
            wanted = reads(settings) if reads else []
            blocking = {
                path: var
                for path, var in unset.items()
                if any(path == w or path.startswith((w + ".", w + "[")) for w in wanted)
            }
            if blocking:
                raise ConfigError(unset_message(settings.source, blocking))
    except ConfigError as exc:
        print(f"meridian: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    refusal = _root_writing_a_service_login(settings, args)
    if refusal:
        print(f"meridian: {refusal}", file=sys.stderr)
        return 2
    try:
        if args.command in ("usage", "migrate"):  # as `keys`: root acts as the database's owner
            from meridian import runas

            with runas.as_owner(settings.storage.path):
                return int(args.handler(settings, args))
        return int(args.handler(settings, args))
    except KeyboardInterrupt:
        return 130


def _root_writing_a_service_login(settings: Settings, args: argparse.Namespace) -> str | None:
    """``auth login`` / ``refresh-token`` run as root would leave the CLI's login files owned by
    root in a directory the service's user owns: the service could no longer read them."""
    if args.command != "auth" or args.auth_command == "status" or os.geteuid() != 0:
        return None
    from meridian import runas

    for name, conf in settings.providers.items():
        if not isinstance(conf, ClaudeCodeProviderConfig) or args.provider not in (None, name):
            continue
        owner = runas.owner_of(conf.config_dir / ".credentials.json")
        if owner is not None and owner[0] != 0:
            user = runas.user_name(owner[0])
            config = "" if settings.source.startswith("<") else f" --config {settings.source}"
            return (
                f"{conf.config_dir} belongs to {user}: run this as that user, e.g. "
                f"runuser -u {user} -- meridian auth {args.auth_command}{config}"
            )
    return None


if __name__ == "__main__":
    raise SystemExit(main())
