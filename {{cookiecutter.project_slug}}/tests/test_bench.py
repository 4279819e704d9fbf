"""`make bench` works: its pieces, briefly (the figures are not asserted:
timing belongs to the benchmark, not to the tests)."""

import asyncio
import json
import random
import shutil

import orjson
import pytest

from {{ cookiecutter.package_name }} import bench
from {{ cookiecutter.package_name }}.api.main import Service
from {{ cookiecutter.package_name }}.api.schemas import (
    EXAMPLE,
    FEATURES,
    BatchRequest,
    Item,
    batch_rows,
)
from {{ cookiecutter.package_name }}.soak import fetch

from .conftest import make_settings


@pytest.fixture(scope="module")
def inputs(artifacts) -> bench.Inputs:
    return bench.Inputs.of(artifacts)


def test_the_limit_is_measured_in_process(artifacts, inputs):
    limit = bench.measure_limit(inputs, 0.1, make_settings(artifacts))
    assert limit["single_per_s"] > 0 and limit["batch_items_per_s"] > 0


def test_the_inputs_sent_are_valid_items_of_the_api(inputs):
    assert inputs.features == FEATURES
    generator = random.Random(1)
    for _ in range(200):
        Item.model_validate_json(inputs.item(generator))


def test_the_batch_bodies_are_valid_distinct_and_compact(inputs):
    bodies = bench.batch_bodies(inputs, 5)
    assert len(set(bodies)) == 5
    for body in bodies:
        items = BatchRequest.model_validate_json(body).items
        assert len(items) == bench.BATCH_ITEMS
        assert batch_rows(body) is not None  # read as wrk's bodies are


def test_the_app_is_timed_in_process_on_those_bodies(
    artifacts, inputs, monkeypatch
):
    handled = []
    answer_many = Service.answer_many

    async def counted(service, body):
        handled.append(body)
        return await answer_many(service, body)

    monkeypatch.setattr(Service, "answer_many", counted)
    rate = bench.app_batch_rate(inputs, make_settings(artifacts))
    assert rate(0.05) > 0
    assert len(handled) > 20  # the warm-up, then the timed calls
    assert set(handled) <= set(bench.batch_bodies(inputs, 64))


def test_each_round_is_compared_with_its_own_limit():
    rounds = [
        (bench.Result(6000, 1.0, 0, 5.0, 10.0), 10_000.0),
        (bench.Result(3000, 1.0, 1, 9.0, 30.0), 6_000.0),
        (bench.Result(9000, 1.0, 0, 4.0, 8.0), 12_000.0),
    ]
    figure = bench.combine("/predict", rounds)
    assert figure.value == 6000  # the median throughput
    assert figure.ratio == 0.6  # the median of 0.6, 0.5 and 0.75
    assert (figure.p50_ms, figure.p99_ms, figure.errors) == (5.0, 30.0, 1)
    assert [r["p99_ms"] for r in figure.rounds] == [10.0, 30.0, 8.0]
    batch = bench.combine("/batch-predict", rounds[:1], items=256)
    assert batch.value == 6000 * 256 and batch.unit == "items/s"


def figure_of(name: str, per_s: list[int]) -> bench.Figure:
    """A figure with a round for each rate (1 s each, limit 10k/s)."""
    rounds = [(bench.Result(n, 1.0, 0, 1.0, 2.0), 10_000) for n in per_s]
    return bench.combine(name, rounds)


def judged(cached, health, predict, naive) -> dict[str, bench.Figure]:
    """The figures judged against each other, round by round."""
    figures = {
        bench.CACHED: figure_of(bench.CACHED, cached),
        bench.HEALTH: figure_of(bench.HEALTH, health),
        bench.PREDICT: figure_of(bench.PREDICT, predict),
        bench.NAIVE: figure_of(bench.NAIVE, naive),
    }
    bench.judge(figures, {"single_per_s": 10_000.0})
    return figures


