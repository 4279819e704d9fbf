import asyncio
import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.api.main import create_app
from {{ cookiecutter.package_name }}.predict import ModelLoadError

from .conftest import assert_same_predictions, make_settings

SETOSA = {
    "sepal_length": 5.1,
    "sepal_width": 3.5,
    "petal_length": 1.4,
    "petal_width": 0.2,
}

BAD_ITEMS = [
    pytest.param({**SETOSA, "petal_width": None}, "petal_width", id="none"),
    pytest.param({**SETOSA, "petal_width": "0.2"}, "petal_width", id="str"),
    pytest.param({**SETOSA, "sepal_length": True}, "sepal_length", id="bool"),
    pytest.param({**SETOSA, "sepal_width": -1.0}, "sepal_width", id="neg"),
    pytest.param({**SETOSA, "sepal_width": 0}, "sepal_width", id="zero"),
    pytest.param({**SETOSA, "petal_length": 1e6}, "petal_length", id="huge"),
    pytest.param({**SETOSA, "petal_length": [1]}, "petal_length", id="list"),
    pytest.param({"sepal_length": 5.1}, "sepal_width", id="missing"),
    pytest.param({**SETOSA, "colour": "blue"}, "colour", id="extra"),
]

# JSON that json.dumps will not write: NaN and infinities as literals.
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


def predict(client, item):
    return client.post("/predict", json=item)


def field_names(response) -> set:
    return {str(part) for e in response.json()["detail"] for part in e["loc"]}


def test_predict_answers_a_known_flower(client):
    response = predict(client, SETOSA)
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "setosa"
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize("item, field", BAD_ITEMS)
def test_predict_rejects_bad_items_naming_the_field(client, item, field):
    response = predict(client, item)
    assert response.status_code == 422
    assert field in field_names(response)


@pytest.mark.parametrize("item, field", BAD_ITEMS)
def test_batch_rejects_bad_items_naming_index_and_field(client, item, field):
    response = client.post("/batch-predict", json={"items": [SETOSA, item]})
    assert response.status_code == 422
    assert {"items", "1", field} <= field_names(response)


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize("route", ["/predict", "/batch-predict"])
def test_non_finite_numbers_are_rejected(client, literal, route):
    item = json.dumps(SETOSA).replace("0.2", literal)
    body = item if route == "/predict" else '{"items": [' + item + "]}"
    response = client.post(
        route, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "petal_width" in field_names(response)


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
        response = client.post("/batch-predict", json={"items": [SETOSA] * 4})
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
    many_unknown_fields = {**SETOSA, **{f"field_{i}": 1 for i in range(500)}}
    with TestClient(create_app(make_settings(artifacts))) as client:
        single = client.post("/predict", json=many_unknown_fields)
        batch = client.post("/batch-predict", json={"items": [{}] * 1000})
    for response in (single, batch):
        assert response.status_code == 422
        assert len(response.json()["detail"]) == 100


def test_oversized_body_is_a_413_that_states_the_limit(artifacts):
    settings = make_settings(artifacts, max_body_bytes=1024)
    with TestClient(create_app(settings)) as client:
        response = client.post("/batch-predict", json={"items": [SETOSA] * 20})
    assert response.status_code == 413
    assert "1024" in response.json()["detail"]


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["device"] == "cpu"


def test_not_ready_before_the_model_is_loaded(settings):
    client = TestClient(create_app(settings))  # no lifespan: not loaded
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert predict(client, SETOSA).status_code == 503


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
            answered = await call(app, "/predict", body_of(SETOSA))
            status, body = await asyncio.wait_for(stalled, 10)
            return answered, status, body, time.monotonic() - start

    answered, status, body, waited = asyncio.run(scenario())
    assert answered[0] == 200
    assert status == 503 and b"REQUEST_TIMEOUT_S" in body
    assert waited >= 0.2  # never early
    assert not app.state.service.deadlines._started  # nothing left behind


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
    assert item["examples"][0]["sepal_length"] == 5.1
    assert "422" in schema["paths"]["/predict"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_cache_hit_returns_the_identical_body(client):
    cache = client.app.state.service.cache
    flower = {**SETOSA, "petal_width": 0.234567}  # asked by no other test
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
    meta["features"] = ["height", "width", "depth", "mass"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="features"):
        with TestClient(create_app(make_settings(tmp_path))):
            pass
