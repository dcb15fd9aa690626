"""``meridian migrate`` and ``meridian storage copy``: the database itself.

``migrate`` runs the schema migrations not yet run on the configured database and says which
versions it went from and to (``meridian serve`` runs them at start too; a deployment that
wants schema changes as a step of their own runs this first). ``storage copy`` moves keys and
the usage ledger from one database to another (`meridian.storage.copy`).
"""

from __future__ import annotations

import argparse
import sys

from meridian.config import Settings
from meridian.storage import Store, StoreError, make_store
from meridian.storage.copy import copy_all
from meridian.storage.sqlite import SQLiteStore


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = subparsers.add_parser(
        "migrate",
        help="run the database's schema migrations and report its version",
        description="Run the migrations not yet run on storage.url (or storage.path).",
    )
    migrate.set_defaults(handler=run_migrate)
    storage = subparsers.add_parser("storage", help="the database: copy it to another")
    sub = storage.add_subparsers(dest="storage_command", required=True, metavar="COMMAND")
    copy = sub.add_parser(
        "copy",
        help="copy keys and usage from one database into an empty one",
        description="Copy every key (its hash, limits, revocation; secrets are never stored) "
        "and every usage row from --from into --to, which must hold no key and no usage yet. "
        "Each is a storage URL (sqlite:///ABS/PATH, postgresql://...) or a SQLite file's path.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="URL")
    copy.add_argument("--to", dest="target", required=True, metavar="URL")
    copy.set_defaults(plain=run_copy)


def run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    where = settings.storage.describe()
    try:
        store = settings.storage.store().open(migrate=False)
        try:
            before, after = store.migrate()
        finally:
            store.close()
    except StoreError as exc:
        print(f"meridian migrate: {exc}", file=sys.stderr)
        return 2
    if before == after:
        print(f"{where}: schema version {after}, up to date")
    else:
        print(f"{where}: schema version {before} -> {after} ({after - before} migrations run)")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    try:
        source = make_store(args.source)
        target = make_store(args.target)
        _distinct(source, target)
        source.open()
        try:
            target.open()
            try:
                copied = copy_all(source, target)
            finally:
                target.close()
        finally:
            source.close()
    except StoreError as exc:
        print(f"meridian storage copy: {exc}", file=sys.stderr)
        return 2
    print(
        f"copied {copied.keys} keys and {copied.usage} usage rows "
        f"from {source.describe()} to {target.describe()}"
    )
    return 0


def _distinct(source: Store, target: Store) -> None:
    """Refuse what would copy nothing by mistake: a source SQLite file that does not exist
    (opening it would create an empty one, and a typo would end in "copied 0 keys"), and a
    database copied onto itself."""
    if isinstance(source, SQLiteStore) and not source.path.exists():
        raise StoreError(f"{source.describe()}: no such database file: nothing to copy from")
    if isinstance(source, SQLiteStore) and isinstance(target, SQLiteStore):
        same = target.path.exists() and source.path.samefile(target.path)
    else:
        same = source.describe() == target.describe()
    if same:
        raise StoreError(f"--from and --to both name {source.describe()}: nothing to copy")


def probe(settings: Settings) -> tuple[bool, str]:
    """Whether the configured database can be used, and what `meridian check` says of it."""
    from meridian import runas
    from meridian.storage import MIGRATIONS

    conf = settings.storage
    if conf.url is None and not conf.path.exists():
        return True, "not created yet: meridian serve creates it"
    try:
        # Run as root, as its owner: a SQLite file's -wal and -shm must stay the service's.
        with runas.as_owner(conf.path):
            store = conf.store().open(migrate=False)
            try:
                version = store.schema_version()
            finally:
                store.close()
    except StoreError as exc:
        return False, str(exc)
    if version < len(MIGRATIONS):
        return True, (
            f"connected, schema version {version} of {len(MIGRATIONS)}: meridian migrate (or the "
            "next start) brings it up to date"
        )
    return True, f"connected, schema version {version}"
