"""Prometheus metrics of the service, correct with several workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf.py sets a fresh one per
start), every worker writes its values to files there and `/metrics`
aggregates them, so a scrape that lands on any worker sees all of them.
Every gauge names how workers combine (`multiprocess_mode`), and the
per-worker gauges carry labels, so a worker that has not set one yet adds
no sample (an unlabelled gauge would add a 0 from every worker).
"""

import os
import time

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
MODEL_INFO = Gauge(
    "model_info",
    "The model being served (value 1), with its version and device.",
    ["app_version", "model_version", "device", "quantized"],
    multiprocess_mode="livemax",
)


def observe_inference(predict_rows):
    """Wrap a predict_rows function so each forward pass is timed."""

    def timed(rows):
        start = time.perf_counter()
        try:
            return predict_rows(rows)
        finally:
            INFERENCE.observe(time.perf_counter() - start)

    return timed


class MetricsMiddleware:
    """Pure ASGI middleware: request count, latency and in-flight gauge."""

    def __init__(self, app, routes: set[str]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in self.routes else "other"
        status = 500
        start = time.perf_counter()

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            IN_FLIGHT.dec()
            code = str(status)
            LATENCY.labels(route, code).observe(time.perf_counter() - start)
            REQUESTS.labels(route, scope["method"], code).inc()


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
