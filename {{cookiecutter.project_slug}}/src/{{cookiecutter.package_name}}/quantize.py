"""`make quantize`: write the int8 model and compare it with fp32.

Records in metrics.json, under "int8": held-out accuracy of both models,
how often they agree, artifact sizes, and batch-1 / batch-256 throughput.
On a model this small int8 is usually *slower* (the quantize/dequantize
steps cost more than the tiny matrix products save); it pays on wide
layers (hundreds of units and more). Measure before you switch it on.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .model import Classifier
from .predict import (
    ModelLoadError,
    load_state,
    quantize_for,
    read_preprocessing,
)
from .settings import get_settings
from .timing import items_per_second
from .train import SEED, VALIDATION_SHARE, load_dataset, stratified_split


def load_fp32(artifacts: Path) -> Classifier:
    meta = read_preprocessing(artifacts)
    model = Classifier(len(meta["classes"]), len(meta["features"]))
    model.load_state_dict(load_state(artifacts / "model.pt"))
    return model.eval()


@torch.inference_mode()
def throughput(model: torch.nn.Module, rows: np.ndarray, batch: int) -> float:
    inputs = torch.from_numpy(np.resize(rows, (batch, rows.shape[1])))
    return items_per_second(lambda: model(inputs), batch, seconds=0.5)


def compare(artifacts: Path, data_path: Path) -> dict:
    torch.set_num_threads(1)
    fp32 = load_fp32(artifacts)
    int8 = quantize_for(load_fp32(artifacts), torch.device("cpu"))
    torch.save(int8.state_dict(), artifacts / "model-int8.pt")

    _, _, x, y = load_dataset(data_path)
    _, val_rows = stratified_split(y, VALIDATION_SHARE, SEED)
    inputs = torch.from_numpy(x[val_rows])
    with torch.inference_mode():
        fp32_pred = fp32(inputs).argmax(1).numpy()
        int8_pred = int8(inputs).argmax(1).numpy()
    figures = {}
    for name, model, predicted in (
        ("fp32", fp32, fp32_pred),
        ("int8", int8, int8_pred),
    ):
        file = artifacts / ("model.pt" if name == "fp32" else "model-int8.pt")
        figures[name] = {
            "val_accuracy": float((predicted == y[val_rows]).mean()),
            "file_bytes": file.stat().st_size,
            "batch1_per_s": round(throughput(model, x, 1)),
            "batch256_items_per_s": round(throughput(model, x, 256)),
        }
    figures["agreement"] = float((fp32_pred == int8_pred).mean())
    return figures


def quantize_and_record(artifacts: Path, data_path: Path) -> dict:
    """Write model-int8.pt and add the comparison to metrics.json."""
    figures = compare(artifacts, data_path)
    metrics_path = artifacts / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["int8"] = figures
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return figures


def main(argv=None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--artifacts", type=Path, default=settings.artifacts_dir
    )
    parser.add_argument("--data", type=Path, default=settings.data_path)
    args = parser.parse_args(argv)
    try:
        figures = quantize_and_record(args.artifacts, args.data)
    except ModelLoadError as error:  # one line, as the service says it
        raise SystemExit(str(error)) from None
    for name in ("fp32", "int8"):
        f = figures[name]
        print(
            f"{name}: accuracy {f['val_accuracy']:.3f}, {f['file_bytes']} "
            f"bytes, {f['batch1_per_s']}/s at batch 1, "
            f"{f['batch256_items_per_s']} items/s at batch 256"
        )
    print(
        f"fp32 and int8 agree on {figures['agreement']:.1%} of held-out rows"
    )


if __name__ == "__main__":
    main()
