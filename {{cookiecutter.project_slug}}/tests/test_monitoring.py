"""Data drift, prediction drift, the prediction log and the HTML report.

The drift figures are measured here, not assumed: windows drawn from the
distribution the reference came from must be flagged rarely (at most 10%
of the time at p=0.05), shifted ones almost always.
"""

import asyncio
import csv
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from scipy import stats

from {{ cookiecutter.package_name }}.api.main import create_app
from {{ cookiecutter.package_name }}.api.schemas import EXAMPLE, FEATURES
from {{ cookiecutter.package_name }}.monitoring import report
from {{ cookiecutter.package_name }}.monitoring.drift import (
    DriftMonitor,
    chi_square_p_value,
    class_drift,
    feature_drift,
)
from {{ cookiecutter.package_name }}.monitoring.prediction_log import (
    PredictionLog,
    log_files,
)
from {{ cookiecutter.package_name }}.predict import Predictor

from .conftest import DATA, EXAMPLE_LABEL, make_settings

P_VALUE = 0.05
SEEDS = 200


@pytest.fixture(scope="module")
def population(artifacts, dataset):
    """The data set the reference sample was drawn from, as clients send it
    (the CSV's decimals read as Python floats, not float32 widened), and the
    model."""
    features = dataset[0]
    with DATA.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    x = np.array([[float(v) for v in row[: len(features)]] for row in rows])
    return features, x, Predictor.load(make_settings(artifacts))


def new_monitor(reference, classes, window=1000, min_samples=100):
    return DriftMonitor(
        reference,
        classes,
        window=window,
        min_samples=min_samples,
        p_value=P_VALUE,
        cache_s=0,
    )


def draw(population, n, seed, shift_sd=None):
    """n rows drawn with replacement, one feature shifted by some of its
    standard deviations, with the model's encoded predictions."""
    features, x, predictor = population
    rng = np.random.default_rng(seed)
    rows = x[rng.integers(0, len(x), n)]
    if shift_sd:
        name, amount = shift_sd
        j = features.index(name)
        rows[:, j] += amount * x[:, j].std()
    rows = [tuple(map(float, r)) for r in rows]
    return rows, [orjson.dumps(p) for p in predictor.predict_rows(rows)]


def write_reference(path, features, rows, labels) -> None:
    """A reference sample as `make train` writes it: the inputs, the
    predicted class and its confidence (here 0.9 for every row)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*features, "predicted", "confidence"])
        for row, label in zip(rows, labels, strict=True):
            writer.writerow([*row, label, 0.9])


def encoded_answers(labels) -> list[bytes]:
    """The service's encoded answers for these labels (confidence 0.9)."""
    return [orjson.dumps({"label": str(c), "confidence": 0.9}) for c in labels]


def drift_rate(reference, classes, windows) -> float:
    flagged = []
    for rows, encoded in windows:
        monitor = new_monitor(reference, classes, window=len(rows))
        monitor.observe(rows, encoded)
        flagged.append(monitor.report()["status"] == "drift")
    return float(np.mean(flagged))


@pytest.mark.parametrize("window", [100, 1000])
def test_windows_from_the_reference_distribution_rarely_alarm(
    artifacts, population, window
):
    predictor = population[2]
    rate = drift_rate(
        artifacts / "reference.csv",
        predictor.classes,
        (draw(population, window, seed) for seed in range(SEEDS)),
    )
    # Measured: 0 of 200 windows (ties in the 0.1 cm measurements make KS
    # cautious). Float32-widened reference values made it 25-95%.
    assert rate <= 0.10, f"false-alarm rate {rate:.3f} at p={P_VALUE}"


def test_false_alarm_rate_is_near_the_level_on_continuous_data(tmp_path):
    """Without ties the tests are exact: the rate must be near p, not 0 (a
    monitor that never alarms would pass the test above). Reference and
    window are both drawn afresh for every seed, as the tests assume."""
    features, classes = ["a", "b", "c", "d"], ["x", "y", "z"]
    reference = tmp_path / "reference.csv"

    def windows():
        for seed in range(200):
            rng = np.random.default_rng(seed)
            sample = rng.normal(size=(300, 4))
            labels = [rng.choice(classes) for _ in sample]
            write_reference(reference, features, sample, labels)
            rows = [tuple(r) for r in rng.normal(size=(300, 4))]
            yield rows, encoded_answers(rng.choice(classes, 300))

    rate = drift_rate(reference, classes, windows())
    # Measured: 4.5% at p=0.05.
    assert 0.02 <= rate <= 0.10, f"false-alarm rate {rate:.3f}"


