"""Prometheus /metrics: what it exposes, that the shipped dashboard and
alerts ask only for what it exposes, and that it adds up over workers."""

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }} import gunicorn_conf
from {{ cookiecutter.package_name }}.api.schemas import EXAMPLE
from {{ cookiecutter.package_name }}.local_server import (
    loopback_env,
    start_production,
    stop_production,
)
from {{ cookiecutter.package_name }}.monitoring import metrics
from {{ cookiecutter.package_name }}.monitoring.metrics import (
    FLUSH_EVERY_S,
    LocalCounter,
    LocalHistogram,
)

from .conftest import an_item, free_port

ROOT = Path(__file__).resolve().parents[1]


def parse(text: str) -> list:
    """(name, labels, value) of every sample in an exposition."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for n, sample_labels, v in parse(text)
        if n == name and labels.items() <= sample_labels.items()
    )


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_requests_are_counted_and_timed_per_route_and_status(client):
    before = scrape(client)
    client.post("/predict", json=EXAMPLE)
    client.post("/predict", json={**EXAMPLE, "unknown_field": 1})
    after = scrape(client)
    for status in ("200", "422"):
        route = {"route": "/predict", "status": status}
        assert (
            value(after, "http_requests_total", method="POST", **route)
            - (value(before, "http_requests_total", method="POST", **route))
            == 1
        )
        timed = "http_request_duration_seconds_count"
        assert (
            value(after, timed, **route) - value(before, timed, **route) == 1
        )
    # The scrape itself is the one request in flight: the others ended.
    assert value(after, "http_requests_in_flight") == 1
    client.get("/monitoring/drift")
    client.get("/no-such-page")
    last = scrape(client)
    for route, status in [
        ("/metrics", "200"),
        ("/monitoring/drift", "200"),
        ("other", "404"),
    ]:
        labels = {"route": route, "method": "GET", "status": status}
        assert value(last, "http_requests_total", **labels) >= 1, route


def test_batches_cache_and_inference_are_measured(client):
    names = {
        "batches": "micro_batch_size_count",
        "items": "micro_batch_size_sum",
        "inference": "model_inference_seconds_count",
        "misses": "prediction_cache_misses_total",
        "hits": "prediction_cache_hits_total",
    }
    before = scrape(client)
    item = an_item(0.44)
    client.post("/predict", json=item)  # computed: one batch of one
    client.post("/predict", json=item)  # answered from the cache
    after = scrape(client)
    delta = {k: value(after, n) - value(before, n) for k, n in names.items()}
    assert delta == {
        "batches": 1,
        "items": 1,
        "inference": 1,
        "misses": 1,
        "hits": 1,
    }
    assert value(after, "prediction_cache_hits_total", layer="local") >= 1


def test_counts_added_at_flush_equal_observing_one_at_a_time():
    registry = CollectorRegistry()
    buckets = (0.001, 0.01, 0.1)
    direct = Histogram("direct", "", buckets=buckets, registry=registry)
    flushed = Histogram("flushed", "", buckets=buckets, registry=registry)
    local = LocalHistogram(flushed)
    # Values on the bounds too: buckets are "less than or equal".
    values = [0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 3.0]
    for value in values:
        direct.observe(value)
        local.observe(value)

    def samples(name: str) -> dict:
        return {
            (s.name[len(name) :], s.labels.get("le")): s.value
            for s in registry.collect()
            if s.name == name
            for s in s.samples
            if not s.name.endswith("_created")
        }

    assert samples("flushed")["_count", None] == 0  # not before a flush
    local.flush()
    assert samples("flushed") == samples("direct")
    local.flush()  # nothing new: nothing added
    assert samples("flushed") == samples("direct")

    counter = LocalCounter(Counter("requests", "", registry=registry))
    counter.inc(2), counter.inc()
    assert samples("requests")["_total", None] == 0
    counter.flush(), counter.flush()
    assert samples("requests")["_total", None] == 3


def test_the_flush_timer_adds_the_counts_again_and_again():
    """Without a scrape, the counts reach Prometheus every interval (other
    workers' scrapes read them from there)."""
    missed = "prediction_cache_misses_total"

    async def count_twice() -> list[float]:
        metrics.flush_every(0.01)
        seen = [REGISTRY.get_sample_value(missed)]
        for _ in range(2):
            metrics.LOCAL_CACHE_MISSES.inc()
            await asyncio.sleep(0.1)
            seen.append(REGISTRY.get_sample_value(missed))
        return seen

    before, first, second = asyncio.run(count_twice())
    assert (first, second) == (before + 1, before + 2)


def test_a_dead_worker_leaves_no_live_gauge_behind(monkeypatch):
    """gunicorn's hooks: a fresh multiprocess folder per start; a worker
    that exits takes its live gauges (in-flight requests, model info) out
    of the sums, and keeps its counts in them; the folder goes at exit."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored after
    server = SimpleNamespace()
    gunicorn_conf.on_starting(server)
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.is_dir() and not any(folder.iterdir())
    for name in ("gauge_livesum_11", "gauge_livemax_11", "counter_11"):
        (folder / f"{name}.db").touch()
    (folder / "gauge_livesum_12.db").touch()
    gunicorn_conf.child_exit(server, SimpleNamespace(pid=11))
    left = sorted(file.name for file in folder.iterdir())
    assert left == ["counter_11.db", "gauge_livesum_12.db"]
    gunicorn_conf.on_exit(server)
    assert not folder.exists()


def test_model_info_names_the_served_model(client, artifacts):
    version = json.loads((artifacts / "preprocessing.json").read_text())
    info = value(
        scrape(client),
        "model_info",
        model_version=version["version"],
        device="cpu",
    )
    assert info == 1


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges,
    grouping clauses, functions and strings left out)."""
    expr = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    words = re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr)
    keywords = {"and", "or", "unless", "bool", "offset"}
    return {
        word[1]
        for word in words
        if not word[2] and word[1] not in keywords  # word[2]: a function
    }