def test_cached_and_naive_are_compared_round_by_round():
    figures = judged(
        cached=[9_000, 18_500, 12_000],
        health=[10_000, 20_000, 20_000],
        predict=[6_000, 9_000, 6_500],
        naive=[1_900, 2_800, 2_600],
    )
    # Round by round: 0.9, 0.925 and 0.6 of /health; 3.158, 3.214 and 2.5
    # times naive. The ratios of the medians (0.6, 2.5) would mix rounds.
    assert figures[bench.CACHED].passed is True
    assert "(0.900x)" in figures[bench.CACHED].target
    assert figures[bench.PREDICT].passed is True
    assert "(3.15x)" in figures[bench.PREDICT].target


def test_a_near_miss_does_not_read_as_the_target():
    figures = judged(
        cached=[89_996], health=[100_000], predict=[6_000], naive=[2_001]
    )
    # 0.89996 of /health and 2.9985 times naive: rounded to the nearest,
    # "0.900x" and "3.00x", the targets, beside a MISS.
    assert figures[bench.CACHED].passed is False
    assert "(0.899x)" in figures[bench.CACHED].target
    assert figures[bench.PREDICT].passed is False
    assert "(2.99x)" in figures[bench.PREDICT].target


def test_the_table_prints_a_near_miss_under_its_target():
    limit = {"single_per_s": 10_000.0, "batch_items_per_s": 1_000_000.0}
    # 1561 requests of 256 items: 0.3996 of the limit, "0.40" if rounded.
    result = bench.Result(1561, 1.0, 0, 1.0, 2.0)
    batch = bench.combine(bench.BATCH, [(result, 1_000_000)], 256)
    bench.judge({bench.BATCH: batch}, limit)
    row = bench.table([batch], limit).splitlines()[-1]
    assert batch.passed is False
    assert " 0.39  MISS" in row


def test_the_floors_are_shown_beside_the_targets_not_judged():
    limit = {"single_per_s": 10_000.0, "batch_items_per_s": 1_000_000.0}
    figures = {
        bench.POST_FLOOR: figure_of(bench.POST_FLOOR, [9_300, 9_000]),
        bench.HEALTH_FLOOR: figure_of(bench.HEALTH_FLOOR, [10_000] * 2),
        bench.BATCH_APP: bench.rate_figure(
            bench.BATCH_APP, [(400_000, 1_000_000), (500_000, 1_000_000)]
        ),
    }
    bench.judge(figures, limit)
    # Round by round 0.93 and 0.90 of the floor's own /health.
    assert "(0.915x its /health" in figures[bench.POST_FLOOR].target
    assert figures[bench.BATCH_APP].ratio == 0.45
    assert figures[bench.BATCH_APP].target == "(the app without HTTP)"
    assert all(figure.passed is None for figure in figures.values())
    assert "MISS" not in bench.table(list(figures.values()), limit)


def test_a_ratio_prints_rounded_down_from_its_own_digits():
    # Floored in binary, 1.15 * 100 and 0.577 * 1000 fall one digit short.
    assert bench.rounded_down(1.15, 2) == "1.15"
    assert bench.rounded_down(0.577, 3) == "0.577"
    assert bench.rounded_down(0.89996, 3) == "0.899"
    assert bench.rounded_down(3.0, 2) == "3.00"
    assert bench.rounded_down(float("nan"), 2) == "nan"


def test_a_start_is_the_median_of_its_measurements():
    measurements = iter([2.9, 2.1, 2.4])
    figure = bench.seconds_figure("start", measurements.__next__, 3)
    assert (figure.value, figure.unit) == (2.4, "s")
    assert [r["value"] for r in figure.rounds] == [2.9, 2.1, 2.4]