@pytest.mark.parametrize("shift_sd", [0.5, -0.5], ids=["up", "down"])
@pytest.mark.parametrize("feature", FEATURES)
def test_a_shifted_feature_is_flagged_and_named(
    artifacts, population, feature, shift_sd
):
    predictor = population[2]
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    rates = []
    for seed in range(20):
        monitor.inputs.clear()
        monitor.outputs.clear()
        monitor.observe(*draw(population, 200, seed, (feature, shift_sd)))
        answer = monitor.compute()
        rates.append(answer["features"][feature]["drift"])
    # Measured: half a standard deviation is caught in 100% of windows.
    assert np.mean(rates) >= 0.95
    assert answer["status"] == "drift" and answer["data_drift"]


@pytest.mark.parametrize("seed", range(40))
def test_the_ks_test_gives_scipys_statistic_and_p_value(seed):
    """The numpy KS test against scipy's (asymptotic, two-sided): the same
    statistic, and a p-value within 0.025 (within 0.002 below 0.05, where
    drift is decided), on samples of the sizes the window takes, ties
    included."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 1000, size=2)
    shift = rng.uniform(0, 0.5)
    reference = rng.normal(size=sizes[0]).round(int(rng.integers(1, 4)))
    recent = (rng.normal(size=sizes[1]) + shift).round(2)
    ours = feature_drift(reference, recent, threshold=P_VALUE)
    theirs = stats.ks_2samp(reference, recent, method="asymp")
    assert ours["statistic"] == pytest.approx(theirs.statistic, abs=1e-12)
    tolerance = 0.002 if theirs.pvalue < P_VALUE else 0.025
    assert ours["p_value"] == pytest.approx(theirs.pvalue, abs=tolerance)


@pytest.mark.parametrize("dof", range(1, 21))
def test_chi_square_p_values_are_scipys(dof):
    statistics = [0.0, 1e-3, 0.5, 1.0, 3.84, dof, 2.0 * dof, 50.0, 300.0]
    for statistic in statistics:
        assert chi_square_p_value(statistic, dof) == pytest.approx(
            stats.chi2.sf(statistic, dof), rel=1e-9, abs=1e-300
        )


@pytest.mark.parametrize("seed", range(20))
def test_the_class_test_is_scipys_chi2_contingency(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d"][: int(rng.integers(2, 5))]
    reference = list(rng.choice(classes, size=int(rng.integers(30, 300))))
    recent = list(rng.choice(classes, size=int(rng.integers(30, 1000))))
    ours = class_drift(reference, recent, classes, threshold=P_VALUE)
    counts = [[x.count(c) for c in classes] for x in (reference, recent)]
    table = np.array(counts)
    table = table[:, table.sum(axis=0) > 0]  # the classes either sample has
    theirs = stats.chi2_contingency(table, correction=False)
    assert ours["statistic"] == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-9)


SERVE_AND_COMPUTE_DRIFT = """
import sys
from fastapi.testclient import TestClient
from PACKAGE.api.main import create_app
from PACKAGE.api.schemas import EXAMPLE
with TestClient(create_app()) as client:
    for _ in range(30):
        client.post("/predict", json=EXAMPLE)
    report = client.get("/monitoring/drift").json()
