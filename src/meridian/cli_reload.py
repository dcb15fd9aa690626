"""``meridian reload``: make a running gateway read its config file again.

The file is validated here first: an invalid one is reported (exit 2) and the running
gateway is not disturbed. A valid one is applied through the running gateway's
``POST /admin/reload`` on its first listener, with the master key (``server.master_key``, or
the generated key file next to the database), so the answer says what the gateway itself
made of it. Under systemd, ``systemctl reload meridian`` sends SIGHUP instead (the unit's
``ExecReload``); the outcome is then in the log.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from meridian.config import Settings

CONNECT_TIMEOUT_S = 30.0


def local_url(listen: str) -> str:
    """A URL that reaches ``listen`` from this host (wildcards become loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def master_key(settings: Settings) -> str | None:
    if settings.server.master_key is not None:
        return settings.server.master_key.get_secret_value()
    path = settings.storage.path.parent / "master_key"
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def reload(settings: Settings, args: argparse.Namespace) -> int:
    key = master_key(settings)
    if key is None:
        print(
            "meridian reload: no master key to call the gateway with (set server.master_key, "
            f"or run this as a user who can read {settings.storage.path.parent / 'master_key'}); "
            "or send the process SIGHUP",
            file=sys.stderr,
        )
        return 1
    url = local_url(settings.server.listen[0]) + "/admin/reload"
    req = urllib.request.Request(url, method="POST", headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT_S) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = json.loads(err.read() or b"{}")
        message = body.get("error", {}).get("message") or f"HTTP {err.code}"
        print(f"meridian reload: {message}", file=sys.stderr)
        return 2 if err.code == 400 else 1
    except OSError as exc:
        print(f"meridian reload: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"reloaded {result['source']}: generation {result['generation']}, "
        f"{len(result['models'])} models"
    )
    for key_name in result.get("needs_restart") or ():
        print(f"note: {key_name} changed; it takes effect after a restart", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "reload", help="make the running gateway read its config again (validated first)"
    )
    p.set_defaults(handler=reload)
