import json
import re
from pathlib import Path

import pytest

ACCURACY_FLOOR = 0.9


def test_training_reaches_the_accuracy_floor_on_held_out_rows(artifacts):
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert metrics["n_val"] == 30 and metrics["n_train"] == 120
    assert metrics["val_accuracy"] >= ACCURACY_FLOOR


@pytest.mark.parametrize(
    "name",
    [
        "model.pt",
        "preprocessing.json",
        "reference.csv",
        "metrics.json",
        "training.png",
    ],
)
def test_training_writes_every_artifact(artifacts, name):
    assert (artifacts / name).stat().st_size > 0


def test_the_plot_is_a_png(artifacts):
    assert (artifacts / "training.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"


def test_reference_sample_holds_training_inputs_and_predictions(artifacts):
    lines = (artifacts / "reference.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[-2:] == ["predicted", "confidence"]
    assert len(lines) - 1 == 120


def test_preprocessing_names_features_and_classes(artifacts, dataset):
    features, classes, _, _ = dataset
    meta = json.loads((artifacts / "preprocessing.json").read_text())
    assert meta["features"] == features
    assert meta["classes"] == classes == ["setosa", "versicolor", "virginica"]
    assert len(meta["mean"]) == len(meta["std"]) == 4


def test_training_is_reproducible(tmp_path, artifacts):
    from {{ cookiecutter.package_name }}.train import train

    from .conftest import DATA

    again = train(DATA, tmp_path, epochs=300)
    first = json.loads((artifacts / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"]
    assert again["final_loss"] == pytest.approx(first["final_loss"])


def test_torch_is_pinned_alike_everywhere():
    """pyproject.toml, the Makefile and the Dockerfile each pin torch (it
    comes from the PyTorch index, outside the hashed locks)."""
    root = Path(__file__).resolve().parents[1]
    pins = {
        "pyproject.toml": r'"torch==([^"]+)"',
        "Makefile": r"^TORCH_VERSION := (\S+)$",
        "Dockerfile": r"^ARG TORCH_VERSION=(\S+)$",
    }
    versions = {
        name: re.search(pattern, (root / name).read_text(), re.M).group(1)
        for name, pattern in pins.items()
    }
    assert len(set(versions.values())) == 1, versions