print(report["status"], "scipy" in sys.modules)
"""


def test_the_service_computes_drift_without_importing_scipy(artifacts):
    """scipy is a development dependency: the image does not have it."""
    package = create_app.__module__.split(".")[0]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_AND_COMPUTE_DRIFT.replace("PACKAGE", package),
        ],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "ARTIFACTS_DIR": str(artifacts),
            "DRIFT_MIN_SAMPLES": "20",
            "LOG_LEVEL": "warning",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["drift", "False"]


def test_skewed_predicted_classes_are_prediction_drift(artifacts, population):
    predictor = population[2]
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    rows, encoded = draw(population, 300, seed=1)
    one_class = encoded[0]
    monitor.observe(rows, [one_class] * len(rows))  # inputs as usual
    answer = monitor.compute()
    assert answer["status"] == "drift"
    assert answer["prediction_drift"]["drift"]
    assert not answer["data_drift"]
    label = orjson.loads(one_class)["label"]
    assert answer["prediction_drift"]["recent"][label] == 300


def test_the_classes_are_tested_at_the_per_test_threshold(tmp_path):
    """A shift of the predicted classes whose p-value lies between the
    per-test threshold and p_value is not drift (Bonferroni); below the
    threshold it is. The reference shares are the reference's own."""
    features, classes = ["a", "b"], ["x", "y", "z"]
    rng = np.random.default_rng(0)
    reference = tmp_path / "reference.csv"
    write_reference(reference, features, rng.normal(size=(300, 2)), "xy" * 150)
    monitor = new_monitor(reference, classes, window=300)
    inputs = [tuple(row) for row in rng.normal(size=(300, 2))]

    def answer_for(n_x: int) -> dict:
        monitor.inputs.clear()
        monitor.outputs.clear()
        labels = "x" * n_x + "y" * (300 - n_x)
        monitor.observe(inputs, encoded_answers(labels))
        return monitor.compute()["prediction_drift"]

    answers = [answer_for(n_x) for n_x in range(150, 200, 2)]
    threshold = monitor.test_threshold
    between = [a for a in answers if threshold < a["p_value"] < P_VALUE]
    below = [a for a in answers if a["p_value"] < threshold]
    assert between and below
    assert not any(a["drift"] for a in between)
    assert all(a["drift"] for a in below)
    assert below[0]["reference_share"] == {"x": 0.5, "y": 0.5, "z": 0.0}


def test_the_timer_runs_one_test_per_loop_turn(artifacts, population):
    """In the background the report is computed a test at a time, one per
    event-loop turn (requests are served in between), and it is the same
    report /monitoring/drift computes."""
    predictor = population[2]
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    monitor.observe(*draw(population, 300, seed=2))
    turn, computations = 0, []  # each: the loop turn of each of its steps
    compute_steps = monitor.compute_steps

    def counted_steps():
        steps, resumed = compute_steps(), []
        computations.append(resumed)
        while True:
            resumed.append(turn)
            try:
                value = next(steps)
            except StopIteration as done:
                return done.value
            yield value

    async def background_report():
        loop = asyncio.get_running_loop()

        def count_turns():
            nonlocal turn
            turn += 1
            loop.call_soon(count_turns)

        count_turns()
        monitor.compute_steps = counted_steps
        monitor.refresh_every(0.001)
        for _ in range(10_000):  # bounded: the report comes in ~10 turns
            await asyncio.sleep(0)
            if monitor._report is not None:
                return monitor._report

    stepped = asyncio.run(background_report())
    assert stepped is not None
    # One step per test, then the report; never two in one turn. (On a
    # busy machine the next computation may have begun: not counted.)
    resumed = computations[0]
    assert len(resumed) == len(monitor.features) + 2
    assert len(set(resumed)) == len(resumed)
    monitor.compute_steps = compute_steps
    whole = monitor.compute()
    stepped.pop("computed_at"), whole.pop("computed_at")
    assert stepped == whole


@pytest.mark.parametrize("n", [0, 1, 99])
def test_small_windows_are_insufficient_data(artifacts, population, n):
    predictor = population[2]
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    monitor.observe(*draw(population, n, seed=0))
    answer = monitor.compute()
    assert answer["status"] == "insufficient_data"
    assert answer["window_size"] == n and answer["min_samples"] == 100
    monitor.observe(*draw(population, 100 - n, seed=1))  # min_samples now
    assert monitor.compute()["status"] in ("ok", "drift")


def test_one_bonferroni_threshold_for_every_test(artifacts, population):
    """p_value shared by the features' tests and the classes' test."""
    features, _, predictor = population
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    monitor.observe(*draw(population, 200, seed=3))
    answer = monitor.compute()
    expected = P_VALUE / (len(features) + 1)
    assert monitor.test_threshold == answer["per_test_threshold"] == expected


