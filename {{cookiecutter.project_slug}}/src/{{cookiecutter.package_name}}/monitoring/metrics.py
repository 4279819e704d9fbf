"""Prometheus metrics of the service, correct with several workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf.py sets a fresh one per
start), every worker writes its values to files there and `/metrics`
aggregates them, so a scrape that lands on any worker sees all of them.
Every gauge names how workers combine (`multiprocess_mode`), and the
per-worker gauges carry labels, so a worker that has not set one yet adds
no sample (an unlabelled gauge would add a 0 from every worker).

The request path does not write to Prometheus itself: in multiprocess mode
every write is a locked write to a memory-mapped file (1-3 us), and a
request made six of them. It counts in plain numbers instead (`Local*`
below), which `flush()` adds to Prometheus every FLUSH_EVERY_S and before
each scrape: a scrape sees its own worker exactly, the others at most
FLUSH_EVERY_S late.
"""

import os
import time
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request to complete response, by route and status.",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "Requests being served now.",
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "micro_batch_size",
    "Items per forward pass formed by the micro-batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
INFERENCE = Histogram(
    "model_inference_seconds",
    "Time of one forward pass (validate and encode excluded).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
CACHE_HITS = Counter(
    "prediction_cache_hits", "Cache hits, by layer.", ["layer"]
)
CACHE_MISSES = Counter("prediction_cache_misses", "Cache misses.")
CACHE_ERRORS = Counter(
    "prediction_cache_errors", "Shared-cache (Redis) failures."
)
PREDICTION_LOG_DROPPED = Counter(
    "prediction_log_dropped_lines",
    "Prediction-log lines that could not be written (disk full, ...).",
)
MODEL_INFO = Gauge(
    "model_info",
    "The model being served (value 1), with its version and device.",
    ["app_version", "model_version", "device", "quantized"],
    multiprocess_mode="livemax",
)


FLUSH_EVERY_S = 1.0


class LocalCounter:
    """A counter of this process, added to a Prometheus counter at flush."""

    __slots__ = ("target", "value")

    def __init__(self, target):
        self.target, self.value = target, 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def flush(self) -> None:
        if self.value:
            self.target.inc(self.value)
            self.value = 0


class LocalHistogram:
    """A histogram of this process, added to a Prometheus one at flush."""

    __slots__ = ("target", "bounds", "counts", "total")

    def __init__(self, target):
        self.target = target
        self.bounds = target._upper_bounds  # the last one is +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": bisect_left.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        # prometheus_client observes one value at a time; add the counts of
        # every bucket to its bucket values in one go instead.
        if not any(self.counts):
            return
        for bucket, count in zip(self.target._buckets, self.counts):
            if count:
                bucket.inc(count)
        self.target._sum.inc(self.total)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


class RequestStats:
    """Count, latency and in-flight requests, by route, method and status."""

    def __init__(self):
        self.in_flight = 0
        self._by_key: dict[tuple, tuple[LocalCounter, LocalHistogram]] = {}

    def record(self, route: str, method: str, status: int, seconds: float):
        key = (route, method, status)
        local = self._by_key.get(key)
        if local is None:
            code = str(status)
            local = self._by_key[key] = (
                LocalCounter(REQUESTS.labels(route, method, code)),
                LocalHistogram(LATENCY.labels(route, code)),
            )
        local[0].value += 1
        local[1].observe(seconds)

    def flush(self) -> None:
        for counter, histogram in self._by_key.values():
            counter.flush()
            histogram.flush()
        IN_FLIGHT.set(self.in_flight)


REQUEST_STATS = RequestStats()
LOCAL_BATCH_SIZE = LocalHistogram(BATCH_SIZE)
LOCAL_INFERENCE = LocalHistogram(INFERENCE)
LOCAL_CACHE_HITS = {
    layer: LocalCounter(CACHE_HITS.labels(layer))
    for layer in ("local", "redis")
}
LOCAL_CACHE_MISSES = LocalCounter(CACHE_MISSES)


def flush() -> None:
    """Add what the request path counted since the last flush."""
    REQUEST_STATS.flush()
    for local in (LOCAL_BATCH_SIZE, LOCAL_INFERENCE, LOCAL_CACHE_MISSES):
        local.flush()
    for counter in LOCAL_CACHE_HITS.values():
        counter.flush()


def flush_every(seconds: float = FLUSH_EVERY_S) -> None:
    """Flush on the running event loop every `seconds`, for as long as it
    runs (other workers' numbers reach a scrape this way)."""
    import asyncio

    loop = asyncio.get_running_loop()

    def tick():
        try:
            flush()
        finally:  # one failed flush must not stop the later ones
            loop.call_later(seconds, tick)

    loop.call_later(seconds, tick)


def observe_inference(predict):
    """Wrap a prediction function so each forward pass is timed."""

    def timed(*args):
        start = time.perf_counter()
        try:
            return predict(*args)
        finally:
            LOCAL_INFERENCE.observe(time.perf_counter() - start)

    return timed


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
