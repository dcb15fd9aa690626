"""This machine's time zone, named the way PostgreSQL's ``TimeZone`` setting takes it.

SQLite's ``'localtime'`` asks the C library; a PostgreSQL server has a zone of its own, maybe
another host's. ``meridian usage --by day`` must split days on the reader's clock on either
backend, so each connection is set to this zone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def session_time_zone() -> str:
    tz = os.environ.get("TZ", "").removeprefix(":")
    if tz and not tz.startswith("/"):
        return tz  # an IANA name or a POSIX rule: PostgreSQL reads both
    link = Path(tz or "/etc/localtime")
    try:
        target = str(link.resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    if name:
        return name
    # A fixed offset, as a POSIX rule: hours *west* of Greenwich are positive there.
    east = time.localtime().tm_gmtoff // 60
    sign = "-" if east >= 0 else "+"
    return f"UTC{sign}{abs(east) // 60:02d}:{abs(east) % 60:02d}"