def test_a_run_has_at_least_one_round(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
    assert "--rounds: at least 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(artifacts):
    with bench.serve(f"{bench.PACKAGE}.api.main:create_app()", artifacts) as s:
        yield s


@pytest.fixture(scope="module")
def floor(artifacts):
    with bench.serve(f"{bench.PACKAGE}.bench:floor_app()", artifacts) as s:
        yield s


def test_the_floor_answers_as_the_service_does(server, floor, inputs):
    example = orjson.dumps(EXAMPLE)
    (batch,) = bench.batch_bodies(inputs, 1)

    async def ask(port):
        return [
            await fetch(port, "POST", "/predict", example),
            await fetch(port, "POST", "/batch-predict", batch),
            await fetch(port, "GET", "/health"),
            await fetch(port, "GET", "/nowhere"),
        ]

    service, bare = asyncio.run(ask(server.port)), asyncio.run(ask(floor.port))
    assert [r.status for r in bare] == [r.status for r in service]
    assert [r.status for r in bare] == [200, 200, 200, 404]
    assert bare[0].body == service[0].body  # the documented example's
    assert bare[2].body == service[2].body
    # Another 256 items' answers: the same size, give or take their digits.
    floor_answers = orjson.loads(bare[1].body)["predictions"]
    service_answers = orjson.loads(service[1].body)["predictions"]
    assert len(floor_answers) == len(service_answers) == bench.BATCH_ITEMS
    assert floor_answers[0].keys() == service_answers[0].keys()
    assert 0.9 < len(bare[1].body) / len(service[1].body) < 1.1


TOOLS = [
    pytest.param(bench.run_python, id="python"),
    pytest.param(
        bench.run_wrk,
        id="wrk",
        marks=pytest.mark.skipif(not shutil.which("wrk"), reason="no wrk"),
    ),
    pytest.param(
        bench.run_hey,
        id="hey",
        marks=pytest.mark.skipif(not shutil.which("hey"), reason="no hey"),
    ),
]


def the_loads_of_a_run(inputs) -> list:
    """Every distinct load `make bench` sends."""
    loads = {}
    for point in bench.points(inputs):
        load = point.load
        loads.setdefault((load.method, load.path, load.items, load.body), load)
    return list(loads.values())


@pytest.mark.parametrize("run", TOOLS)
def test_short_load_points_against_a_live_server(server, inputs, run):
    loads = the_loads_of_a_run(inputs)
    assert {load.varies for load in loads} == {True, False}
    for load in loads:
        if run is bench.run_hey and load.varies:
            continue  # hey sends constant bodies only
        result = run(server.port, load, 4, 1, 200)
        assert 0 < result.requests <= 200 + 4, load  # the count limit holds
        assert result.errors == 0, load
        assert result.p50_ms <= result.p99_ms


def test_the_report_has_the_table_json_and_plot(tmp_path):
    limit = {"single_per_s": 10_000.0, "batch_items_per_s": 500_000.0}
    result = bench.Result(5000, 1.0, 0, 5.0, 12.0)
    naive = bench.Result(1000, 1.0, 0, 50.0, 90.0)
    figures = {
        bench.PREDICT: bench.combine(bench.PREDICT, [(result, 10_000)]),
        bench.NAIVE: bench.combine(bench.NAIVE, [(naive, 10_000)]),
        bench.COLD_START: bench.Figure(bench.COLD_START, 1.5, "s"),
    }
    bench.judge(figures, limit)
    assert figures[bench.PREDICT].passed is False  # 0.5x the limit
    assert figures[bench.COLD_START].passed is True
    text = bench.table(list(figures.values()), limit)
    assert bench.PREDICT in text and "MISS" in text and "pass" in text
    bench.write_report(list(figures.values()), limit, tmp_path, {})
    assert json.loads((tmp_path / "bench.json").read_text())["figures"]
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_a_run_in_which_requests_failed_exits_1(monkeypatch, tmp_path, capsys):
    """Figures of failed requests (422s of inputs the API refuses, refused
    connections) measure something else than the service."""
    failed = bench.Result(100, 1.0, 3, 1.0, 2.0)
    figure = bench.combine(bench.PREDICT, [(failed, 1000.0)])
    limit = {"single_per_s": 1000.0, "batch_items_per_s": 1000.0}
    monkeypatch.setattr(bench, "run_bench", lambda *_: (limit, [figure]))
    assert bench.main(["--out", str(tmp_path)]) == 1
    assert (
        f"Requests failed at: {bench.PREDICT} (3)" in capsys.readouterr().err
    )
