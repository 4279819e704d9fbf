"""The inference pipeline, written once: validate, clean, predict, format.

`validate` is the Pydantic schema (api/schemas.py); `clean` turns a valid
item into a row of floats in training order; `Predictor.forward` runs one
forward pass for many rows; `AnswerEncoder` formats the answers as JSON.
`Predictor.answers` chains them for the API, the micro-batcher and the
benchmark; `format_prediction` is the same answer as a dict, written
plainly, which the tests hold the fast encoder to.
"""

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path

import numpy as np
import orjson
import torch

from .api.schemas import tuple_reader
from .json_rows import join_rows, member_keys, number_members, number_texts
from .model import Classifier
from .settings import Settings, make_again

log = logging.getLogger(__name__)

Row = tuple[float, ...]

PREPROCESSING_FILE = "preprocessing.json"


class ModelLoadError(RuntimeError):
    """Missing or unusable model artifacts; the message names the path."""


def row_reader(features: Sequence[str]) -> Callable[[object], Row]:
    """`clean` for one order of features, at C speed (0.1 us an item):
    the schema's strict floats come out of validation as floats already."""
    return tuple_reader(attrgetter, features)


def clean(item: object, features: Sequence[str]) -> Row:
    """A validated item as a row of floats, in the training order."""
    return row_reader(features)(item)


def as_batch(rows: Sequence[Row]) -> np.ndarray:
    """Rows as the model's input: one float32 array (n, features)."""
    return np.array(rows, dtype=np.float32)


def format_prediction(probabilities: list[float], classes: Sequence[str]):
    best = probabilities.index(max(probabilities))
    return {
        "label": classes[best],
        "confidence": probabilities[best],
        "probabilities": dict(zip(classes, probabilities)),
    }


class AnswerEncoder:
    """`orjson.dumps(format_prediction(p, classes))` for every row of a
    probability array, byte for byte, at a third of the cost (json_rows)."""

    def __init__(self, classes: Sequence[str]):
        self.width = len(classes)
        self.label_then_confidence = [
            b'{"label":' + orjson.dumps(name) + b',"confidence":'
            for name in classes
        ]
        self.keys = member_keys(classes)

    def __call__(self, probabilities: np.ndarray) -> list[bytes]:
        n, width = len(probabilities), self.width
        best = probabilities.argmax(axis=1)  # the first of equals, as .index
        numbers = number_texts(probabilities)
        confidence = map(
            numbers.__getitem__, (np.arange(n) * width + best).tolist()
        )
        labels = map(self.label_then_confidence.__getitem__, best.tolist())
        columns = [labels, confidence, b',"probabilities":{']
        columns += number_members(self.keys, numbers)
        columns.append(b"}}")
        return join_rows(columns, n)


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


def served_model_path(settings: Settings, device: torch.device) -> Path:
    """The weights file the service loads: on the CPU, the int8 model comes
    from `make quantize`; on CUDA, torchao quantizes model.pt at load."""
    if settings.quantize_int8 and device.type == "cuda":
        return settings.fp32_model_path
    return settings.model_path


def read_preprocessing(artifacts: Path) -> dict:
    """preprocessing.json, with the features and classes it must name."""
    path = artifacts / PREPROCESSING_FILE
    try:
        meta = json.loads(path.read_text())
        meta["features"], meta["classes"]  # absent: KeyError, TypeError
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"{path} is missing or malformed ({error}); " + make_again(path)
        ) from error
    return meta


def load_state(path: Path, made_by: str = "make train") -> dict:
    if not path.is_file():
        raise ModelLoadError(
            f"Model file {path} not found: run `{made_by}` first "
            "(or set ARTIFACTS_DIR to the folder that holds it)."
        )
    try:
        with warnings.catch_warnings():
            # int8 weights are read through torch's own TypedStorage, which
            # warns about its deprecation: torch's concern, not our users'.
            warnings.filterwarnings(
                "ignore", "TypedStorage is deprecated", UserWarning
            )
            # weights_only: a model file is data, never code to unpickle.
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(
            f"Model file {path} cannot be read ({error.__class__.__name__}: "
            f"{error}); {make_again(path, made_by)}"
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
        autocast_bf16: bool = False,
    ):
        self.model = model.eval()
        self.features = tuple(features)
        self.classes = tuple(classes)
        self.device = device
        self.version = version
        self.quantized = quantized
        self.encode = AnswerEncoder(self.classes)
        # CUDA only: on the CPU, bf16 autocast only adds casts.
        self.autocast = autocast_bf16 and device.type == "cuda"

    @classmethod
    def load(cls, settings: Settings) -> "Predictor":
        torch.set_num_threads(settings.torch_threads)
        meta = read_preprocessing(settings.artifacts_dir)
        features, classes = meta["features"], meta["classes"]
        device = select_device(settings.device)
        model = Classifier(n_classes=len(classes), n_features=len(features))
        path = served_model_path(settings, device)
        int8_file = path != settings.fp32_model_path
        if int8_file:  # torch.ao's int8 layers, to take its int8 weights
            model = quantize_for(model, device)
        made_by = "make quantize" if int8_file else "make train"
        state = load_state(path, made_by)
        try:
            model.load_state_dict(state)
        except Exception as error:  # any mismatch of keys or shapes
            raise ModelLoadError(
                f"Model file {path} does not fit the model "
                f"({str(error).splitlines()[0]}); {make_again(path, made_by)}"
            ) from error
        model = model.to(device)
        if settings.quantize_int8 and not int8_file:  # torchao, on CUDA
            model = quantize_for(model, device)
        if settings.torch_compile and device.type == "cuda":
            model = torch.compile(model, dynamic=True)
        version = meta.get("version", "unknown")
        return cls(
            model,
            features,
            classes,
            device,
            version,
            settings.quantize_int8,
            settings.autocast_bf16,
        )

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, n x classes) of a float32 batch."""
        inputs = torch.from_numpy(batch).to(self.device)
        if self.autocast:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = self.model(inputs)
        else:  # even a disabled autocast costs 8 us a call
            logits = self.model(inputs)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def probabilities(self, rows: Sequence[Row]) -> list[list[float]]:
        """list -> tensor -> forward -> softmax -> list (`make bench`'s
        in-process limit)."""
        return self.forward(as_batch(rows)).tolist()

    def answers(
        self, rows: Sequence[Row], batch: np.ndarray | None = None
    ) -> list[bytes]:
        """The JSON answer of every row, in order: one forward pass, and
        identical rows computed once. `batch` is `as_batch(rows)` when the
        caller has it already."""
        if not rows:
            return []
        # Each distinct row, in first-seen order, with a position of it.
        position = dict(zip(rows, range(len(rows))))
        distinct = len(position) == len(rows)  # the usual case
        if batch is None:
            batch = as_batch(rows if distinct else list(position))
        elif not distinct:
            batch = batch[list(position.values())]
        answers = self.encode(self.forward(batch))
        if distinct:
            return answers
        answer_of = dict(zip(position, answers))
        return list(map(answer_of.__getitem__, rows))

    @property
    def answers_key(self) -> str:
        """What its answers depend on: the model's version and how it runs.
        Replicas that differ (an int8 canary, a GPU beside CPUs) must not
        share cached answers."""
        flags = ["int8"] * self.quantized + ["bf16"] * self.autocast
        return ":".join([self.version, self.device.type, *flags])

    def predict_rows(self, rows: Sequence[Row]) -> list[dict]:
        """The answers as dicts (one forward pass, duplicates once)."""
        return list(map(orjson.loads, self.answers(rows)))

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
