import asyncio
import json
import re
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.api.main import (
    ONE_ITEM_BYTES,
    Deadlines,
    create_app,
)
from {{ cookiecutter.package_name }}.api.schemas import (
    EXAMPLE,
    FEATURES,
    refused,
)
from {{ cookiecutter.package_name }}.bench import Inputs
from {{ cookiecutter.package_name }}.predict import ModelLoadError
from {{ cookiecutter.package_name }}.soak import Mix

from .conftest import (
    EXAMPLE_LABEL,
    an_item,
    assert_same_predictions,
    make_settings,
)

FIRST, LAST = FEATURES[0], FEATURES[-1]


def without(item: dict, name: str) -> dict:
    return {key: value for key, value in item.items() if key != name}


def bad_items() -> list:
    """(item, the field its 422 must name): the example with one field
    wrong in each way, beyond each bound of each feature, one missing, one
    unknown."""
    cases = [
        pytest.param({**EXAMPLE, LAST: None}, LAST, id="none"),
        pytest.param({**EXAMPLE, LAST: str(EXAMPLE[LAST])}, LAST, id="str"),
        pytest.param({**EXAMPLE, FIRST: True}, FIRST, id="bool"),
        pytest.param({**EXAMPLE, LAST: [1]}, LAST, id="list"),
        pytest.param(without(EXAMPLE, LAST), LAST, id="missing"),
        pytest.param({**EXAMPLE, "colour": "blue"}, "colour", id="extra"),
    ]
    for name in FEATURES:
        for side, value in refused(name).items():
            item = {**EXAMPLE, name: value}
            cases.append(pytest.param(item, name, id=f"{name}-{side}"))
    return cases


BAD_ITEMS = bad_items()

# JSON that json.dumps will not write: NaN and infinities as literals.
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


def predict(client, item):
    return client.post("/predict", json=item)


def field_names(response) -> set:
    return {str(part) for e in response.json()["detail"] for part in e["loc"]}


def test_predict_answers_the_documented_example_as_documented(client, dataset):
    response = predict(client, EXAMPLE)
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == EXAMPLE_LABEL
    _, classes, _, _ = dataset
    assert set(body["probabilities"]) == set(classes)


@pytest.mark.parametrize("item, field", BAD_ITEMS)
def test_predict_rejects_bad_items_naming_the_field(client, item, field):
    response = predict(client, item)
    assert response.status_code == 422
    assert field in field_names(response)
    # FastAPI's shape: each problem located in the body.
    assert all(e["loc"][0] == "body" for e in response.json()["detail"])


@pytest.mark.parametrize("item, field", BAD_ITEMS)
def test_batch_rejects_bad_items_naming_index_and_field(client, item, field):
    response = client.post("/batch-predict", json={"items": [EXAMPLE, item]})
    assert response.status_code == 422
    assert {"items", "1", field} <= field_names(response)


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize("route", ["/predict", "/batch-predict"])
def test_non_finite_numbers_are_rejected(client, literal, route):
    item = json.dumps({**EXAMPLE, LAST: "X"}).replace('"X"', literal)
    body = item if route == "/predict" else '{"items": [' + item + "]}"
    response = client.post(
        route, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert LAST in field_names(response)


@pytest.mark.parametrize(
    "body",
    ["", "null", "[]", "{", "42", '"text"', "{}"],
    ids=["empty", "null", "array", "broken", "number", "string", "object"],
)
@pytest.mark.parametrize("route", ["/predict", "/batch-predict"])
def test_malformed_bodies_get_422_not_500(client, route, body):
    response = client.post(route, content=body)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_a_batch_with_a_field_besides_items_is_rejected(client):
    body = {"items": [EXAMPLE], "priority": 1}
    response = client.post("/batch-predict", json=body)
    assert response.status_code == 422
    assert "priority" in field_names(response)


def test_empty_batch_is_rejected_naming_items(client):
    response = client.post("/batch-predict", json={"items": []})
    assert response.status_code == 422
    assert "items" in field_names(response)


def test_batch_equals_item_by_item_predict_in_order(artifacts, dataset):
    features, _, x, _ = dataset
    items = [dict(zip(features, map(float, row))) for row in x[::7]]
    settings = make_settings(artifacts, cache_size=0)  # compute both ways
    with TestClient(create_app(settings)) as client:
        batch = client.post("/batch-predict", json={"items": items})
        singles = [predict(client, item).json() for item in items]
    assert batch.status_code == 200
    assert_same_predictions(batch.json()["predictions"], singles)


def test_too_many_items_is_a_422_that_states_the_limit(artifacts):
    settings = make_settings(artifacts, max_batch_items=3)
    with TestClient(create_app(settings)) as client:
        at_limit = client.post("/batch-predict", json={"items": [EXAMPLE] * 3})
        response = client.post("/batch-predict", json={"items": [EXAMPLE] * 4})
    assert at_limit.status_code == 200
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "items"] and "3" in error["msg"]


