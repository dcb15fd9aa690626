"""Metrics across ``server.workers``: one scrape shows every worker.

A scrape reaches one worker (the kernel picks which process accepts the connection), but each
worker counts only what it served. So every worker writes its series to
``<run dir>/worker-<i>.json`` about once a second, and ``/metrics`` on any worker answers
with its own series, live, and every other worker's latest file, each sample labelled
``worker="<i>"``. Counters and histograms are summed in the query
(``sum without (worker) (rate(meridian_requests_total[5m]))``); a sibling's numbers are at
most ``SNAPSHOT_S`` old. A worker that the supervisor replaced starts its counters again
from zero under the same label, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client.core import Metric

log = logging.getLogger("meridian.metrics")

SNAPSHOT_S = 1.0


class _Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _encode(families: Iterable[Metric]) -> bytes:
    return orjson.dumps(
        [
            [f.name, f.type, f.documentation, f.unit,
             [[s.name, s.labels, s.value] for s in f.samples]]
            for f in families
        ]
    )  # fmt: skip


def _labelled(families: Iterable[Any], worker: str, into: dict[str, Metric]) -> None:
    """Add ``families`` (live `Metric` objects or decoded lists) to ``into`` by name, every
    sample labelled with its worker."""
    for fam in families:
        if isinstance(fam, Metric):
            name, typ, doc, unit = fam.name, fam.type, fam.documentation, fam.unit
            samples = [(s.name, s.labels, s.value) for s in fam.samples]
        else:
            name, typ, doc, unit, samples = fam
        merged = into.get(name)
        if merged is None:
            merged = into[name] = Metric(name, doc, typ, unit)
        for sample, labels, value in samples:
            merged.add_sample(sample, {**labels, "worker": worker}, value)


class WorkerMetrics:
    """One worker's side: its snapshot file, and the merged view it renders."""

    def __init__(self, registry: _Collects, run_dir: Path, index: int) -> None:
        self.registry = registry
        self.run_dir = run_dir
        self.index = index
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / f"worker-{self.index}.json"

    def write(self) -> None:
        """Replace this worker's snapshot (atomically: a reader sees the old or the new)."""
        tmp = self.run_dir / f".worker-{self.index}.json.tmp"
        tmp.write_bytes(_encode(self.registry.collect()))
        os.replace(tmp, self.path)

    async def start(self) -> None:
        self.write()
        self._task = asyncio.create_task(self._run(), name="metrics-snapshot")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self.write()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_S)
            try:
                self.write()
            except OSError as exc:
                log.warning("cannot write this worker's metrics snapshot: %s", exc)

    def collect(self) -> Iterable[Metric]:
        """Every worker's series: this one's live, the others' from their files."""
        merged: dict[str, Metric] = {}
        _labelled(self.registry.collect(), str(self.index), merged)
        for path in sorted(self.run_dir.glob("worker-*.json")):
            worker = path.stem.removeprefix("worker-")
            if worker == str(self.index):
                continue
            try:
                families = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker being replaced; its next snapshot comes within a second
            _labelled(families, worker, merged)
        return merged.values()
