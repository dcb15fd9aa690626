"""Every CLI process of a provider, from spawn to stop, and which one answers a request.

    run(spec, caller):
      a live process holding exactly this caller's conversation so far (same options, same
      earlier turns, hashed)?  -> continue it: no spawn, no transcript        (a hit)
      else, for a first turn, a warm spare started with these options?  -> ask it
      else: a slot (`Slots`; the longest-idle process is evicted for it when every slot is
            taken, else the request waits in a bounded queue) -> a fresh process resuming
            a transcript of the history
    and at the end, once the answer is whole: keep the process for the conversation's next
    turn (`IdleProcesses`: ``continuation_ttl_s``, ``live_memory_mb``), or stop it.

Nothing is kept without a caller (a client key) to key it by, nor while requests wait for a
slot, and a key only ever reaches its own processes.

Every stop runs to its end whatever happens to the task that asked for it (a client that
leaves cancels its call's task): interrupt, end of input, SIGTERM, SIGKILL, files removed,
the process dropped from the pool, its slot passed on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from claude_agent_sdk import Message

from meridian.config import ClaudeCodeProviderConfig
from meridian.providers.claude.command import default_cli
from meridian.providers.claude.idle import IdleProcesses
from meridian.providers.claude.process import CliProcess
from meridian.providers.claude.slots import Slots
from meridian.providers.claude.spec import RunSpec, Turn, conversation_key

log = logging.getLogger("meridian.claude")


@dataclass(eq=False)
class Run:
    """One request's turn on a process; `keep` asks for the process to wait for the next."""

    process: CliProcess
    spec: RunSpec
    deadline: float
    continued: bool = False  # a live process answered: no spawn
    kept_as: tuple[Turn, ...] | None = None

    @property
    def cost_before(self) -> float:
        return self.process.cost

    def messages(self) -> AsyncGenerator[Message, None]:
        return self.process.messages(self.deadline)

    def keep(self, answer: Turn) -> None:
        """The answer was whole and the client has it: the conversation is now the request's
        turns plus this answer, and the process may wait for what follows."""
        assert self.spec.turn is not None
        self.kept_as = (*self.spec.history, self.spec.turn, answer)