@pytest.mark.parametrize("item", [{}, 1, None], ids=["empty", "int", "null"])
def test_too_many_invalid_items_are_refused_before_each_is_checked(
    artifacts, item
):
    """The count comes first: a body of invalid items under the size limit
    would otherwise cost seconds and an answer of 100 MB."""
    with TestClient(create_app(make_settings(artifacts))) as client:
        response = client.post("/batch-predict", json={"items": [item] * 5000})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "too_long" and error["loc"] == ["body", "items"]


def test_a_422_lists_at_most_a_hundred_problems(artifacts):
    many_unknown_fields = {**EXAMPLE, **{f"field_{i}": 1 for i in range(500)}}
    with TestClient(create_app(make_settings(artifacts))) as client:
        single = client.post("/predict", json=many_unknown_fields)
        batch = client.post("/batch-predict", json={"items": [{}] * 1000})
    for response in (single, batch):
        assert response.status_code == 422
        assert len(response.json()["detail"]) == 100


def test_oversized_body_is_a_413_that_states_the_limit(artifacts):
    settings = make_settings(artifacts, max_body_bytes=1024)
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/batch-predict", json={"items": [EXAMPLE] * 20}
        )
        body = json.dumps(EXAMPLE).encode()
        sizes = {
            size: client.post("/predict", content=body.ljust(size)).status_code
            for size in (1024, 1025)  # JSON allows the trailing spaces
        }
    assert response.status_code == 413
    assert "1024" in response.json()["detail"]
    assert sizes == {1024: 200, 1025: 413}


def test_a_predict_body_over_one_items_size_is_refused_unread(client):
    """Pydantic would name every unknown key of a large body, at length:
    /predict refuses any body over ONE_ITEM_BYTES before reading it."""
    padded = json.dumps(EXAMPLE).encode().ljust(ONE_ITEM_BYTES)
    assert client.post("/predict", content=padded).status_code == 200
    keys = {f"unknown_{i}": 0 for i in range(2000)}
    response = client.post("/predict", json={**EXAMPLE, **keys})
    assert response.status_code == 413
    assert "/batch-predict" in response.json()["detail"]


def test_health_and_ready(client, settings):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["device"] == "cpu"
    assert ready["version"] == __version__
    assert ready["quantized"] == settings.quantize_int8
    assert re.fullmatch("[0-9a-f]{12}", ready["model_version"])


def test_not_ready_before_the_model_is_loaded(settings):
    client = TestClient(create_app(settings))  # no lifespan: not loaded
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert predict(client, EXAMPLE).status_code == 503
    batch = client.post("/batch-predict", json={"items": [EXAMPLE]})
    assert batch.status_code == 503
    assert client.get("/monitoring/drift").status_code == 503


def test_other_methods_and_routes_are_served_by_fastapi(client):
    assert client.get("/predict").status_code == 405
    assert client.head("/health").status_code == 200
    assert client.get("/nowhere").status_code == 404


async def call(app, path: str, receive) -> tuple[int, bytes]:
    """One request straight into the ASGI app, with our own `receive`."""
    messages = []

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await app(scope, receive, send)
    return messages[0]["status"], messages[1]["body"]


def body_of(item: dict):
    async def receive():
        return {"type": "http.request", "body": json.dumps(item).encode()}

    return receive


def in_messages(body: bytes, size: int, then: list[dict] = ()):
    """`receive` for a body sent `size` bytes a message, then `then`."""
    messages = [
        {"type": "http.request", "body": body[i : i + size], "more_body": True}
        for i in range(0, len(body), size)
    ]
    messages[-1]["more_body"] = False
    messages = iter([*messages[: len(messages) - bool(then)], *then])

    async def receive():
        return next(messages)

    return receive


def test_a_body_in_many_messages_is_read_whole_and_checked(artifacts):
    """Bodies in one message skip read_body; the rest must still work."""
    app = create_app(make_settings(artifacts, max_body_bytes=1024))
    body = json.dumps(EXAMPLE).encode()
    gone = [{"type": "http.disconnect"}]

    async def scenario():
        async with app.router.lifespan_context(app):
            return [
                await call(app, "/predict", in_messages(body, len(body))),
                await call(app, "/predict", in_messages(body, 7)),
                await call(app, "/predict", in_messages(body.ljust(1025), 7)),
                await call(app, "/predict", in_messages(body, 7, gone)),
            ]

    whole, in_pieces, too_large, disconnected = asyncio.run(scenario())
    assert whole[0] == in_pieces[0] == 200 and whole[1] == in_pieces[1]
    assert too_large[0] == 413 and b"MAX_BODY_BYTES" in too_large[1]
    assert disconnected == (400, b'{"detail":"Client disconnected."}')


