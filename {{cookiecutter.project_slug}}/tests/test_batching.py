"""Micro-batching: the same answers as one by one, in order, each caller
its own result or its own error, and batches within their bound."""

import asyncio

import orjson
import pytest
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.api.batching import MicroBatcher
from {{ cookiecutter.package_name }}.api.main import create_app
from {{ cookiecutter.package_name }}.predict import Predictor

from .conftest import assert_same_predictions, make_settings


@pytest.fixture(scope="module")
def predictor(artifacts):
    return Predictor.load(make_settings(artifacts))


@pytest.fixture(scope="module")
def rows(dataset):
    _, _, x, _ = dataset
    return [tuple(map(float, row)) for row in x]


class Recorder:
    """A prediction function that records each call's rows (and may fail)."""

    def __init__(self, predict=None, fails_on=None):
        self.predict = predict or (lambda rows: list(rows))
        self.fails_on = fails_on
        self.calls: list[list] = []

    def __call__(self, rows, *batch):
        self.calls.append(list(rows))
        if self.fails_on in rows:
            raise ValueError(f"cannot predict {self.fails_on}")
        return self.predict(rows, *batch)


async def predict_all(batcher, rows):
    return await asyncio.gather(
        *(batcher.predict(row) for row in rows), return_exceptions=True
    )


@pytest.mark.parametrize("max_batch", [1, 7, 256])
def test_batched_answers_equal_single_answers_in_order(
    predictor, rows, max_batch
):
    recorder = Recorder(predictor.answers)
    batched = asyncio.run(predict_all(MicroBatcher(recorder, max_batch), rows))
    singles = [predictor.answers([row])[0] for row in rows]
    assert_same_predictions(
        list(map(orjson.loads, batched)), list(map(orjson.loads, singles))
    )
    assert max(len(call) for call in recorder.calls) <= max_batch
    if max_batch > 1:
        assert len(recorder.calls) < len(rows)  # they did share calls


@pytest.mark.parametrize("max_batch", [1, 4, 8, 100])
@pytest.mark.parametrize("callers", [1, 9, 64])
def test_a_batch_never_exceeds_its_bound(max_batch, callers):
    recorder = Recorder()
    rows = [(float(i),) for i in range(callers)]
    answers = asyncio.run(predict_all(MicroBatcher(recorder, max_batch), rows))
    assert answers == rows
    assert all(len(call) <= max_batch for call in recorder.calls)
    assert sum(len(call) for call in recorder.calls) == callers


@pytest.mark.parametrize("bad", [1, 17, 64])
def test_one_failing_item_fails_only_its_own_caller(bad):
    # The first caller finds the batcher idle and is answered at once; the
    # 64 behind it share a batch.
    rows = [(float(i),) for i in range(65)]
    recorder = Recorder(fails_on=rows[bad])
    answers = asyncio.run(predict_all(MicroBatcher(recorder, 64), rows))
    assert isinstance(answers[bad], ValueError)
    assert answers[:bad] + answers[bad + 1 :] == rows[:bad] + rows[bad + 1 :]
    # Retries split the failing batch in halves, down to the bad item:
    # log2(64) splits, each also answering its good half in one call.
    failing = [len(call) for call in recorder.calls if rows[bad] in call]
    assert failing == [64, 32, 16, 8, 4, 2, 1]
    assert len(recorder.calls) == 1 + 2 * 6 + 1


def test_a_failing_lone_item_fails_only_its_own_caller():
    recorder = Recorder(fails_on=(1.0,))

    async def one_after_another():
        batcher = MicroBatcher(recorder, 64)
        answers = []
        for row in [(0.0,), (1.0,), (2.0,)]:
            try:
                answers.append(await batcher.predict(row))
            except ValueError as error:
                answers.append(error)
        return answers

    first, failed, last = asyncio.run(one_after_another())
    assert (first, last) == ((0.0,), (2.0,))
    assert isinstance(failed, ValueError)


@pytest.mark.parametrize("extra", [-2, -1, 1])
def test_a_wrong_number_of_results_is_an_error_not_a_hang(extra):
    """Too few answers would leave callers waiting; too many would mean
    the answers no longer line up with their callers."""
    batcher = MicroBatcher(lambda rows: [None] * (len(rows) + extra), 8)
    answers = asyncio.run(predict_all(batcher, [(1.0,), (2.0,)]))
    assert all(isinstance(answer, RuntimeError) for answer in answers)