def dashboard_and_alert_queries() -> list[str]:
    exprs = []
    for path in (ROOT / "deploy" / "grafana").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", [])]
    for path in (ROOT / "deploy" / "prometheus").glob("alerts*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [rule["expr"] for rule in group["rules"]]
    return exprs


def test_dashboard_and_alerts_ask_only_for_exported_metrics(client):
    items = [an_item(i / 30) for i in range(30)]
    client.post("/batch-predict", json={"items": items})
    client.post("/predict", json=EXAMPLE)
    client.post("/predict", json=EXAMPLE)
    assert client.get("/monitoring/drift").json()["status"] != (
        "insufficient_data"
    )
    exported = {name for name, _, _ in parse(scrape(client))}
    exported.add("up")  # written by Prometheus itself
    exprs = dashboard_and_alert_queries()
    assert len(exprs) >= 10
    used = set().union(*map(promql_metric_names, exprs))
    assert "drift_detected" in used and "http_requests_total" in used
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def get(url: str, body: dict | None = None, timeout: float = 10):
    """One request on its own connection, so the kernel picks a worker."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(f"Timed out after {seconds} s waiting for {what}")


@pytest.fixture
def two_workers(artifacts, tmp_path):
    """`make production` with two gunicorn workers, on a free port."""
    port = free_port()
    env = loopback_env(
        port,
        WEB_CONCURRENCY="2",
        ARTIFACTS_DIR=str(artifacts),
        DEVICE="cpu",
        DRIFT_CACHE_S="0",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "gunicorn.log").open("w")
    server = start_production(
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "gunicorn.log"
    finally:
        stop_production(server, 30)
        log.close()


def test_two_workers_add_up_to_every_request(two_workers):
    url, log = two_workers
    windows = {}  # worker pid -> items in its drift window

    def both_workers_answered():
        answer = json.loads(get(f"{url}/monitoring/drift")[1])
        windows[answer["worker_pid"]] = answer["window_size"]
        return len(windows) == 2

    wait_for(both_workers_answered, 60, f"two workers (log: {log})")
    # The kernel hands each connection to whichever worker accepts first, and
    # now and then one worker takes a whole round: send rounds (of distinct
    # items) until both drift windows hold some.
    per_round, most_rounds = 60, 8
    drift = json.loads(get(f"{url}/monitoring/drift")[1])
    # All rounds must fit one window, or the sum below could fall short.
    assert per_round * most_rounds <= drift["window_capacity"], drift
    n = 0
    for _ in range(most_rounds):
        items = [
            an_item((n + i) / (per_round * most_rounds))
            for i in range(per_round)
        ]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda item: get(f"{url}/predict", item), items)
            )
        assert [status for status, _ in answers] == [200] * per_round
        n += per_round
        windows.clear()
        wait_for(both_workers_answered, 30, "both workers' drift windows")
        if min(windows.values()) > 0:
            break
    # Both workers served some of them: their drift windows add up to n.
    assert sum(windows.values()) == n, windows
    assert min(windows.values()) > 0, windows

    # Every scrape, whichever worker answers it, counts all n requests once
    # each worker has flushed its counts (every FLUSH_EVERY_S).
    def counted(text: str) -> tuple[float, float]:
        return (
            value(text, "http_requests_total", route="/predict", status="200"),
            value(text, "micro_batch_size_sum"),
        )

    wait_for(
        lambda: counted(get(f"{url}/metrics")[1].decode()) == (n, n),
        10 * FLUSH_EVERY_S,
        "both workers' counts in a scrape",
    )
    for _ in range(6):
        text = get(f"{url}/metrics")[1].decode()
        assert counted(text) == (n, n)
        assert value(text, "model_info") == 1  # livemax, not a sum
        # livesum: one in-flight figure for the server, not one per worker
        in_flight = [
            s for s in parse(text) if s[0] == "http_requests_in_flight"
        ]
        assert [labels for _, labels, _ in in_flight] == [{}]
