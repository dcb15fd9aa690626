"""``server.workers: N``: N processes serving the same listeners on one host.

One event loop uses one core. With ``workers: N`` the process that was started (by systemd or
a shell) becomes a supervisor: it binds every listener, opens the store once (so migrations
run once, before anyone serves), then forks N workers. Each worker builds its own app (store
connection, providers, limiter client) and accepts on the inherited sockets; the kernel hands
each connection to one of them. What must hold across workers lives outside them: limits and
deployment cooldowns in Redis (``limits.redis_url``, which the config requires for N > 1),
keys and the usage ledger in the shared store, metrics merged at scrape time
(`meridian.metrics.shared`).

The supervisor serves nothing itself. It waits for signals (`signal.sigwaitinfo`, so none is
lost between two waits):

- SIGTERM / SIGINT: passed to every worker, each shutting down gracefully as one process does
  (``server.shutdown_grace_s``); the supervisor exits when the last one has.
- SIGHUP: passed to every worker, which reloads the config file. A worker keeps SIGHUP blocked
  until it has started (`Worker.take_reloads`): one sent meanwhile waits, instead of killing
  it. A worker started after a reload (a replacement) reads the config file again as it
  starts, so that it serves what its siblings serve.
- SIGUSR1 from a worker: it has reloaded through ``POST /admin/reload``; the others reload too.
- SIGCHLD: a worker that exits while the service runs is replaced. A worker that dies within
  ``STARTUP_S`` of its start ``FAST_FAILURES`` times in a row means it cannot start at all:
  the supervisor stops the rest and exits 1, and systemd's restart policy takes over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("meridian.workers")

STARTUP_S = 10.0
FAST_FAILURES = 5
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1}


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker knows of its place."""

    index: int
    run_dir: Path  # shared by the workers (metrics snapshots)
    supervisor: int  # its pid
    # Readable (at EOF) once the supervisor is gone, however it went: the worker then stops.
    orphaned_fd: int
    # The service has reloaded since it started: the configuration it was started with is
    # out of date, and this worker reads the file again.
    reloaded: bool = False

    def take_reloads(self) -> None:
        """The worker can reload now (its SIGHUP handler is in place and it has started):
        let SIGHUP through, with one that came while it started."""
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def notify_siblings(self) -> None:
        """This worker has reloaded; the supervisor reloads the others."""
        if os.getppid() == self.supervisor:  # never signal whoever adopted an orphan
            os.kill(self.supervisor, signal.SIGUSR1)


# What a worker runs -> its exit code.
WorkerMain = Callable[[Worker], int]


class Supervisor:
    def __init__(
        self,
        workers: int,
        run: WorkerMain,
        sockets: Sequence[socket.socket],
        stop_within_s: float = 60.0,
    ) -> None:
        self.count = workers
        # After SIGTERM: how long workers get to stop before they are killed.
        self.stop_within_s = stop_within_s
        self.stop_by: float | None = None
        self.run = run
        self.sockets = sockets
        self.run_dir = Path(tempfile.mkdtemp(prefix="meridian-workers-"))
        # The write end stays open in the supervisor only: workers see EOF when it is gone.
        self._orphaned_r, self._alive_w = os.pipe()
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it was (re)started
        self.fast_failures = 0
        self.reloads = 0  # passed on to the workers
        self.stopping = False
        self.failed = False

    def serve(self) -> int:
        """Run the workers until SIGTERM/SIGINT (0), or until they cannot start (1)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(self.count):
                self._spawn(index)
            log.info("supervising %d workers", self.count, extra={"pids": sorted(self.pids)})
            while self.pids:
                if self.stop_by is None or self.failed:
                    info = signal.sigwaitinfo(_SIGNALS)
                else:
                    left = self.stop_by - time.monotonic()
                    got = signal.sigtimedwait(_SIGNALS, max(0.0, left)) if left > 0 else None
                    if got is None:
                        self._kill_stragglers()
                        continue
                    info = got
                self._on_signal(info.si_signo, info.si_pid)
        finally:
            for sock in self.sockets:
                sock.close()
            os.close(self._orphaned_r)
            os.close(self._alive_w)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 1 if self.failed else 0

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(self._alive_w)
                for sig in _SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                # SIGHUP's default would end the worker: blocked until it can reload.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS - {signal.SIGHUP})
                me = Worker(
                    index, self.run_dir, os.getppid(), self._orphaned_r, self.reloads > 0
                )
                code = self.run(me)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.pids[pid] = index
        self.started[index] = time.monotonic()

    def _on_signal(self, signo: int, sender: int) -> None:
        if signo in (signal.SIGTERM, signal.SIGINT):
            if self.stop_by is None:
                log.info("stopping %d workers", len(self.pids))
                self.stop_by = time.monotonic() + self.stop_within_s
                for sock in self.sockets:  # no new connection waits on a socket nobody serves
                    sock.close()
            self.stopping = True
            self._send(signal.SIGTERM)
        elif signo == signal.SIGHUP:
            self.reloads += 1
            self._send(signal.SIGHUP)
        elif signo == signal.SIGUSR1:
            self.reloads += 1
            self._send(signal.SIGHUP, but=sender)
        elif signo == signal.SIGCHLD:
            self._reap()

    def _kill_stragglers(self) -> None:
        """Workers still running when the stop deadline passes are killed (as systemd would
        at its own timeout), so a worker that cannot finish never holds the service up."""
        log.error(
            "%d workers did not stop within %gs of SIGTERM: killing them",
            len(self.pids),
            self.stop_within_s,
            extra={"pids": sorted(self.pids)},
        )
        self.failed = True
        self._send(signal.SIGKILL)

    def _send(self, sig: int, but: int | None = None) -> None:
        for pid in self.pids:
            if pid != but:
                with contextlib.suppress(ProcessLookupError):  # exited: SIGCHLD is on the way
                    os.kill(pid, sig)

    def _reap(self) -> None:
        while self.pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code != 0:
                    log.warning("worker %d exited with %d while stopping", index, code)
                continue
            lived = time.monotonic() - self.started[index]
            self.fast_failures = self.fast_failures + 1 if lived < STARTUP_S else 0
            if self.fast_failures >= FAST_FAILURES:
                log.error(
                    "workers keep exiting right after they start (%d in a row, the last "
                    "with %d): stopping",
                    self.fast_failures,
                    code,
                )
                self.failed = self.stopping = True
                self._send(signal.SIGTERM)
                continue
            log.error("worker %d (pid %d) exited with %d: starting another", index, pid, code)
            self._spawn(index)