def test_the_window_keeps_the_latest_inputs_and_answers(artifacts, population):
    predictor = population[2]
    monitor = new_monitor(
        artifacts / "reference.csv", predictor.classes, window=100
    )
    rows, encoded = draw(population, 130, seed=4)
    monitor.observe(rows, encoded)
    assert list(monitor.inputs) == rows[-100:]
    assert list(monitor.outputs) == encoded[-100:]


def test_the_report_is_computed_at_most_once_per_cache_period(
    artifacts, population
):
    predictor = population[2]
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    monitor.cache_s = 3600
    monitor.observe(*draw(population, 150, seed=5))
    first = monitor.report()
    monitor.observe(*draw(population, 150, seed=6))
    assert monitor.report() is first  # within the period: the same report
    monitor.cache_s = 0
    assert monitor.report()["window_size"] == 300


def test_the_gauges_say_what_the_report_says(artifacts, population):
    """What Prometheus scrapes is the report's figures, each in its place."""
    features, _, predictor = population
    monitor = new_monitor(artifacts / "reference.csv", predictor.classes)
    rows, encoded = draw(population, 300, seed=7)
    one_class = [encoded[0]] * len(encoded)  # prediction drift only
    monitor.observe(rows, one_class)
    answer = monitor.compute()
    assert answer["prediction_drift"]["drift"] and not answer["data_drift"]

    def gauge(name, **labels):
        return REGISTRY.get_sample_value(name, labels)

    for feature in features:
        p_value = answer["features"][feature]["p_value"]
        assert gauge("drift_feature_p_value", feature=feature) == p_value
    assert gauge("drift_detected", kind="data") == 0
    assert gauge("drift_detected", kind="prediction") == 1
    recent = gauge("prediction_mean_confidence", window="recent")
    assert recent == answer["mean_confidence"]
    reference = gauge("prediction_mean_confidence", window="reference")
    assert reference == answer["reference_mean_confidence"] != recent


def test_drift_endpoint_names_the_worker_and_its_window(artifacts, dataset):
    features, _, x, _ = dataset
    items = [dict(zip(features, map(float, row))) for row in x[:30]]
    settings = make_settings(artifacts, drift_min_samples=20, drift_window=25)
    with TestClient(create_app(settings)) as client:
        early = client.get("/monitoring/drift").json()
        client.post("/batch-predict", json={"items": items})
        answer = client.get("/monitoring/drift").json()
    assert early["status"] == "insufficient_data"
    assert early["window_size"] == 0
    assert answer["worker_pid"] == os.getpid()
    assert answer["window_size"] == answer["window_capacity"] == 25
    assert answer["status"] in {"ok", "drift"}
    assert set(answer["features"]) == set(features)
    assert 0 < answer["mean_confidence"] <= 1


def test_prediction_log_rotates_and_stays_bounded(tmp_path):
    path = tmp_path / "predictions.jsonl"
    features = ["a", "b"]
    encoded = [orjson.dumps({"label": "x", "confidence": 0.5})]
    # Two writers on one file, as two workers would be.
    logs = [PredictionLog(path, features, max_bytes=4096) for _ in range(2)]
    for i in range(2000):
        logs[i % 2].write([(float(i), 1.0)], encoded)
    for log in logs:
        log.close()
    files = sorted(tmp_path.glob("predictions.jsonl*"))
    assert [f.name for f in files if f.suffix != ".lock"] == [
        "predictions.jsonl",
        "predictions.jsonl.1",
    ]
    # Near max_bytes each: at most one writer's buffer over.
    for file in files:
        assert file.stat().st_size <= 2 * 4096
    lines = [
        orjson.loads(line)
        for file in log_files(path)
        for line in file.read_bytes().splitlines()
    ]
    assert lines and all(r["prediction"]["label"] == "x" for r in lines)
    assert max(r["inputs"]["a"] for r in lines) == 1999.0


DROPPED = "prediction_log_dropped_lines_total"


