"""The prediction cache: bounded, identical bodies on a hit, counted, shared
through a real Redis, and a Redis outage is a warning, never an error."""

import asyncio
import json
import logging
import random

import torch
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from {{ cookiecutter.package_name }}.api import cache as cache_module
from {{ cookiecutter.package_name }}.api import main
from {{ cookiecutter.package_name }}.api.cache import (
    MAX_BODY_KEY,
    RETRY_AFTER_S,
    LocalCache,
    PredictionCache,
)
from {{ cookiecutter.package_name }}.api.main import create_app
from {{ cookiecutter.package_name }}.api.schemas import FEATURES, Item
from {{ cookiecutter.package_name }}.predict import Predictor

from .conftest import a_random_item, free_port, make_settings


def test_local_cache_is_bounded_and_keeps_the_recently_used():
    cache = LocalCache(3)
    for key in "abc":
        cache.put(key, key.encode())
    assert cache.get("a") == b"a"  # now the most recent
    cache.put("d", b"d")
    assert len(cache) == 3
    assert cache.get("b") is None  # the least recently used went
    assert [cache.get(k) for k in "acd"] == [b"a", b"c", b"d"]


def test_putting_a_known_key_makes_it_fresh_again():
    cache = LocalCache(2)
    cache.put("a", b"a")
    cache.put("b", b"b")
    cache.put("a", b"A")  # "a" is the most recent now, with its new value
    cache.put("c", b"c")
    assert [cache.get(k) for k in "abc"] == [b"A", None, b"c"]
    assert len(cache) == 2


def test_only_small_bodies_are_kept_as_keys():
    """A valid /predict body is at most a few hundred bytes; larger ones
    (padding) would fill the cache with copies of the same item."""
    cache = PredictionCache(10, namespace="test")
    small, large = b"{}", b"{}" + b" " * MAX_BODY_KEY
    cache.put_body(small, (1.0,), b"answer")
    cache.put_body(large, (1.0,), b"answer")
    assert cache.get_body(small) == ((1.0,), b"answer")
    assert cache.get_body(large) is None


def test_a_zero_size_cache_stores_nothing():
    cache = LocalCache(0)
    cache.put("a", b"a")
    assert len(cache) == 0 and cache.get("a") is None


def test_hits_return_identical_bodies_and_move_the_counters(artifacts):
    flower = a_random_item()
    with TestClient(create_app(make_settings(artifacts))) as client:
        cache = client.app.state.service.cache
        first = client.post("/predict", json=flower)
        assert (cache.hits["local"], cache.misses) == (0, 1)
        second = client.post("/predict", json=flower)
        assert (cache.hits["local"], cache.misses) == (1, 1)
        # Bulk items skip the cache (they would push /predict's hot set
        # out), yet get the same bytes from the same model.
        batch = client.post("/batch-predict", json={"items": [flower] * 2})
        other = a_random_item()
        client.post("/batch-predict", json={"items": [other]})
        stored = len(cache.local)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert batch.content == b'{"predictions":[%s,%s]}' % (
        first.content,
        first.content,
    )
    assert (cache.hits["local"], cache.misses, stored) == (1, 1, 1)


def test_the_same_bytes_skip_validation_and_other_bytes_still_hit(
    artifacts, monkeypatch
):
    validated = []  # the bodies Pydantic was asked to validate

    class CountedItem:
        @staticmethod
        def model_validate_json(body):
            validated.append(body)
            return Item.model_validate_json(body)

    flower = a_random_item()
    with TestClient(create_app(make_settings(artifacts))) as client:
        monkeypatch.setattr(main, "Item", CountedItem)  # the docs keep Item
        service = client.app.state.service
        first = client.post("/predict", json=flower)
        body = first.request.content
        assert service.cache.bodies.get(body) is not None
        # Same values, other spacing and key order: the row layer answers.
        respaced = json.dumps(dict(reversed(flower.items())), indent=1)
        second = client.post("/predict", content=respaced)
        third = client.post("/predict", content=body)
        # Invalid bodies are never remembered: the 422 comes every time.
        bad = json.dumps({**flower, FEATURES[-1]: None})
        refused = [client.post("/predict", content=bad) for _ in range(2)]
        window = list(service.monitor.inputs)
    assert first.content == second.content == third.content
    assert service.cache.misses == 1 and service.cache.hits["local"] == 2
    # The third request, the first's bytes, was not validated again.
    assert validated.count(body) == 1 and len(validated) == 4
    assert [r.status_code for r in refused] == [422, 422]
    # Answers from either layer reach the drift window.
    row = tuple(flower.values())
    assert window[-3:] == [row, row, row]


