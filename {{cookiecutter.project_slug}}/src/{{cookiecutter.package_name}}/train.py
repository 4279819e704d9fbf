"""`make train`: fit the classifier on the shipped CSV and write the artifacts.

Artifacts (one folder, see Settings.artifacts_dir):
  model.pt            weights and scaling statistics (a state_dict)
  preprocessing.json  feature order, class names, scaling statistics
  reference.csv       training inputs with predicted class and confidence,
                      the reference for drift monitoring
  metrics.json        held-out accuracy and training details
  training.png        loss curve and confusion matrix
"""

import argparse
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import trange

from .model import Classifier
from .predict import PREPROCESSING_FILE
from .settings import get_settings

SEED = 42
EPOCHS = 300
LEARNING_RATE = 0.01
VALIDATION_SHARE = 0.2


def load_dataset(path: Path):
    """Numeric feature columns, label column last."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for row in reader if row]
    features = header[:-1]
    x = np.array([[float(v) for v in row[:-1]] for row in rows], np.float32)
    labels = [row[-1] for row in rows]
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels], np.int64)
    return features, classes, x, y


def stratified_split(y: np.ndarray, share: float, seed: int):
    """Indices of train and validation rows, the same share of every class."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(rows) * share))
        val.extend(rows[:n_val])
        train.extend(rows[n_val:])
    return np.array(sorted(train)), np.array(sorted(val))


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, epochs: int):
    torch.manual_seed(SEED)
    model = Classifier(n_classes=n_classes, n_features=x.shape[1])
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    model.mean.copy_(inputs.mean(0))
    model.std.copy_(inputs.std(0).clamp_min(1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    progress = trange(epochs, desc="training", unit="epoch")
    for _ in progress:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    return model.eval(), losses


@torch.inference_mode()
def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def confusion(y: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (y, predicted), 1)
    return matrix


def save_plot(path: Path, losses, matrix: np.ndarray, classes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(losses)
    left.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    right.imshow(matrix, cmap="Blues")
    right.set(
        title="validation confusion matrix",
        xlabel="predicted",
        ylabel="true",
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
    )
    for (i, j), count in np.ndenumerate(matrix):
        right.text(j, i, str(count), ha="center", va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def as_written(value: np.float32) -> str:
    """The shortest decimal that reads back as this float32: the data's own
    text ("0.2"), as clients send it. Widened to float64 it would be
    0.20000000298, just off every live 0.2: at each 0.1 cm tie of Iris the
    KS test would see a gap, and healthy traffic would look like drift."""
    return np.format_float_positional(value, trim="-")


def write_reference(path: Path, features, classes, x, proba) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*features, "predicted", "confidence"])
        for row, p in zip(x, proba):
            best = int(p.argmax())
            writer.writerow(
                [
                    *map(as_written, row),
                    classes[best],
                    round(float(p[best]), 6),
                ]
            )


def train(data_path: Path, out: Path, epochs: int = EPOCHS) -> dict:
    features, classes, x, y = load_dataset(data_path)
    train_rows, val_rows = stratified_split(y, VALIDATION_SHARE, SEED)
    model, losses = fit(x[train_rows], y[train_rows], len(classes), epochs)

    val_pred = predict_proba(model, x[val_rows]).argmax(1)
    train_proba = predict_proba(model, x[train_rows])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    version = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    preprocessing = {
        "features": features,
        "classes": classes,
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "version": version[:12],
    }
    (out / PREPROCESSING_FILE).write_text(json.dumps(preprocessing, indent=2))
    write_reference(
        out / "reference.csv", features, classes, x[train_rows], train_proba
    )
    matrix = confusion(y[val_rows], val_pred, len(classes))
    metrics = {
        "val_accuracy": float((val_pred == y[val_rows]).mean()),
        "train_accuracy": float(
            (train_proba.argmax(1) == y[train_rows]).mean()
        ),
        "n_train": int(len(train_rows)),
        "n_val": int(len(val_rows)),
        "epochs": epochs,
        "final_loss": losses[-1],
        "confusion_matrix": matrix.tolist(),
        "model_version": version[:12],
        "data": str(data_path),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_plot(out / "training.png", losses, matrix, classes)
    return metrics


def main(argv=None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=settings.data_path)
    parser.add_argument("--out", type=Path, default=settings.artifacts_dir)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    metrics = train(args.data, args.out, args.epochs)
    print(
        f"validation accuracy {metrics['val_accuracy']:.3f} "
        f"on {metrics['n_val']} held-out rows; artifacts in {args.out}/"
    )


if __name__ == "__main__":
    main()