def write_due(log: PredictionLog, value: float) -> None:
    """One line, written with a flush (its second has passed)."""
    log._flushed_at -= 2
    log.write([(value,)], [orjson.dumps({"label": "x"})])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_disk_drops_log_lines_and_never_fails_a_request(caplog):
    """/dev/full refuses every write with ENOSPC, as a full disk does."""
    before = REGISTRY.get_sample_value(DROPPED)
    log = PredictionLog("/dev/full", ["a"], max_bytes=1 << 20)
    with caplog.at_level(logging.WARNING):
        for value in (1.0, 2.0, 3.0):
            write_due(log, value)  # no exception reaches the request
        log.close()
    assert log._buffer == []  # dropped, not kept to grow without end
    assert REGISTRY.get_sample_value(DROPPED) == before + 3
    warnings = [r for r in caplog.records if "not written" in r.message]
    assert len(warnings) == 1  # at most one a minute


def test_a_log_whose_folder_went_writes_again_once_it_is_back(tmp_path):
    path = tmp_path / "logs" / "predictions.jsonl"
    log = PredictionLog(path, ["a"], max_bytes=1 << 20)
    write_due(log, 1.0)
    shutil.rmtree(path.parent)  # the file and its folder are gone
    write_due(log, 2.0)  # cannot reopen: dropped
    path.parent.mkdir()
    write_due(log, 3.0)
    log.close()
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["inputs"]["a"] for line in lines] == [3.0]


def test_workers_follow_a_rotation_and_never_rotate_twice(tmp_path):
    """Three workers on one log: after one rotates, another's next lines go
    to the new file, and a third that reaches the rotation late (it was
    waiting for the lock) does not rotate again over the rotated file."""
    path = tmp_path / "predictions.jsonl"
    encoded = [orjson.dumps({"label": "x"})]
    first, second, late = (
        PredictionLog(path, ["a"], max_bytes=100) for _ in range(3)
    )
    first.write([(1.0,)], encoded)
    first.write([(2.0,)], encoded)  # past 100 bytes: rotated
    second.write([(3.0,)], encoded)
    late._rotate()
    for log in (first, second, late):
        log.close()

    def inputs(file):
        lines = file.read_bytes().splitlines()
        return [orjson.loads(line)["inputs"]["a"] for line in lines]

    assert inputs(first.rotated) == [1.0, 2.0]
    assert inputs(path) == [3.0]


def test_the_report_reads_the_log_oldest_first_and_last_means_newest(
    tmp_path,
):
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(path, ["a"], max_bytes=2048)
    for i in range(300):
        log.write([(float(i),)], [orjson.dumps({"label": "x"})])
    log.close()
    assert len(log_files(path)) == 2  # it rotated: records in both files

    def inputs(records):
        return [record["inputs"]["a"] for record in records]

    everything, _ = report.read_log(path, last=None)
    assert inputs(everything) == sorted(inputs(everything))
    assert inputs(everything)[-1] == 299.0
    newest, _ = report.read_log(path, last=5)
    assert inputs(newest) == [295.0, 296.0, 297.0, 298.0, 299.0]


def test_the_last_lines_reach_the_file_when_traffic_stops(tmp_path):
    path = tmp_path / "predictions.jsonl"
    encoded = [orjson.dumps({"label": "x"})]

    async def write_then_wait():
        log = PredictionLog(path, ["a"], max_bytes=1_000_000)
        log.flush_every(0.05)
        log.write([(1.0,)], encoded)  # just after a flush: buffered
        await asyncio.sleep(0)
        buffered = path.read_bytes()
        await asyncio.sleep(0.2)  # no more requests
        on_disk = path.read_bytes()
        log.write([(2.0,)], encoded)  # and again, after the first flush
        await asyncio.sleep(0.2)
        later = path.read_bytes()
        log.close()
        return buffered, on_disk, later

    buffered, on_disk, later = asyncio.run(write_then_wait())
    assert buffered == b"" and len(on_disk.splitlines()) == 1
    assert len(later.splitlines()) == 2  # the timer keeps running


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    features=st.lists(st.text(), min_size=1, max_size=4, unique=True),
    data=st.data(),
    ts=st.floats(0, 4e9),
)
@settings(max_examples=100, deadline=None)
def test_log_lines_are_what_orjson_writes_of_each_record(
    tmp_path_factory, features, data, ts
):
    width = len(features)
    rows = data.draw(
        st.lists(st.tuples(*[finite] * width), max_size=5), label="rows"
    )
    encoded = [orjson.dumps({"label": "x", "confidence": 0.5})] * len(rows)
    log = PredictionLog(
        tmp_path_factory.mktemp("log") / "p.jsonl", features, 10_000
    )
    expected = b"".join(
        orjson.dumps(
            {
                "ts": ts,
                "inputs": dict(zip(features, row)),
                "prediction": orjson.Fragment(answer),
            }
        )
        + b"\n"
        for row, answer in zip(rows, encoded)
    )
    assert log.lines(rows, encoded, ts) == expected
    log.close()


