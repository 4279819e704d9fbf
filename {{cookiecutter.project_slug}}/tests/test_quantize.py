import json

import pytest

from {{ cookiecutter.package_name }}.predict import Predictor
from {{ cookiecutter.package_name }}.quantize import main, throughput
from {{ cookiecutter.package_name }}.train import (
    SEED,
    VALIDATION_SHARE,
    stratified_split,
)

from .conftest import make_settings

# int8 may flip a borderline row; on 30 held-out rows we allow one flip
# and at most 0.05 of accuracy.
MIN_AGREEMENT = 0.95
MAX_ACCURACY_LOSS = 0.05


@pytest.fixture(scope="module")
def int8_figures(artifacts):
    return json.loads((artifacts / "metrics.json").read_text())["int8"]


def held_out(dataset) -> tuple[list[tuple], list[str]]:
    """The validation rows of `make train`, and their true labels."""
    _, classes, x, y = dataset
    _, rows = stratified_split(y, VALIDATION_SHARE, SEED)
    inputs = [tuple(map(float, r)) for r in x[rows]]
    return inputs, [classes[i] for i in y[rows]]


def load(artifacts, quantize_int8: bool) -> Predictor:
    settings = make_settings(artifacts, quantize_int8=quantize_int8)
    return Predictor.load(settings)


def labels(predictor: Predictor, rows) -> list[str]:
    return [p["label"] for p in predictor.predict_rows(rows)]


def share(pairs) -> float:
    pairs = list(pairs)
    return sum(a == b for a, b in pairs) / len(pairs)


def test_int8_agrees_with_fp32_on_held_out_rows(
    artifacts, dataset, int8_figures
):
    rows, truth = held_out(dataset)
    fp32 = labels(load(artifacts, quantize_int8=False), rows)
    int8 = labels(load(artifacts, quantize_int8=True), rows)
    agreement = share(zip(fp32, int8))
    int8_accuracy = share(zip(int8, truth))
    assert agreement >= MIN_AGREEMENT
    assert share(zip(fp32, truth)) - int8_accuracy <= MAX_ACCURACY_LOSS
    # `make quantize` recorded what the models the service loads do.
    assert int8_figures["agreement"] == pytest.approx(agreement)
    assert int8_figures["int8"]["val_accuracy"] == pytest.approx(int8_accuracy)
    fp32_accuracy = share(zip(fp32, truth))
    assert int8_figures["fp32"]["val_accuracy"] == pytest.approx(fp32_accuracy)


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


@pytest.mark.parametrize("batch", [1, 256])
def test_throughput_runs_the_model_on_batches_of_its_size(dataset, batch):
    _, _, x, _ = dataset
    shapes = set()

    def model(inputs):
        shapes.add(tuple(inputs.shape))

    assert throughput(model, x, batch) > 0
    assert shapes == {(batch, x.shape[1])}


def quantized_layers(predictor) -> list:
    return [
        layer
        for layer in predictor.model.modules()
        if ".quantized." in type(layer).__module__
    ]


def test_service_serves_the_int8_model_when_asked(artifacts, dataset):
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x]
    fp32 = load(artifacts, quantize_int8=False)
    int8 = load(artifacts, quantize_int8=True)
    assert int8.info()["quantized"] and not fp32.info()["quantized"]
    # The int8 model's Linear layers are quantized ones, the fp32 model's not.
    assert quantized_layers(int8) and not quantized_layers(fp32)
    agreement = share(zip(labels(fp32, rows), labels(int8, rows)))
    assert agreement >= MIN_AGREEMENT


def test_quantize_says_in_one_line_that_the_model_is_damaged(
    tmp_path, artifacts
):
    for name in ("preprocessing.json", "metrics.json"):
        (tmp_path / name).write_text((artifacts / name).read_text())
    model = (artifacts / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(model[: len(model) // 2])
    with pytest.raises(SystemExit) as stopped:
        main(["--artifacts", str(tmp_path)])
    message = str(stopped.value)
    assert f"`rm -f {tmp_path / 'model.pt'} && make train`" in message
    assert "Traceback" not in message
    assert not (tmp_path / "model-int8.pt").exists()
