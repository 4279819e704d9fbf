import json
import math

import numpy as np
import orjson
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package_name }}.api.schemas import (
    EXAMPLE,
    FEATURES,
    Item,
    refused,
)
from {{ cookiecutter.package_name }}.model import Classifier
from {{ cookiecutter.package_name }}.predict import (
    AnswerEncoder,
    ModelLoadError,
    Predictor,
    as_batch,
    clean,
    format_prediction,
    select_device,
    served_model_path,
)

from .conftest import (
    EXAMPLE_LABEL,
    assert_same_predictions,
    make_settings,
)

LAST = FEATURES[-1]


@pytest.fixture(scope="module")
def predictor(artifacts):
    return Predictor.load(make_settings(artifacts))


def test_pipeline_answers_the_documented_example_as_documented(predictor):
    row = clean(Item(**EXAMPLE), FEATURES)
    (answer,) = predictor.predict_rows([row])
    assert answer["label"] == EXAMPLE_LABEL
    assert math.isclose(sum(answer["probabilities"].values()), 1, rel_tol=1e-5)
    assert answer["confidence"] == max(answer["probabilities"].values())


def test_predictions_on_the_shipped_data_match_the_labels(predictor, dataset):
    _, classes, x, y = dataset
    answers = predictor.predict_rows([tuple(map(float, r)) for r in x])
    correct = sum(a["label"] == classes[t] for a, t in zip(answers, y))
    assert correct / len(y) >= 0.9


@pytest.mark.parametrize("given_batch", [False, True])
def test_batch_keeps_order_and_computes_duplicates_once(
    predictor, dataset, monkeypatch, given_batch
):
    _, _, x, _ = dataset
    rows = [tuple(map(float, r)) for r in x[[0, 60, 120, 0, 60]]]
    singles = [predictor.predict_rows([row])[0] for row in rows]
    forward, sizes = predictor.forward, []

    def counted_forward(batch):
        sizes.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(predictor, "forward", counted_forward)
    batch = as_batch(rows) if given_batch else None
    answers = predictor.answers(rows, batch)
    assert sizes == [3]
    assert_same_predictions(list(map(orjson.loads, answers)), singles)
    assert answers[0] is answers[3] and answers[1] is answers[4]


def test_empty_batch_gives_empty_answer(predictor):
    assert predictor.answers([]) == predictor.predict_rows([]) == []


probability = st.floats(0, 1, width=32) | st.sampled_from([0.0, 0.5, 1e-45])


@given(
    classes=st.lists(st.text(min_size=1), min_size=1, max_size=6, unique=True),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_the_fast_encoder_writes_what_format_prediction_says(classes, data):
    """Byte for byte, ties (the first wins) and escaped names included."""
    width = len(classes)
    row = st.lists(probability, min_size=width, max_size=width)
    rows = data.draw(st.lists(row, min_size=1, max_size=20))
    probabilities = np.array(rows, dtype=np.float32)
    expected = [
        orjson.dumps(format_prediction(p, classes))
        for p in probabilities.tolist()
    ]
    assert AnswerEncoder(classes)(probabilities) == expected


@pytest.mark.parametrize(
    "value",
    [None, str(EXAMPLE[LAST]), True, [], math.nan, math.inf, -math.inf]
    + list(refused(LAST).values()),
    ids=lambda v: repr(v),
)
def test_validation_rejects_what_cannot_be_a_measurement(value):
    with pytest.raises(ValueError):
        Item(**{**EXAMPLE, LAST: value})


def test_cpu_fallback_when_cuda_is_asked_for_but_absent(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cuda").type == "cpu"
    assert "No CUDA device" in caplog.text


@pytest.mark.parametrize("wanted", ["auto", "cuda"])
def test_a_gpu_is_used_when_there_is_one(monkeypatch, wanted):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(wanted).type == "cuda"


@pytest.mark.parametrize(
    "int8, device, served",
    [
        (False, "cpu", "model.pt"),
        (False, "cuda", "model.pt"),
        (True, "cpu", "model-int8.pt"),  # made by `make quantize`
        (True, "cuda", "model.pt"),  # quantized by torchao at load
    ],
)
def test_the_served_weights_file_follows_the_device(
    artifacts, int8, device, served
):
    settings = make_settings(artifacts, quantize_int8=int8)
    path = served_model_path(settings, torch.device(device))
    assert path == artifacts / served


def test_torch_compile_is_left_off_on_the_cpu(artifacts):
    """TORCH_COMPILE pays on CUDA only; on the CPU it would add seconds of
    compiling to every start for a model this small."""
    predictor = Predictor.load(
        make_settings(artifacts, device="cpu", torch_compile=True)
    )
    assert type(predictor.model) is Classifier  # not an OptimizedModule


def test_bf16_autocast_is_left_off_on_the_cpu(artifacts):
    """AUTOCAST_BF16 applies on CUDA; on the CPU it would only add casts."""
    settings = make_settings(artifacts, device="cpu", autocast_bf16=True)
    assert Predictor.load(settings).autocast is False


def test_loading_sets_the_torch_threads(artifacts):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Predictor.load(make_settings(artifacts, torch_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "int8, command", [(False, "make train"), (True, "make quantize")]
)
def test_missing_model_file_names_the_path_and_the_command(
    tmp_path, artifacts, int8, command
):
    settings = make_settings(tmp_path, quantize_int8=int8)
    (tmp_path / "preprocessing.json").write_text(
        (artifacts / "preprocessing.json").read_text()
    )
    with pytest.raises(ModelLoadError, match=str(settings.model_path)) as e:
        Predictor.load(settings)
    assert f"run `{command}` first" in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape", "pickle"])
def test_damaged_model_file_names_the_path(tmp_path, artifacts, damage):
    settings = make_settings(tmp_path)
    (tmp_path / "preprocessing.json").write_text(
        (artifacts / "preprocessing.json").read_text()
    )
    model_bytes = (artifacts / settings.model_path.name).read_bytes()
    if damage == "truncated":
        settings.model_path.write_bytes(model_bytes[: len(model_bytes) // 2])
    elif damage == "wrong_shape":
        torch.save({"net.0.weight": torch.zeros(2, 2)}, settings.model_path)
    else:  # arbitrary objects are refused by weights_only=True
        torch.save({"payload": object()}, settings.model_path)
    with pytest.raises(ModelLoadError, match=str(settings.model_path)) as e:
        Predictor.load(settings)
    # make goes by dates: the damaged file must go before it trains again.
    assert f"`rm -f {settings.model_path} && make " in str(e.value)


@pytest.mark.parametrize("key", ["features", "classes"])
def test_preprocessing_without_a_key_names_the_file(tmp_path, artifacts, key):
    settings = make_settings(tmp_path)
    meta = json.loads((artifacts / "preprocessing.json").read_text())
    del meta[key]
    (tmp_path / "preprocessing.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="preprocessing.json"):
        Predictor.load(settings)


class Tripwire:
    """Unpickling it creates a file: code run from the model file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_model_file_never_runs_code(tmp_path, artifacts):
    settings = make_settings(tmp_path)
    (tmp_path / "preprocessing.json").write_text(
        (artifacts / "preprocessing.json").read_text()
    )
    ran = tmp_path / "code-ran"
    torch.save({"payload": Tripwire(ran)}, settings.model_path)
    with pytest.raises(ModelLoadError):
        Predictor.load(settings)
    assert not ran.exists()
