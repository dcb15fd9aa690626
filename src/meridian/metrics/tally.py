"""The request path's counters, gauges and histograms: plain dicts, read at scrape time.

``prometheus_client``'s own metric objects take a lock on every update and cost a few method
calls per label lookup; on the request path that was a tenth of the gateway's own work per
call. Here an update is a dict lookup and an add, made only on the event loop's thread. A
scrape renders in a worker thread: it copies each dict (one C-level call, atomic under the
GIL) and builds the standard metric families from the copy, so the exposition format, names
and labels are exactly ``prometheus_client``'s.

A histogram keeps, per label set, one count per bucket (not cumulative) and the sum; its
``_count`` is the total of the buckets, so ``+Inf`` and ``_count`` always agree.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

# How prometheus_client writes a bucket's bound (``1.0``, ``0.01``); untyped upstream.
_bound = cast(Callable[[float], str], floatToGoString)

Labels = tuple[str, ...]


class _SumTally:
    """A number per label set, added to; rendered as a ``family_type``."""

    family_type: type[CounterMetricFamily] | type[GaugeMetricFamily]

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[Labels, float] = {}

    def add(self, key: Labels, amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def family(self) -> Metric:
        family = self.family_type(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.copy().items():
            family.add_metric(key, value)
        return family


class CounterTally(_SumTally):
    family_type = CounterMetricFamily


class GaugeTally(_SumTally):
    family_type = GaugeMetricFamily


class HistogramTally:
    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._names = [_bound(b) for b in self.bounds] + ["+Inf"]
        # Per label set: a count per bucket (the last one is +Inf), then the sum.
        self.values: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        counts = self.values.get(key)
        if counts is None:
            counts = self.values[key] = [0.0] * (len(self.bounds) + 2)
        # ``le`` is inclusive: a value equal to a bound counts in that bound's bucket.
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, live in self.values.copy().items():
            counts = live[:]  # the loop's thread may be adding to it
            running, buckets = 0.0, []
            for name, n in zip(self._names, counts, strict=False):
                running += n
                buckets.append((name, running))
            family.add_metric(key, buckets, counts[-1])
        return family