class ClaudeProcesses:
    def __init__(
        self, config: ClaudeCodeProviderConfig, *, name: str = "claude", cli_path: str | None = None
    ) -> None:
        self.config = config
        self.name = name  # the provider's, for messages
        # The kernel kills the CLI if meridian dies without cleaning up (even SIGKILL); an
        # orphan would otherwise finish its answer before noticing stdin closed.
        setpriv = shutil.which("setpriv")
        launcher = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        self._cli = [*launcher, cli_path or default_cli()]
        c = config
        self.slots = Slots(c.max_concurrency, c.max_queue, c.queue_timeout_s, name)
        self.idle = IdleProcesses(c.continuation_ttl_s, c.live_memory_mb, self._evict)
        self._procs: set[CliProcess] = set()  # every process, from spawn to its last breath
        self._busy: set[CliProcess] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scratch: Path | None = None
        self._cwd: Path | None = None
        self.counts: Counter[str] = Counter()  # hits, misses, spawns, spare_hits
        self.evictions: Counter[str] = Counter()  # by reason: ttl, slot, memory, died, ...

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    @property
    def queue_depth(self) -> int:
        return self.slots.waiting

    @property
    def processes(self) -> int:
        """Every process the pool holds, from spawn until its stop has ended."""
        return len(self._procs)

    @property
    def scratch(self) -> Path | None:
        """Where each process's scratch directory lives while it runs."""
        return self._scratch

    def status(self) -> dict[str, Any]:
        return {
            "busy": len(self._busy),
            "idle": self.idle.kept,
            "spares": self.idle.spares,
            "limit": self.config.max_concurrency,
            "idle_rss_mb": round(self.idle.rss_mb()),
            "hits": self.counts["hits"],
            "misses": self.counts["misses"],
            "spawns": self.counts["spawns"],
            "spare_hits": self.counts["spare_hits"],
            "evictions": dict(self.evictions),
        }

    async def start(self) -> None:
        try:
            self.config.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # /ready and every request will say it is not logged in
            log.warning(
                "%s: cannot create config_dir %s: %s", self.name, self.config.config_dir, exc
            )
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="meridian-claude-"))
            # Named upstream as the working directory: a bare temporary name, empty.
            self._cwd = Path(tempfile.mkdtemp())
            atexit.register(self.kill_all)

    async def aclose(self) -> None:
        """Stop every process (busy, idle and spare) and wait for the stops; safe twice."""
        for proc in list(self._procs):
            self.idle.remove(proc)
            self._background(self._stop(proc))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=15)
        self.kill_all()
        if self._scratch is not None and self._cwd is not None:
            atexit.unregister(self.kill_all)
            shutil.rmtree(self._scratch, ignore_errors=True)
            shutil.rmtree(self._cwd, ignore_errors=True)
            self._scratch = self._cwd = None

    def kill_all(self) -> None:
        for proc in list(self._procs):
            proc.kill()

    @contextlib.asynccontextmanager
    async def run(
        self, spec: RunSpec, *, deadline: float | None = None, caller: str | None = None
    ) -> AsyncIterator[Run]:
        """A process asked ``spec.turn``; leaving the block keeps it (if `Run.keep` was called
        and the turn ended cleanly) or stops it. ``deadline`` (loop time) is the framework's;
        the provider's own request_timeout_s may be sooner."""
        if self._scratch is None:
            await self.start()
        own = asyncio.get_running_loop().time() + self.config.request_timeout_s
        deadline = own if deadline is None else min(own, deadline)
        proc, continued = self._take(spec, caller)
        if proc is None:
            await self._acquire()
            try:
                proc = self._spawn(spec, caller)
            except BaseException:
                self.slots.release()
                raise
        self._busy.add(proc)
        run = Run(proc, spec, deadline, continued=continued)
        try:
            if not proc.started:
                await proc.start(deadline)
            # A fresh process resumes the client's tool results from its transcript; a live
            # one, stopped at those calls, takes them as its next message.
            await proc.ask(None if spec.resumes and not continued else spec.turn, deadline)
            yield run
        except BaseException:
            run.kept_as = None
            raise
        finally:
            self._busy.discard(proc)
            await self._shielded(self._finish(run, caller))

    def _take(self, spec: RunSpec, caller: str | None) -> tuple[CliProcess | None, bool]:
        """The live process holding this conversation, or a spare for a first turn."""
        if caller is None or self.config.continuation_ttl_s <= 0:
            return None, False
        if spec.history:
            key, counter = conversation_key(caller, spec, spec.history), "hits"
        else:
            key, counter = caller.encode() + b"\0" + spec.options_key(), "spare_hits"
        proc = self.idle.take(key)
        if proc is not None and not proc.alive:
            self._evict(proc, "died")
            proc = None
        if proc is not None:
            self.counts[counter] += 1
            return proc, bool(spec.history)
        if spec.history:
            self.counts["misses"] += 1
        return None, False

    def _spawn(self, spec: RunSpec, caller: str | None) -> CliProcess:
        assert self._scratch is not None and self._cwd is not None
        proc = CliProcess(
            self.config,
            spec,
            name=self.name,
            cli=self._cli,
            scratch=self._scratch,
            cwd=self._cwd,
            caller=caller,
        )
        self._procs.add(proc)
        self.counts["spawns"] += 1
        return proc

    async def _finish(self, run: Run, caller: str | None) -> None:
        proc = run.process
        if run.kept_as is not None and caller is not None and self._may_keep(proc):
            self.idle.keep(proc, conversation_key(caller, run.spec, run.kept_as))
            if not run.spec.history and not run.continued:
                self._replenish(run.spec, caller)
            return
        await self._stop(proc)

    def _may_keep(self, proc: CliProcess) -> bool:
        if self.config.continuation_ttl_s <= 0 or not proc.alive or not proc.finished:
            return False
        if self.slots.waiting:  # someone needs the slot now
            return False
        if not self.idle.room_for(proc):
            self.evictions["memory"] += 1
            return False
        return True

    def _replenish(self, spec: RunSpec, caller: str) -> None:
        """After a first turn, start a spare with its options for the next first turn."""
        if self.idle.spares >= self.config.warm_spares or not self.slots.take():
            return
        proc = self._spawn(replace(spec, history=(), turn=None), caller)
        self._background(self._start_spare(proc, caller.encode() + b"\0" + spec.options_key()))

    async def _start_spare(self, proc: CliProcess, key: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await proc.start(loop.time() + self.config.request_timeout_s)
        except Exception as exc:
            log.info("%s: a warm spare failed to start: %s", self.name, exc)
        if proc.alive and not self.slots.waiting and self.idle.room_for(proc):
            self.idle.add_spare(proc, key)
        else:
            await self._stop(proc)

    async def _acquire(self) -> None:
        """A slot for a new process: a free one, else the longest-idle process's, else a
        place in the bounded queue until a stop passes one on."""
        if self.slots.take():
            return
        oldest = self.idle.oldest()
        if oldest is None:
            await self.slots.wait()
            return
        self.idle.remove(oldest)
        self.evictions["slot"] += 1
        oldest.handoff = True  # its slot is this request's, not the queue's
        try:
            await self._shielded(self._stop(oldest))
        except BaseException:
            self.slots.release()
            raise

    def _evict(self, proc: CliProcess, reason: str) -> None:
        self.evictions[reason] += 1
        self._background(self._stop(proc))

    async def _stop(self, proc: CliProcess) -> None:
        try:
            await proc.stop()
        finally:
            if proc in self._procs:  # once, however many asked for the stop
                self._procs.discard(proc)
                if not proc.handoff:
                    self.slots.release()

    def _background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shielded(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` to its end even if this task is cancelled meanwhile (then re-raise):
        a stop cut short at its first await would SIGKILL the CLI, which then leaves its
        session files behind, and the pool would never drop the process."""
        task = self._background(coro)
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        task.result()
