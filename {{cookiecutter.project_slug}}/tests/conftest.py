import csv
import random
import shutil
import socket
import subprocess
import time
from functools import cache
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.api.main import create_app
from {{ cookiecutter.package_name }}.api.schemas import (
    FEATURES,
    Prediction,
)
from {{ cookiecutter.package_name }}.local_server import free_port
from {{ cookiecutter.package_name }}.quantize import quantize_and_record
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.train import load_dataset, train

DATA = Path(__file__).resolve().parents[1] / "data" / "iris.csv"

# The documented example request (EXAMPLE) and its answer's label, from
# api/schemas.py. Tests take valid items and known answers from these and
# from the data, so they follow your data when you change the schema
# (README, The model).
EXAMPLE_LABEL: str = Prediction.model_fields["label"].examples[0]


@cache
def data_items() -> list[dict]:
    """Every row of the training data as a request item."""
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{name: float(row[name]) for name in FEATURES} for row in rows]


@cache
def data_ranges() -> dict[str, tuple[float, float]]:
    """The lowest and highest value of every feature in the data."""
    ranges = {}
    for name in FEATURES:
        values = [item[name] for item in data_items()]
        ranges[name] = min(values), max(values)
    return ranges


def an_item(share: float) -> dict:
    """A valid item: every feature `share` of the way from its lowest to
    its highest value in the data."""
    return {
        name: round(low + share * (high - low), 6)
        for name, (low, high) in data_ranges().items()
    }


def a_random_item() -> dict:
    """Fresh values within the data's ranges, so that no other test (or
    run) has cached them."""
    return {
        name: round(random.uniform(low, high), 6)
        for name, (low, high) in data_ranges().items()
    }


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Train once per test session, into a temporary folder."""
    out = tmp_path_factory.mktemp("artifacts")
    train(DATA, out, epochs=300)
    quantize_and_record(out, DATA)  # model-int8.pt and its figures
    return out


@pytest.fixture(scope="session")
def dataset():
    return load_dataset(DATA)


# Batch sizes pick different matrix kernels, so the last bits may differ.
# Dynamic int8 also quantizes activations per batch: an item's answer moves
# with its batch-mates (up to 0.07 seen on Iris rows; labels unchanged).
BATCH_TOLERANCE = 0.1 if Settings().quantize_int8 else 1e-7


def assert_same_predictions(left: list[dict], right: list[dict]) -> None:
    """Equal labels; probabilities equal within BATCH_TOLERANCE."""
    assert [p["label"] for p in left] == [p["label"] for p in right]
    for a, b in zip(left, right):
        assert a["probabilities"] == pytest.approx(
            b["probabilities"], rel=1e-5, abs=BATCH_TOLERANCE
        )


def make_settings(artifacts: Path, **overrides) -> Settings:
    values = dict(
        artifacts_dir=artifacts,
        data_path=DATA,
        device="cpu",
        web_concurrency=1,
        drift_min_samples=20,
        drift_cache_s=0,
    )
    return Settings(**{**values, **overrides})


@pytest.fixture
def settings(artifacts) -> Settings:
    return make_settings(artifacts)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
