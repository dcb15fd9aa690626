"""The request hot path of client keys: `StoreKeyResolver`, answering from memory.

A dict lookup, with the store consulted at most about once a second (a version number says
whether another process changed a key: ``PRAGMA data_version`` of a SQLite file, which
``meridian keys`` next to a running server changes; on PostgreSQL the ``keys_version`` row
that every key write bumps, whichever replica made it) and on a cache miss, so a key created
or revoked anywhere takes effect within about a second.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass

from meridian.auth import Principal
from meridian.errors import AuthenticationFailed
from meridian.keys import SECRET_PREFIX, VISIBLE_CHARS, KeyInfo, KeyStore, digest, human_time

log = logging.getLogger("meridian.keys")


@dataclass(frozen=True, slots=True)
class _Entry:
    hash: bytes
    info: KeyInfo
    principal: Principal


class StoreKeyResolver:
    """`auth.KeyResolver` over a `KeyStore`, answering from memory.

    The cache holds every key, revoked ones included (to say "revoked" rather than "invalid"),
    indexed by the visible prefix; the digest is then compared in constant time. ``last_used_at``
    is collected in memory and written in one transaction at most every ``touch_s`` seconds, by
    a task of its own: call `aclose` on shutdown to write the last batch.

    A database that cannot be reached (a PostgreSQL server restarting) does not stop the keys
    already loaded from working: the cache answers, and checks go on in the background, with no
    request waiting for them, until one succeeds. Nothing is missed meanwhile: no key can be
    revoked in a database that cannot be written.
    """

    def __init__(self, keys: KeyStore, *, refresh_s: float = 1.0, touch_s: float = 5.0) -> None:
        self._keys = keys
        self._clock = keys.clock
        self._refresh_s = refresh_s
        self._touch_s = touch_s
        self._by_prefix: dict[str, list[_Entry]] = {}
        self._version: tuple[int, int] | None = None  # (data_version, generation) cached
        self._checked_at = float("-inf")
        # The check in progress: requests that need one meanwhile wait for it, all woken at
        # once when it ends. (Behind a lock they were woken one per loop iteration: under load
        # the last of ~30 waiters waited ~40 ms, once a second.)
        self._check: asyncio.Future[None] | None = None
        self._unreachable = False  # the last check failed: checks no longer hold requests up
        self._used: dict[int, float] = {}
        self._touched_at = self._clock()
        self._touch_task: asyncio.Task[None] | None = None

    async def resolve(self, secret: str) -> Principal | None:
        if not secret.startswith(SECRET_PREFIX) or len(secret) != len(SECRET_PREFIX) + 43:
            return None  # not one of ours: no reason to look at the database
        now = self._clock()
        if now - self._checked_at >= self._refresh_s or (
            self._version is not None and self._version[1] != self._keys.generation
        ):
            if self._unreachable:
                self._start_check()
            else:
                await self._refresh()
        entry = self._find(secret)
        if entry is None:
            if self._unreachable:
                return None  # no key can have been created where none can be read
            # A key created a moment ago by the CLI in another process: check before saying no.
            await self._refresh()
            entry = self._find(secret)
            if entry is None:
                return None
        info = entry.info
        if info.revoked:
            raise AuthenticationFailed(f"key {info.name!r} was revoked")
        if info.expires_at is not None and now >= info.expires_at:
            raise AuthenticationFailed(
                f"key {info.name!r} expired on {human_time(info.expires_at)}"
            )
        self._used[info.id] = now
        if now - self._touched_at >= self._touch_s and self._touch_task is None:
            self._touched_at = now
            self._touch_task = asyncio.create_task(self._touch())
        return entry.principal

    async def aclose(self) -> None:
        """Write the pending ``last_used_at`` times (call on shutdown)."""
        if self._touch_task is not None:
            await self._touch_task
        await self._touch()

    def _find(self, secret: str) -> _Entry | None:
        wanted = digest(secret)
        for entry in self._by_prefix.get(secret[:VISIBLE_CHARS], ()):
            if hmac.compare_digest(entry.hash, wanted):
                return entry
        return None

    async def _refresh(self) -> None:
        # Shielded: a caller that goes away does not cancel the check the others wait for.
        await asyncio.shield(self._start_check())

    def _start_check(self) -> asyncio.Future[None]:
        check = self._check
        if check is None:
            check = self._check = asyncio.ensure_future(self._reload())
            check.add_done_callback(self._check_done)
        return check

    def _check_done(self, check: asyncio.Future[None]) -> None:
        self._check = None
        if not check.cancelled():
            check.exception()  # every waiter gets it raised; mark it retrieved if none is left

    async def _reload(self) -> None:
        generation = self._keys.generation  # read first: a write during the load reloads
        try:
            version = (await asyncio.to_thread(self._keys.data_version), generation)
            if version != self._version:
                rows = await asyncio.to_thread(self._keys.all_rows)
                by_prefix: dict[str, list[_Entry]] = {}
                for hash_, info in rows:
                    entry = _Entry(hash_, info, info.principal())
                    by_prefix.setdefault(info.prefix, []).append(entry)
                self._by_prefix = by_prefix
                self._version = version
        except self._keys.store.unavailable as exc:
            if self._version is None:
                raise  # nothing loaded to answer from
            self._checked_at = self._clock()
            if not self._unreachable:
                log.warning("keys: the database cannot be read (%s); the loaded keys answer", exc)
            self._unreachable = True
            return
        if self._unreachable:
            log.warning("keys: the database can be read again")
        self._unreachable = False
        self._checked_at = self._clock()

    async def _touch(self) -> None:
        batch, self._used = self._used, {}
        try:
            if batch:
                await asyncio.to_thread(self._keys.touch, batch)
        except Exception:
            log.warning("could not record when keys were last used", exc_info=True)
            for key_id, ts in batch.items():
                self._used.setdefault(key_id, ts)
        finally:
            self._touch_task = None
