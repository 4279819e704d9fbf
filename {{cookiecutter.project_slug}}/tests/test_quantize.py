import json

import pytest

from {{ cookiecutter.package_name }}.predict import Predictor

from .conftest import make_settings

# int8 may flip a borderline row; on 30 held-out rows we allow one flip
# and at most 0.05 of accuracy.
MIN_AGREEMENT = 0.95
MAX_ACCURACY_LOSS = 0.05


@pytest.fixture(scope="module")
def int8_figures(artifacts):
    return json.loads((artifacts / "metrics.json").read_text())["int8"]


def test_int8_agrees_with_fp32_on_held_out_rows(int8_figures):
    assert int8_figures["agreement"] >= MIN_AGREEMENT
    loss = (
        int8_figures["fp32"]["val_accuracy"]
        - int8_figures["int8"]["val_accuracy"]
    )
    assert loss <= MAX_ACCURACY_LOSS


def test_int8_weights_are_smaller(int8_figures, artifacts):
    assert (
        int8_figures["int8"]["file_bytes"] < int8_figures["fp32"]["file_bytes"]
    )
    assert (artifacts / "model-int8.pt").stat().st_size == int8_figures[
        "int8"
    ]["file_bytes"]


@pytest.mark.parametrize(
    "figure", ["batch1_per_s", "batch256_items_per_s", "file_bytes"]
)
def test_metrics_record_speed_and_size_of_both(int8_figures, figure):
    assert int8_figures["fp32"][figure] > 0
    assert int8_figures["int8"][figure] > 0


def test_service_serves_the_int8_model_when_asked(artifacts, dataset):
    _, classes, x, y = dataset
    rows = [tuple(map(float, r)) for r in x]
    fp32 = Predictor.load(make_settings(artifacts, quantize_int8=False))
    int8 = Predictor.load(make_settings(artifacts, quantize_int8=True))
    assert int8.info()["quantized"] and not fp32.info()["quantized"]
    labels = [p["label"] for p in fp32.predict_rows(rows)]
    labels8 = [p["label"] for p in int8.predict_rows(rows)]
    agreement = sum(a == b for a, b in zip(labels, labels8)) / len(rows)
    assert agreement >= MIN_AGREEMENT