def test_a_caller_gone_before_the_flush_is_not_computed():
    """A request that timed out (or whose client left) costs no model
    time: its row is dropped from the batch."""
    recorder = Recorder()

    async def one_caller_leaves():
        batcher = MicroBatcher(recorder, 64)
        first = asyncio.ensure_future(batcher.predict((0.0,)))
        leaving = asyncio.ensure_future(batcher.predict((1.0,)))
        staying = asyncio.ensure_future(batcher.predict((2.0,)))
        # One turn: the first is answered at once, the two others are
        # queued and their flush is not yet run.
        await asyncio.sleep(0)
        assert first.done() and not staying.done()
        leaving.cancel()
        return await staying

    assert asyncio.run(one_caller_leaves()) == (2.0,)
    assert recorder.calls == [[(0.0,)], [(2.0,)]]


async def answered_in_one_turn(batcher, row) -> bool:
    """Whether the request was answered in its first step (it is answered
    either way before this returns)."""
    task = asyncio.ensure_future(batcher.predict(row))
    await asyncio.sleep(0)  # the task's first step, and nothing more
    at_once = task.done()
    assert await task == row
    return at_once


def test_a_lone_request_waits_for_nothing_not_even_a_loop_turn():
    """Concurrency 1: no timer, and no loop turn spent waiting for
    company; one request after another, each is answered at once."""
    recorder = Recorder()

    async def one_after_another():
        batcher = MicroBatcher(recorder, 64)
        return [
            await answered_in_one_turn(batcher, (float(i),)) for i in range(3)
        ]

    assert asyncio.run(one_after_another()) == [True] * 3
    assert recorder.calls == [[(0.0,)], [(1.0,)], [(2.0,)]]


def test_batching_starts_with_a_burst_and_stops_when_it_is_over():
    """The first request of a burst is answered at once, the rest share
    one call. After the burst a lone request waits one turn (the last batch
    had company), then lone requests are answered at once again."""
    recorder = Recorder()
    burst = [(float(i),) for i in range(10)]

    async def burst_then_lone_requests():
        batcher = MicroBatcher(recorder, 64)
        await predict_all(batcher, burst)
        return [
            await answered_in_one_turn(batcher, (float(i),))
            for i in range(10, 13)
        ]

    assert asyncio.run(burst_then_lone_requests()) == [False, True, True]
    assert recorder.calls == [
        burst[:1],
        burst[1:],
        [(10.0,)],
        [(11.0,)],
        [(12.0,)],
    ]


@pytest.mark.parametrize("micro_batching", [True, False])
def test_batch_endpoint_splits_big_batches_and_keeps_order(
    artifacts, dataset, micro_batching
):
    features, _, x, _ = dataset
    items = [dict(zip(features, map(float, row))) for row in x[:10]]
    settings = make_settings(
        artifacts,
        max_micro_batch=3,
        cache_size=0,
        micro_batching=micro_batching,
    )
    with TestClient(create_app(settings)) as client:
        service = client.app.state.service
        recorder = Recorder(service.answer_rows)
        service.answer_rows = recorder
        batch = client.post("/batch-predict", json={"items": items})
        singles = [client.post("/predict", json=i).json() for i in items]
    assert batch.status_code == 200
    assert_same_predictions(batch.json()["predictions"], singles)
    assert max(len(call) for call in recorder.calls) <= 3


def test_a_big_batch_gives_the_loop_a_turn_between_model_calls(artifacts):
    """Other requests are served between the model calls of a big batch:
    no call blocks the loop for longer than one micro-batch."""
    settings = make_settings(artifacts, max_micro_batch=3, cache_size=0)
    with TestClient(create_app(settings)) as client:
        service = client.app.state.service
    events = []

    def model(rows, batch):
        events.append(len(rows))
        return [b"{}"] * len(rows)

    service.answer_rows = model
    rows = [(float(i),) for i in range(9)]

    async def a_big_batch_beside_another_request():
        async def another_request():
            for _ in range(5):
                events.append("other")
                await asyncio.sleep(0)

        other = asyncio.ensure_future(another_request())
        answers = await service.answer_all(rows, rows)
        await other
        return answers

    answers = asyncio.run(a_big_batch_beside_another_request())
    assert len(answers) == 9
    model_calls = [i for i, event in enumerate(events) if event != "other"]
    assert [events[i] for i in model_calls] == [3, 3, 3]
    assert all(b - a > 1 for a, b in zip(model_calls, model_calls[1:]))