def test_an_empty_prediction_log_setting_turns_the_log_off(
    artifacts, monkeypatch
):
    monkeypatch.setenv("PREDICTION_LOG", "")
    settings = make_settings(artifacts)  # read from the environment
    assert settings.prediction_log is None
    with TestClient(create_app(settings)) as client:
        assert client.app.state.service.monitor.log is None


def test_service_writes_the_prediction_log(artifacts, tmp_path):
    path = tmp_path / "log" / "predictions.jsonl"
    settings = make_settings(artifacts, prediction_log=path)
    with TestClient(create_app(settings)) as client:
        client.post("/batch-predict", json={"items": [EXAMPLE] * 3})
    record, *_ = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert record["inputs"] == EXAMPLE
    assert record["prediction"]["label"] == EXAMPLE_LABEL


def test_drift_report_is_a_self_contained_html_file(
    artifacts, population, tmp_path
):
    features, _, predictor = population
    log_path = tmp_path / "predictions.jsonl"
    log = PredictionLog(log_path, features, max_bytes=10_000_000)
    shifted = features[-1]
    log.write(*draw(population, 300, seed=2, shift_sd=(shifted, 1)))
    log.close()
    out = tmp_path / "reports" / "drift.html"
    report.main(
        ["--log", str(log_path), "--artifacts", str(artifacts)]
        + ["--out", str(out)]
    )
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    assert all(name in page for name in features)
    assert "Kolmogorov-Smirnov" in page and shifted in page
    assert page.count("data:image/png;base64,") == 2
    assert "Drift detected in: " in page
    assert "http://" not in page and "https://" not in page  # no server


@pytest.mark.parametrize(
    "content",
    [None, "", "a,b,label,confidence\n1,x"],
    ids=["missing", "empty", "not_numbers"],
)
def test_drift_report_says_clearly_when_the_reference_is_unusable(
    artifacts, population, tmp_path, content
):
    features, _, _ = population
    log_path = tmp_path / "predictions.jsonl"
    log = PredictionLog(log_path, features, max_bytes=10_000_000)
    log.write(*draw(population, 10, seed=3))
    log.close()
    reference = tmp_path / "artifacts" / "reference.csv"
    reference.parent.mkdir()
    if content is not None:
        reference.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        report.main(
            ["--log", str(log_path), "--artifacts", str(reference.parent)]
        )
    assert f"`rm -f {reference} && make train`" in str(stopped.value)


@pytest.mark.parametrize("content", [None, b""], ids=["missing", "empty"])
def test_drift_report_says_clearly_when_there_is_no_log(
    artifacts, tmp_path, content
):
    log_path = tmp_path / "predictions.jsonl"
    if content is not None:
        log_path.write_bytes(content)
    with pytest.raises(SystemExit) as stopped:
        report.main(["--log", str(log_path), "--artifacts", str(artifacts)])
    assert str(log_path) in str(stopped.value)
    assert "not found" in str(stopped.value) or "empty" in str(stopped.value)


def test_the_service_recomputes_drift_in_the_background(artifacts, population):
    """The gauges stay fresh without anyone reading /monitoring/drift."""
    settings = make_settings(
        artifacts, drift_cache_s=0.05, drift_min_samples=5
    )
    app = create_app(settings)

    async def computed_at_times() -> set:
        async with app.router.lifespan_context(app):
            monitor = app.state.service.monitor
            monitor.observe(*draw(population, 10, seed=8))
            seen = set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if monitor._report is not None:
                    seen.add(monitor._report["computed_at"])
            return seen

    assert len(asyncio.run(computed_at_times())) >= 2
