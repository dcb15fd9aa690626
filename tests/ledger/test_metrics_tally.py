"""The request path's tallies render exactly as prometheus_client's own metrics would."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meridian.metrics.tally import CounterTally, HistogramTally

BUCKETS = (0.01, 0.1, 1, 2.5, 10)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


class Families:
    def __init__(self, *tallies: CounterTally | HistogramTally) -> None:
        self.tallies = tallies

    def describe(self) -> list[object]:
        return []

    def collect(self) -> list[object]:
        return [t.family() for t in self.tallies]


def test_same_samples_as_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = CounterTally("x_requests", "Requests.", ["surface", "status"])
    histogram = HistogramTally("x_seconds", "Latency.", ["surface"], BUCKETS)
    ours.register(Families(counter, histogram))  # type: ignore[arg-type]
    ref_counter = Counter("x_requests", "Requests.", ["surface", "status"], registry=theirs)
    ref_histogram = Histogram("x_seconds", "Latency.", ["surface"], buckets=BUCKETS,
                              registry=theirs)  # fmt: skip
    rng = random.Random(7)
    # Bounds themselves (le is inclusive), zero, past the last bound, and random values.
    values = [*BUCKETS, 0.0, 50.0, *(rng.uniform(0, 12) for _ in range(300))]
    for i, v in enumerate(values):
        surface, status = ("openai", "anthropic")[i % 2], ("200", "429", "500")[i % 3]
        counter.inc((surface, status))
        ref_counter.labels(surface, status).inc()
        histogram.observe((surface,), v)
        ref_histogram.labels(surface).observe(v)
    mine, reference = samples(ours), samples(theirs)
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert abs(mine[key] - value) < 1e-9, key
    # The +Inf bucket is the count.
    inf = (("le", "+Inf"), ("surface", "openai"))
    assert mine[("x_seconds_bucket", inf)] == mine[("x_seconds_count", (("surface", "openai"),))]


def test_scrape_in_another_thread_while_the_loop_records() -> None:
    counter = CounterTally("y_total_things", "Things.", ["k"])
    histogram = HistogramTally("y_seconds", "Latency.", ["k"], BUCKETS)
    registry = CollectorRegistry()
    registry.register(Families(counter, histogram))  # type: ignore[arg-type]
    done = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        while not done.is_set():
            try:
                generate_latest(registry)
            except BaseException as exc:
                errors.append(exc)
                return

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(30_000):
            key = (str(i % 3_000),)  # new label sets appear while the scraper iterates
            counter.inc(key)
            histogram.observe(key, (i % 13) / 3)
    finally:
        done.set()
        scraper.join()
    assert errors == []
    s = samples(registry)
    assert sum(v for (name, _), v in s.items() if name == "y_total_things_total") == 30_000
    assert sum(v for (name, _), v in s.items() if name == "y_seconds_count") == 30_000