def test_replicas_share_hits_through_redis(artifacts, redis_url):
    flower = a_random_item()
    settings = make_settings(artifacts, cache_url=redis_url)
    with (
        TestClient(create_app(settings)) as one,
        TestClient(create_app(settings)) as other,
    ):
        computed = one.post("/predict", json=flower)
        shared = other.post("/predict", json=flower)
        one_cache = one.app.state.service.cache
        other_cache = other.app.state.service.cache
    assert computed.status_code == shared.status_code == 200
    assert computed.content == shared.content
    assert one_cache.misses == 1 and one_cache.hits["redis"] == 0
    assert other_cache.misses == 0 and other_cache.hits["redis"] == 1
    # What Redis gave is kept locally too: the next lookup stays local.
    assert other_cache.local.get(tuple(flower.values())) == shared.content


def test_redis_entries_expire_and_belong_to_one_model(artifacts, redis_url):
    """Each entry lives CACHE_TTL_S, under a key of the model's version: a
    retrained model never gets the answers of the one before."""
    import redis

    flower = a_random_item()
    settings = make_settings(artifacts, cache_url=redis_url, cache_ttl_s=77)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json=flower)
        service = client.app.state.service
        key = service.cache._redis_key(tuple(flower.values()))
    assert service.predictor.version in key
    assert key.startswith(f"prediction:{main.__version__}:")
    connection = redis.Redis.from_url(redis_url)
    try:
        assert 0 < connection.ttl(key) <= 77
    finally:
        connection.close()


def test_replicas_that_answer_differently_never_share_answers():
    """The same model file, run another way (int8, a GPU, bf16), keeps its
    answers under a key of its own."""

    def key(device="cpu", quantized=False, autocast_bf16=False) -> str:
        return Predictor(
            torch.nn.Linear(4, 3),
            FEATURES,
            ["a", "b", "c"],
            torch.device(device),
            "v1",
            quantized,
            autocast_bf16,
        ).answers_key

    runs = [key(), key(quantized=True), key("cuda"), key("cuda", True)]
    runs.append(key("cuda", autocast_bf16=True))
    assert len(set(runs)) == len(runs)
    assert all(k.startswith("v1:") for k in runs)
    assert key() == key()  # replicas that run alike share


def test_many_concurrent_misses_are_not_an_outage(
    redis_url, caplog, monkeypatch
):
    """More lookups in flight than the pool has connections: those past it
    skip the shared cache; none is counted as a Redis failure. (Driven on
    the cache itself: 300 HTTP requests through an in-process client kept
    the loop busy for longer than the connect timeout.)"""
    # What is tested is the pool's limit, not the timeout: on a loaded
    # machine, 32 connections opened at once took longer than 0.25 s.
    monkeypatch.setattr(cache_module, "REDIS_TIMEOUT_S", 5.0)
    rows = [tuple(a_random_item().values()) for _ in range(300)]

    async def miss_all():
        cache = PredictionCache(
            100, namespace=f"test-{random.random()}", url=redis_url
        )
        found = await asyncio.gather(*map(cache.get, rows))
        usable = cache._redis_usable()
        await cache.close()
        return cache, found, usable

    with caplog.at_level(logging.WARNING):
        cache, found, redis_usable = asyncio.run(miss_all())
    assert found == [None] * len(rows)
    assert redis_usable, "Redis was taken for down"
    assert cache.misses == len(rows)
    assert not [r for r in caplog.records if "Redis" in r.getMessage()]


def test_a_redis_outage_degrades_to_the_local_cache(artifacts, caplog):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    flower = a_random_item()
    settings = make_settings(artifacts, cache_url=closed)
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(settings)) as client,
    ):
        answers = [client.post("/predict", json=flower) for _ in range(3)]
        batch = client.post("/batch-predict", json={"items": [flower]})
        cache = client.app.state.service.cache
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].content == answers[2].content
    assert batch.status_code == 200  # bulk items never ask Redis
    assert cache.hits["local"] == 2  # served locally while Redis is away
    warnings = [r for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1  # one warning, then a pause before retrying


def test_calls_in_flight_when_redis_goes_warn_once(caplog):
    """Every failed call is counted; only the first one warns."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    errors = "prediction_cache_errors_total"

    async def fail_together():
        cache = PredictionCache(10, namespace="test", url=closed)
        lookups = (cache.get((float(i),)) for i in range(5))
        found = await asyncio.gather(*lookups)
        await cache.close()
        return found

    before = REGISTRY.get_sample_value(errors)
    with caplog.at_level(logging.WARNING):
        found = asyncio.run(fail_together())
    assert found == [None] * 5
    assert REGISTRY.get_sample_value(errors) == before + 5
    warnings = [r for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1


def test_redis_is_tried_again_after_the_pause(monkeypatch):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])

    async def scenario():
        cache = PredictionCache(10, namespace="test", url=closed)
        await cache.get((1.0,))  # fails: Redis is taken for down
        paused = cache._redis_usable()
        now[0] += RETRY_AFTER_S + 0.1
        retried = cache._redis_usable()
        await cache.close()
        return paused, retried

    assert asyncio.run(scenario()) == (False, True)
