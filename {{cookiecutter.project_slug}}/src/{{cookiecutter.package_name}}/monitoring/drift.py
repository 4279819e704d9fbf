"""Data drift and prediction drift against the training reference.

The request path only appends to bounded deques (O(1) per item). The
statistics run when `/monitoring/drift` is read, at most once per
`drift_cache_s`:
- per feature, a two-sample Kolmogorov-Smirnov test of the recent window
  against the reference sample, Bonferroni-corrected over the features;
- the predicted classes against the training distribution (chi-square) and
  the mean confidence against the reference's.
Each worker keeps its own window: the answer names the worker (pid) and its
window size. Below `drift_min_samples` the answer is "insufficient_data".
"""

import csv
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import Gauge

from .prediction_log import PredictionLog

DRIFT_P_VALUE = Gauge(
    "drift_feature_p_value",
    "KS-test p-value of the recent window against the reference.",
    ["feature"],
    multiprocess_mode="livemin",
)
DRIFT_DETECTED = Gauge(
    "drift_detected",
    "1 when any feature or the predicted classes drifted.",
    ["kind"],
    multiprocess_mode="livemax",
)
MEAN_CONFIDENCE = Gauge(
    "prediction_mean_confidence",
    "Mean confidence of the recent window's predictions.",
    multiprocess_mode="livemin",
)


def load_reference(path: Path):
    """Reference inputs, predicted labels and confidences from training."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    features = header[:-2]
    inputs = np.array([[float(v) for v in r[:-2]] for r in rows])
    labels = [r[-2] for r in rows]
    confidences = np.array([float(r[-1]) for r in rows])
    return features, inputs, labels, confidences


def feature_drift(reference, recent, names, alpha: float) -> dict:
    from scipy.stats import ks_2samp

    threshold = alpha / len(names)  # Bonferroni over the features
    result = {}
    for j, name in enumerate(names):
        test = ks_2samp(reference[:, j], recent[:, j])
        result[name] = {
            "statistic": float(test.statistic),
            "p_value": float(test.pvalue),
            "drift": bool(test.pvalue < threshold),
        }
    return result


def class_drift(reference_labels, recent_labels, classes, alpha: float):
    from scipy.stats import chisquare

    expected_share = np.array(
        [reference_labels.count(c) for c in classes], dtype=float
    )
    # A class never predicted in training still gets a sliver of mass.
    expected_share = (expected_share + 0.5) / (expected_share + 0.5).sum()
    observed = np.array([recent_labels.count(c) for c in classes], float)
    test = chisquare(observed, expected_share * observed.sum())
    return {
        "statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "drift": bool(test.pvalue < alpha),
        "recent": dict(zip(classes, observed.astype(int).tolist())),
        "reference_share": dict(zip(classes, expected_share.round(4))),
    }


class DriftMonitor:
    def __init__(
        self,
        reference_path: Path,
        classes: Sequence[str],
        window: int,
        min_samples: int,
        p_value: float,
        cache_s: float = 10.0,
        log: PredictionLog | None = None,
    ):
        (
            self.features,
            self.reference,
            self.reference_labels,
            self.reference_confidences,
        ) = load_reference(reference_path)
        self.classes = list(classes)
        self.min_samples = min_samples
        self.p_value = p_value
        self.cache_s = cache_s
        self.log = log
        self.inputs: deque[tuple] = deque(maxlen=window)
        # Encoded predictions, decoded off the request path in compute().
        self.outputs: deque[bytes] = deque(maxlen=window)
        self._report: dict | None = None
        self._report_at = 0.0

    def observe(self, rows: Sequence[tuple], encoded: Sequence[bytes]):
        """Request path: O(1) per item (cached answers included)."""
        self.inputs.extend(rows)
        self.outputs.extend(encoded)
        if self.log is not None:
            self.log.write(rows, encoded)

    def report(self) -> dict:
        now = time.monotonic()
        if self._report is None or now - self._report_at >= self.cache_s:
            self._report, self._report_at = self.compute(), now
        return self._report

    def compute(self) -> dict:
        n = len(self.inputs)
        answer = {
            "worker_pid": os.getpid(),
            "window_size": n,
            "window_capacity": self.inputs.maxlen,
            "min_samples": self.min_samples,
            "p_value_threshold": self.p_value,
            "reference_size": len(self.reference),
        }
        if n < self.min_samples:
            return {**answer, "status": "insufficient_data"}
        features = feature_drift(
            self.reference, np.array(self.inputs), self.features, self.p_value
        )
        predictions = [orjson.loads(encoded) for encoded in self.outputs]
        classes = class_drift(
            self.reference_labels,
            [p["label"] for p in predictions],
            self.classes,
            self.p_value,
        )
        mean_confidence = float(
            np.mean([p["confidence"] for p in predictions])
        )
        data_drift = any(f["drift"] for f in features.values())
        for name, figures in features.items():
            DRIFT_P_VALUE.labels(name).set(figures["p_value"])
        DRIFT_DETECTED.labels("data").set(int(data_drift))
        DRIFT_DETECTED.labels("prediction").set(int(classes["drift"]))
        MEAN_CONFIDENCE.set(mean_confidence)
        return {
            **answer,
            "status": "drift" if data_drift or classes["drift"] else "ok",
            "data_drift": data_drift,
            "features": features,
            "prediction_drift": classes,
            "mean_confidence": mean_confidence,
            "reference_mean_confidence": float(
                self.reference_confidences.mean()
            ),
        }
