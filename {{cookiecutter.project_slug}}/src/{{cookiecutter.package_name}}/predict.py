"""The inference pipeline, written once: validate, clean, predict, format.

`validate` is the Pydantic schema (api/schemas.py); `clean` turns a valid
item into a row of floats in training order; `Predictor.predict_rows` runs
one forward pass for many rows; `format_prediction` builds the answer.
The API, the micro-batcher, the benchmark and the tests all go through it.
"""

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path

import torch

from .model import Classifier
from .settings import Settings

log = logging.getLogger(__name__)

Row = tuple[float, ...]

PREPROCESSING_FILE = "preprocessing.json"


class ModelLoadError(RuntimeError):
    """Missing or unusable model artifacts; the message names the path."""


def row_reader(features: Sequence[str]) -> Callable[[object], Row]:
    """`clean` for one order of features, at C speed (0.1 us an item):
    the schema's strict floats come out of validation as floats already."""
    read = attrgetter(*features)
    if len(features) == 1:
        return lambda item: (read(item),)
    return read


def clean(item: object, features: Sequence[str]) -> Row:
    """A validated item as a row of floats, in the training order."""
    return row_reader(features)(item)


def format_prediction(probabilities: list[float], classes: Sequence[str]):
    best = probabilities.index(max(probabilities))
    return {
        "label": classes[best],
        "confidence": probabilities[best],
        "probabilities": dict(zip(classes, probabilities)),
    }


def select_device(wanted: str) -> torch.device:
    """Pick the device once; a missing GPU is one warning, not a crash."""
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        log.warning("No CUDA device found: serving on the CPU instead.")
    return torch.device("cpu")


def quantize_for(model: torch.nn.Module, device: torch.device):
    """int8 weights for every Linear layer, in the scheme that fits the device.

    CPU: torch.ao dynamic quantization (int8 weights, activations quantized on
    the fly). CUDA: torchao int8 weight-only. Both warn about deprecations
    that concern us, not our users: keep them out of the logs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if device.type == "cuda":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            quantize_(model, Int8WeightOnlyConfig())
            return model
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(
            f"Model file {path} not found: run `make train` first "
            "(or set ARTIFACTS_DIR to the folder that holds it)."
        )
    try:
        # weights_only: a model file is data, never code to unpickle.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"Model file {path} cannot be read ({error.__class__.__name__}: "
            f"{error}); retrain with `make train`."
        ) from error


class Predictor:
    """A loaded model with its class names, ready for batched inference."""

    def __init__(
        self,
        model: torch.nn.Module,
        features: Sequence[str],
        classes: Sequence[str],
        device: torch.device,
        version: str,
        quantized: bool = False,
    ):
        self.model = model.eval()
        self.features = tuple(features)
        self.classes = tuple(classes)
        self.device = device
        self.version = version
        self.quantized = quantized
        # bf16 autocast pays on GPUs; on the CPU it only adds casts.
        self.autocast = device.type == "cuda"

    @classmethod
    def load(cls, settings: Settings) -> "Predictor":
        torch.set_num_threads(settings.torch_threads)
        meta_path = settings.artifacts_dir / PREPROCESSING_FILE
        try:
            meta = json.loads(meta_path.read_text())
            features, classes = meta["features"], meta["classes"]
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(
                f"{meta_path} is missing or malformed ({error}); "
                "run `make train`."
            ) from error
        device = select_device(settings.device)
        model = Classifier(n_classes=len(classes), n_features=len(features))
        # On the CPU the int8 weights come from `make quantize`; on CUDA,
        # torchao quantizes the fp32 weights once they are on the device.
        quantize_on_device = settings.quantize_int8 and device.type == "cuda"
        path = settings.model_path
        if quantize_on_device:
            path = settings.fp32_model_path
        elif settings.quantize_int8:
            model = quantize_for(model, device)
        state = load_state(path)
        try:
            model.load_state_dict(state)
        except Exception as error:  # any mismatch of keys or shapes
            raise ModelLoadError(
                f"Model file {path} does not fit the model "
                f"({str(error).splitlines()[0]}); retrain with `make train`."
            ) from error
        model = model.to(device)
        if quantize_on_device:
            model = quantize_for(model, device)
        if settings.torch_compile and device.type == "cuda":
            model = torch.compile(model, dynamic=True)
        version = meta.get("version", "unknown")
        return cls(
            model, features, classes, device, version, settings.quantize_int8
        )

    @torch.inference_mode()
    def probabilities(self, rows: Sequence[Row]) -> list[list[float]]:
        batch = torch.tensor(rows, dtype=torch.float32, device=self.device)
        with torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=self.autocast
        ):
            logits = self.model(batch)
        return torch.softmax(logits.float(), dim=1).tolist()

    def predict_rows(self, rows: Sequence[Row]) -> list[dict]:
        """One forward pass for all rows; identical rows are computed once."""
        unique = list(dict.fromkeys(rows))
        if not unique:
            return []
        classes = [self.classes] * len(unique)
        answers = list(
            map(format_prediction, self.probabilities(unique), classes)
        )
        if len(unique) == len(rows):  # the usual case: nothing to spread
            return answers
        by_row = dict(zip(unique, answers))
        return [by_row[row] for row in rows]

    def info(self) -> dict:
        info = {
            "model_version": self.version,
            "device": str(self.device),
            "quantized": self.quantized,
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
            info["gpu_memory_allocated"] = torch.cuda.memory_allocated()
        return info
