"""``meridian keys create|list|revoke|rotate|apply|generate``: client keys, straight on the
database.

The database is the one named by ``storage.path`` (or ``storage.url``), and every command
says which one it opened; SQLite's WAL mode (or PostgreSQL) lets this run next to a serving
gateway, which picks the change up within about a second. Run as root, the commands act as
the database's owner (`meridian.runas`), so the service's files stay the service's. A secret
goes to stdout alone (so ``$(meridian keys create ...)`` captures just it); everything else
goes to stderr. None of them reads the master key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from meridian import keyfile, runas
from meridian.config import Settings
from meridian.errors import MeridianError
from meridian.keys import KeyInfo, KeyStore, human_time, new_secret, parse_expires
from meridian.storage import StoreError, driver_errors

_WARNING = "Store this secret now: it will not be shown again."


@contextmanager
def _keystore(settings: Settings) -> Iterator[tuple[KeyStore, str]]:
    """The key store of ``storage``, and how to name it in messages."""
    path = settings.storage.path
    # A database this command creates (with its -wal and -shm) is private, as the service's.
    umask = os.umask(0o077)
    try:
        with runas.as_owner(path) as owner:
            store = settings.storage.store().open()
            try:
                where = settings.storage.describe() + (f" (as {owner}, its owner)" if owner else "")
                yield KeyStore(store), where
            finally:
                store.close()
    finally:
        os.umask(umask)


Handler = Callable[[Settings, argparse.Namespace], int]


def _guarded(run: Handler) -> Handler:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        try:
            return run(settings, args)
        except MeridianError as exc:
            print(f"meridian keys: {exc.message}", file=sys.stderr)
            return 1
        except keyfile.KeyFileError as exc:
            print(f"meridian keys: invalid key file\n{exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"meridian keys: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"meridian keys: {settings.storage.describe()}: {exc}", file=sys.stderr)
            return 1
        except driver_errors() as exc:
            print(f"meridian keys: {settings.storage.describe()}: {exc}", file=sys.stderr)
            return 1

    return handler


def _unknown_models(settings: Settings, models: list[str]) -> list[str]:
    def known(alias: str) -> bool:
        if alias in settings.models:
            return True
        provider, sep, _ = alias.partition("/")
        prefixed = bool(sep) and settings.server.provider_prefix_routing
        return prefixed and provider in settings.providers

    return [m for m in models if not known(m)]


def create(settings: Settings, args: argparse.Namespace) -> int:
    models = None
    if args.models is not None:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = _unknown_models(settings, models)
        if unknown:
            print(
                f"warning: not a model of {settings.source}: {', '.join(unknown)} "
                "(the key is scoped to them anyway)",
                file=sys.stderr,
            )
    now = time.time()
    expires_at = None if args.expires is None else parse_expires(args.expires, now)
    with _keystore(settings) as (keys, where):
        secret, info = keys.create(
            args.name,
            models=models,
            rpm=args.rpm,
            tpm=args.tpm,
            max_parallel=args.max_parallel,
            budget_tokens_month=args.budget_tokens_month,
            budget_usd_month=args.budget_usd_month,
            expires_at=expires_at,
        )
    if args.json:
        print(json.dumps({"secret": secret, **info.as_dict(now)}))
    else:
        print(
            f"created key {info.name!r} in {where} ({info.prefix}..., {_limits(info)})",
            file=sys.stderr,
        )
        print(secret)
    print(_WARNING, file=sys.stderr)
    return 0


def _limits(info: KeyInfo) -> str:
    parts = []
    if info.rpm is not None:
        parts.append(f"{info.rpm:,} rpm")
    if info.tpm is not None:
        parts.append(f"{info.tpm:,} tpm")
    if info.max_parallel is not None:
        parts.append(f"{info.max_parallel:,} in parallel")
    if info.budget_tokens_month is not None:
        parts.append(f"{info.budget_tokens_month:,} tokens/mo")
    if info.budget_usd_month is not None:
        parts.append(f"${info.budget_usd_month:,.2f}/mo")
    return ", ".join(parts) or "no limits"


def _used(info: KeyInfo) -> str:
    text = f"{info.tokens_month:,} tokens"
    return text + (f", ${info.usd_month:,.2f}" if info.usd_month else "")


def list_keys(settings: Settings, args: argparse.Namespace) -> int:
    with _keystore(settings) as (keys, where):
        infos = keys.list(include_revoked=not args.active)
    now = time.time()
    if args.json:
        print(json.dumps([info.as_dict(now) for info in infos], indent=2))
        print(f"{len(infos)} keys in {where}", file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"keys in {where}", title_justify="left")
    for column in ("name", "prefix", "models", "limits", "used this month", "last used", "expiry"):
        table.add_column(column, overflow="fold")
    for info in infos:
        status = info.status(now)
        if status == "revoked" and info.revoked_at is not None:
            expiry = f"[red]revoked {human_time(info.revoked_at)}[/red]"
        elif info.expires_at is None:
            expiry = "never"
        else:
            colour = "red" if status == "expired" else "default"
            expiry = f"[{colour}]{human_time(info.expires_at)}[/{colour}]"
        table.add_row(
            info.name,
            info.prefix,
            "all" if info.models is None else ", ".join(info.models),
            _limits(info),
            _used(info),
            "never" if info.last_used_at is None else human_time(info.last_used_at),
            expiry,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped (grep, less): one row a line rather than 80 columns
    if infos:
        console.print(table)
    else:
        console.print(f"no keys in {where} yet: create one with  meridian keys create --name NAME")
    return 0


def revoke(settings: Settings, args: argparse.Namespace) -> int:
    with _keystore(settings) as (keys, where):
        info = keys.revoke(args.name)
    print(f"revoked key {info.name!r} ({info.prefix}...) in {where}", file=sys.stderr)
    return 0


def rotate(settings: Settings, args: argparse.Namespace) -> int:
    with _keystore(settings) as (keys, where):
        secret = keys.rotate(args.name)
    print(f"rotated key {args.name!r} in {where}: the old secret no longer works", file=sys.stderr)
    print(secret)
    print(_WARNING, file=sys.stderr)
    return 0


def apply(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    desired = keyfile.read(path)
    models = [m for want in desired for m in (want.spec.models or [])]
    unknown = _unknown_models(settings, list(dict.fromkeys(models)))
    if unknown:
        print(f"warning: not a model of {settings.source}: {', '.join(unknown)}", file=sys.stderr)
    db = settings.storage.describe()
    if args.dry_run and settings.storage.url is None and not settings.storage.path.exists():
        # Opening would create the database: plan against the empty store it would be.
        changes, where = keyfile.plan(None, desired), f"{db} (does not exist yet)"
    else:
        with _keystore(settings) as (keys, where):
            changes = keyfile.plan(keys, desired) if args.dry_run else keyfile.apply(keys, desired)
    changed = any(c.action != "unchanged" for c in changes)
    if args.json:
        report = {
            "file": str(path),
            "database": db,
            "dry_run": args.dry_run,
            "changed": changed,
            "keys": [c.as_dict() for c in changes],
        }
        print(json.dumps(report, indent=2))
    else:
        for c in changes:
            detail = f" ({', '.join(c.fields)})" if c.fields and c.action == "update" else ""
            verb = "would " + c.action if args.dry_run and c.action != "unchanged" else c.action
            print(f"{c.name}: {verb}{detail}", file=sys.stderr)
            if c.secret is not None:
                print(f"{c.name} {c.secret}")
    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "revoke")}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n) or "nothing to change"
    suffix = " (dry run: nothing written)" if args.dry_run else ""
    print(f"{path} against {where}: {summary}{suffix}", file=sys.stderr)
    if any(c.secret for c in changes) and not args.json:
        print(_WARNING, file=sys.stderr)
    return 0


def generate(args: argparse.Namespace) -> int:
    """A secret for ``keys apply`` (secret_env / secret_file): reads no config, no database."""
    print(new_secret())
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = subparsers.add_parser("keys", help="create, list, revoke, rotate and apply client keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    p = sub.add_parser("create", help="create a key and print its secret once")
    p.add_argument("--name", required=True, help="a unique name, e.g. the client's")
    p.add_argument("--models", metavar="A,B", help="model aliases it may use (default: all)")
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--max-parallel", type=int, help="calls in flight at once")
    p.add_argument("--budget-tokens-month", type=int, metavar="N", help="tokens per month (UTC)")
    p.add_argument("--budget-usd-month", type=float, metavar="X", help="USD per month (UTC)")
    p.add_argument("--expires", metavar="WHEN", help="90d, 12h, 30m, 2w or a date: 2027-01-01")
    p.add_argument("--json", action="store_true", help="print the secret and the key as JSON")
    p.set_defaults(handler=_guarded(create))

    p = sub.add_parser("list", help="list keys with their limits and this month's usage")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--active", action="store_true", help="leave out revoked keys")
    p.set_defaults(handler=_guarded(list_keys))

    p = sub.add_parser("revoke", help="revoke a key (takes effect within about a second)")
    p.add_argument("name")
    p.set_defaults(handler=_guarded(revoke))

    p = sub.add_parser("rotate", help="give a key a new secret; the old one stops working")
    p.add_argument("name")
    p.set_defaults(handler=_guarded(rotate))

    p = sub.add_parser(
        "apply", help="create, update or revoke keys to match a YAML list (idempotent)"
    )
    p.add_argument("file", help="the key list (docs/keys.md: Declared keys)")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--json", action="store_true", help="report the changes as JSON on stdout")
    p.set_defaults(handler=_guarded(apply))

    p = sub.add_parser(
        "generate", help="print a new random key secret, for key files and vaults (no database)"
    )
    p.set_defaults(plain=generate)
