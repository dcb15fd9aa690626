"""``meridian auth status | login | refresh-token``: the Claude subscription's login, for the
``claude-code`` provider in the config (``--provider`` picks one when there are several)."""

from __future__ import annotations

import argparse
import json
import sys

from meridian.config import ClaudeCodeProviderConfig, Settings


def _provider(settings: Settings, name: str | None) -> ClaudeCodeProviderConfig | None:
    found = {n: c for n, c in settings.providers.items() if isinstance(c, ClaudeCodeProviderConfig)}
    if name is not None:
        conf = found.get(name)
        if conf is None:
            known = ", ".join(found) or "none"
            print(
                f"meridian: no claude-code provider named {name!r} (configured: {known})",
                file=sys.stderr,
            )
        return conf
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        print(f"meridian: {settings.source} has no provider of type claude-code", file=sys.stderr)
    else:
        print(
            f"meridian: several claude-code providers ({', '.join(found)}): pick one with "
            "--provider",
            file=sys.stderr,
        )
    return None


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from meridian.providers.claude import auth as claude_auth

    conf = _provider(settings, args.provider)
    if conf is None:
        return 2
    report = claude_auth.status(conf)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
    return 0 if report.logged_in else 1


def _login(settings: Settings, args: argparse.Namespace) -> int:
    from meridian.providers.claude import auth as claude_auth

    conf = _provider(settings, args.provider)
    return 2 if conf is None else claude_auth.login(conf)


def _refresh(settings: Settings, args: argparse.Namespace) -> int:
    from meridian.providers.claude import auth as claude_auth

    conf = _provider(settings, args.provider)
    return 2 if conf is None else claude_auth.refresh_token(conf)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("auth", help="the Claude subscription login (claude-code provider)")
    commands = auth.add_subparsers(dest="auth_command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="logged in? subscription, token expiry")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
    login = commands.add_parser("login", help="run the CLI's login (interactive; works over SSH)")
    login.set_defaults(handler=_login)
    refresh = commands.add_parser("refresh-token", help="renew the access token now")
    refresh.set_defaults(handler=_refresh)
    for parser in (status, login, refresh):
        parser.add_argument("--provider", metavar="NAME", help="which claude-code provider")
