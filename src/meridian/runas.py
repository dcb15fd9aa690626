"""Admin commands run as root act as the owner of the state they open.

``sudo meridian keys create ...`` on a host where the service runs as ``meridian`` must not
leave a database (or its ``-wal`` / ``-shm`` files) that belongs to root: the service could no
longer write to it. So when the effective user is root and the database (or, before it exists,
its directory) belongs to another user, the store is opened with that user's effective uid and
gid, and every file SQLite creates belongs to it. Nothing changes for anyone else.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def owner_of(path: Path) -> tuple[int, int] | None:
    """(uid, gid) of ``path``, else of its directory; None if neither exists."""
    for candidate in (path, path.parent):
        try:
            st = candidate.stat()
        except FileNotFoundError:
            continue
        return st.st_uid, st.st_gid
    return None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@contextmanager
def as_owner(path: Path) -> Iterator[str | None]:
    """Run the block as the owner of ``path`` if we are root and it is not; yields that
    owner's name (None when nothing changed). Effective ids only: restored on exit."""
    owner = owner_of(path)
    if os.geteuid() != 0 or owner is None or owner[0] == 0:
        yield None
        return
    uid, gid = owner
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups([gid])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield user_name(uid)
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)