async def never_sends_the_body():
    await asyncio.Event().wait()


def test_a_request_out_of_time_is_a_503_and_its_neighbours_are_not(
    artifacts,
):
    app = create_app(make_settings(artifacts, request_timeout_s=0.2))

    async def scenario():
        async with app.router.lifespan_context(app):
            start = time.monotonic()
            stalled = asyncio.create_task(
                call(app, "/predict", never_sends_the_body)
            )
            await asyncio.sleep(0.05)
            answered = await call(app, "/predict", body_of(EXAMPLE))
            status, body = await asyncio.wait_for(stalled, 10)
            return answered, status, body, time.monotonic() - start

    answered, status, body, waited = asyncio.run(scenario())
    assert answered[0] == 200
    assert status == 503 and b"REQUEST_TIMEOUT_S" in body
    assert waited >= 0.2  # never early
    deadlines = app.state.service.deadlines
    assert not deadlines._started  # nothing left behind
    assert deadlines._timer is None  # the sweeps stopped with the app


def test_a_request_runs_out_of_time_at_the_eleventh_sweep():
    """Sweeps come every tenth of the timeout. A request that starts after
    sweep n has had more than the timeout at sweep n + 11, and may have had
    less at sweep n + 10: never early, at most 1.1 times late."""
    deadlines = Deadlines(1.0)

    async def request() -> int:
        task = deadlines.start()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert deadlines.expired(task)
            return deadlines.sweeps  # the sweep that cancelled it
        finally:
            deadlines.finish(task)

    async def sweep_and_turn():
        deadlines._sweep()
        for _ in range(3):  # the cancelled requests handle it
            await asyncio.sleep(0)

    async def scenario() -> list[int]:
        requests = []
        for _ in range(2):  # one request after sweep 1, one after sweep 2
            await sweep_and_turn()
            requests.append(asyncio.create_task(request()))
            await asyncio.sleep(0)  # it starts
        for _ in range(15):
            await sweep_and_turn()
        return await asyncio.gather(*requests)

    assert asyncio.run(scenario()) == [1 + 11, 2 + 11]
    assert not deadlines._started and not deadlines._expired


def test_a_cancelled_request_stays_cancelled(artifacts):
    """A cancellation that is not a time-out (the server stopping) is not
    turned into an answer."""
    app = create_app(make_settings(artifacts, request_timeout_s=5))

    async def scenario():
        async with app.router.lifespan_context(app):
            task = asyncio.create_task(
                call(app, "/predict", never_sends_the_body)
            )
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_openapi_documents_the_routes_with_examples(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/batch-predict", "/health", "/ready"} <= set(
        schema["paths"]
    )
    item = schema["components"]["schemas"]["Item"]
    assert item["examples"] == [EXAMPLE]
    assert list(item["properties"]) == list(FEATURES)
    assert "422" in schema["paths"]["/predict"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_cache_hit_returns_the_identical_body(client):
    cache = client.app.state.service.cache
    flower = an_item(0.234567)  # asked by no other test
    hits, misses = cache.hits["local"], cache.misses
    first = predict(client, flower)
    second = predict(client, flower)
    assert first.content == second.content
    assert (cache.hits["local"] - hits, cache.misses - misses) == (1, 1)


def test_artifacts_trained_on_other_features_refuse_to_start(
    tmp_path, artifacts
):
    shutil.copytree(artifacts, tmp_path, dirs_exist_ok=True)
    meta_path = tmp_path / "preprocessing.json"
    meta = json.loads(meta_path.read_text())
    meta["features"] = [f"other_{name}" for name in meta["features"]]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="features"):
        with TestClient(create_app(make_settings(tmp_path))):
            pass


def test_make_soak_expects_the_status_the_service_answers(client, settings):
    """`make soak` fails on any answer its mix of requests does not expect;
    its valid items come from the data, its invalid ones from the bounds."""
    mix = Mix(
        Inputs.of(settings.artifacts_dir),
        settings.max_batch_items,
        settings.max_body_bytes,
    )
    for _ in range(400):
        method, path, body, expected = mix.next()
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = client.request(method, path, content=body)
        assert response.status_code == expected, (path, body[:300])


def test_a_failing_model_call_is_a_json_500_for_its_request_alone(client):
    service = client.app.state.service

    def broken(rows, batch=None):
        raise RuntimeError("the model failed")

    service.answer_rows = broken  # /batch-predict's call; /predict batches
    failed = client.post("/batch-predict", json={"items": [EXAMPLE]})
    neighbour = predict(client, an_item(0.61))
    assert failed.status_code == 500
    assert failed.json() == {
        "detail": "Prediction failed; see the service log."
    }
    assert neighbour.status_code == 200
