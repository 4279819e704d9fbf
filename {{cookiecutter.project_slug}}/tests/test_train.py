import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package_name }}.api.schemas import FEATURES, Item
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.train import (
    SEED,
    VALIDATION_SHARE,
    stratified_split,
)

from .conftest import DATA, data_items

ACCURACY_FLOOR = 0.9


def test_training_reaches_the_accuracy_floor_on_held_out_rows(
    artifacts, dataset
):
    _, classes, _, y = dataset
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert metrics["n_val"] + metrics["n_train"] == len(y)
    # A fifth of every class, rounded either way.
    share = metrics["n_val"] / len(y)
    assert abs(share - 0.2) * len(y) <= len(classes)
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
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert len(lines) - 1 == metrics["n_train"]


def test_preprocessing_names_features_and_classes(artifacts, dataset):
    features, classes, _, _ = dataset
    with DATA.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    meta = json.loads((artifacts / "preprocessing.json").read_text())
    assert meta["features"] == features == header[:-1]
    assert meta["classes"] == classes == sorted({r[-1] for r in rows if r})
    assert len(meta["mean"]) == len(meta["std"]) == len(features)


def test_inputs_are_scaled_by_the_training_rows_alone(artifacts, dataset):
    """The scaling statistics come from the training rows (not the held-out
    ones), so that the held-out accuracy is honest."""
    _, _, x, y = dataset
    train_rows, val_rows = stratified_split(y, VALIDATION_SHARE, SEED)
    assert set(train_rows).isdisjoint(val_rows)
    assert len(train_rows) + len(val_rows) == len(y)
    meta = json.loads((artifacts / "preprocessing.json").read_text())
    assert meta["mean"] == pytest.approx(x[train_rows].mean(0), rel=1e-5)
    std = x[train_rows].std(0, ddof=1)
    assert meta["std"] == pytest.approx(std, rel=1e-4)


def test_the_split_holds_out_every_class_alike_at_random():
    """Data files are often sorted by class: the held-out rows of a class
    are a random draw, not its first or last rows."""
    y = np.repeat([0, 1, 2], [50, 30, 7])
    train_rows, val_rows = stratified_split(y, 0.2, SEED)
    assert sorted([*train_rows, *val_rows]) == list(range(len(y)))
    held_out = [np.isin(np.flatnonzero(y == c), val_rows) for c in range(3)]
    assert [int(rows.sum()) for rows in held_out] == [10, 6, 1]
    assert not held_out[0][:10].all() and not held_out[0][-10:].all()


def test_every_row_of_the_data_is_a_valid_request(dataset):
    """The API's bounds (api/schemas.py) admit all the training data, and
    its fields are the data's columns, in order."""
    features, _, _, _ = dataset
    assert list(FEATURES) == features
    for item in data_items():
        Item(**item)


def test_training_is_reproducible(tmp_path, artifacts):
    from {{ cookiecutter.package_name }}.train import train

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


def test_the_readme_states_the_settings_defaults():
    """The configuration table of the README is the settings' defaults."""
    root = Path(__file__).resolve().parents[1]
    table = re.findall(
        r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|",
        (root / "README.md").read_text(),
        re.M,
    )
    fields = Settings.model_fields
    checked = 0
    for variable, stated in table:
        field = fields.get(variable.lower())
        if field is None or field.default_factory is not None:
            continue
        default = field.default
        if isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        assert str(default) == stated, variable
        checked += 1
    assert checked >= 15
