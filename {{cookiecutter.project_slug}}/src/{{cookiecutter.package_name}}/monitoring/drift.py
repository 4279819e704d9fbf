"""Data drift and prediction drift against the training reference.

The request path only appends to bounded deques (O(1) per item). The
statistics run off it, at most once per `drift_cache_s`: when
`/monitoring/drift` is read, and on a timer in each worker so that the
Prometheus gauges stay current when nobody reads it:
- per feature, a two-sample Kolmogorov-Smirnov test of the recent window
  against the reference sample;
- the predicted classes against the classes predicted on the training
  inputs (chi-square), and the mean confidence against the reference's.
A Bonferroni correction spans all these tests (features + classes), so a
window drawn from the reference distribution is flagged at most `p_value`
of the time. Each worker keeps its own window: the answer names the worker
(pid) and its window size. Below `drift_min_samples` the answer is
"insufficient_data".
"""

import asyncio
import csv
import logging
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import Gauge

from ..settings import make_again
from .prediction_log import PredictionLog

logger = logging.getLogger(__name__)

# Labelled gauges: a worker adds samples only once it has computed drift.
DRIFT_P_VALUE = Gauge(
    "drift_feature_p_value",
    "KS-test p-value of the recent window against the reference "
    "(lowest over the workers).",
    ["feature"],
    multiprocess_mode="livemin",
)
DRIFT_DETECTED = Gauge(
    "drift_detected",
    "1 when any worker's window drifted: kind=data (a feature) or "
    "kind=prediction (the predicted classes).",
    ["kind"],
    multiprocess_mode="livemax",
)
MEAN_CONFIDENCE = Gauge(
    "prediction_mean_confidence",
    "Mean confidence of the predictions: window=recent (lowest over the "
    "workers) or window=reference (the training inputs).",
    ["window"],
    multiprocess_mode="livemin",
)


def load_reference(path: Path):
    """Reference inputs, predicted labels and confidences from training."""
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = list(reader)
    except (OSError, StopIteration) as error:
        raise FileNotFoundError(
            f"Drift reference {path} is missing or empty ({error}); "
            + make_again(path)
        ) from error
    try:
        features = header[:-2]
        inputs = np.array([[float(v) for v in r[:-2]] for r in rows])
        labels = [r[-2] for r in rows]
        confidences = np.array([float(r[-1]) for r in rows])
        if inputs.shape != (len(rows), len(features)):  # no rows: (0,)
            raise ValueError(f"not one row of {len(features)} features each")
    except (ValueError, IndexError) as error:  # empty, ragged, not numbers
        raise ValueError(
            f"Drift reference {path} is malformed ({error}); "
            + make_again(path)
        ) from None
    return features, inputs, labels, confidences


def ks_statistic(reference, recent) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest distance
    between the two empirical distribution functions."""
    reference, recent = np.sort(reference), np.sort(recent)
    both = np.concatenate([reference, recent])
    cdf_reference = np.searchsorted(reference, both, side="right")
    cdf_recent = np.searchsorted(recent, both, side="right")
    distance = cdf_reference / len(reference) - cdf_recent / len(recent)
    return float(np.abs(distance).max())


KOLMOGOROV_TERMS = np.arange(1, 101)


def ks_p_value(statistic: float, n1: int, n2: int) -> float:
    """P(D >= statistic) for two samples of one distribution: Kolmogorov's
    limiting distribution with Stephens' correction for the sample sizes
    (Numerical Recipes' probks). Within 0.025 of scipy's asymptotic
    ks_2samp p-value for samples of 10 and more, far closer in the tails
    where drift is decided (tested against scipy)."""
    root = math.sqrt(n1 * n2 / (n1 + n2))
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 0.2:  # P is 1 to within 1e-10 (and the series is slow there)
        return 1.0
    k = KOLMOGOROV_TERMS
    terms = (-1.0) ** (k - 1) * np.exp(-2.0 * (k * lam) ** 2)
    return float(np.clip(2.0 * terms.sum(), 0.0, 1.0))


def chi_square_p_value(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with `dof` degrees of freedom (a
    positive integer): the regularized upper incomplete gamma function
    Q(dof / 2, statistic / 2) in closed form, summed in logs so that no
    term overflows."""
    half = statistic / 2
    if half <= 0:
        return 1.0
    log_half = math.log(half)
    if dof % 2 == 0:
        total = sum(
            math.exp(i * log_half - half - math.lgamma(i + 1))
            for i in range(dof // 2)
        )
    else:
        total = math.erfc(math.sqrt(half)) + sum(
            math.exp((i - 0.5) * log_half - half - math.lgamma(i + 0.5))
            for i in range(1, (dof + 1) // 2)
        )
    return min(1.0, total)


def feature_drift(reference, recent, threshold: float) -> dict:
    """KS test of one feature (two columns); drift below `threshold`.

    In numpy, not scipy: importing scipy.stats took 0.6-1.1 s of CPU, and
    while a new worker did it (in a thread, to keep it off the way to
    /ready) it served a fifth of its usual rate with a p99 of 0.1-0.4 s.
    """
    statistic = ks_statistic(reference, recent)
    p_value = ks_p_value(statistic, len(reference), len(recent))
    return {
        "statistic": statistic,
        "p_value": p_value,
        "drift": bool(p_value < threshold),
    }


def class_drift(reference_labels, recent_labels, classes, threshold: float):
    """Chi-square of the recent predicted classes against the reference's.

    A two-sample test (a 2 x classes contingency table, as scipy's
    chi2_contingency without Yates' correction): the reference is a
    sample too, and taking its shares as exact would alarm more often than
    `threshold` as the window grows.
    """
    counts = np.array(
        [
            [reference_labels.count(c) for c in classes],
            [recent_labels.count(c) for c in classes],
        ]
    )
    seen = counts.sum(axis=0) > 0
    if seen.sum() > 1:
        observed = counts[:, seen]
        expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
        expected = expected / observed.sum()
        statistic = float(((observed - expected) ** 2 / expected).sum())
        p_value = chi_square_p_value(statistic, observed.shape[1] - 1)
    else:  # one class in both samples: nothing to compare
        statistic, p_value = 0.0, 1.0
    reference_share = counts[0] / max(counts[0].sum(), 1)
    return {
        "statistic": statistic,
        "p_value": p_value,
        "drift": bool(p_value < threshold),
        "recent": dict(zip(classes, counts[1].tolist())),
        "reference_share": dict(
            zip(classes, reference_share.round(4).tolist())
        ),
    }


def per_test_threshold(p_value: float, n_features: int) -> float:
    """Bonferroni over every test: one per feature, one for the classes."""
    return p_value / (n_features + 1)


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
        self.test_threshold = per_test_threshold(p_value, len(self.features))
        self.cache_s = cache_s
        self.log = log
        self.inputs: deque[tuple] = deque(maxlen=window)
        # Encoded predictions, decoded off the request path in compute().
        self.outputs: deque[bytes] = deque(maxlen=window)
        self._report: dict | None = None
        self._report_at = 0.0
        self._timer: asyncio.Handle | None = None

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

    def refresh_every(self, seconds: float) -> None:
        """Recompute on the running event loop every `seconds`, so the gauges
        a scrape reads are fresh: one test per loop turn (each under 1 ms),
        so requests are served between them."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a script): /monitoring/drift still computes
        if seconds <= 0:
            return

        def step(steps):
            try:
                next(steps)
            except StopIteration as done:
                self._report, self._report_at = done.value, time.monotonic()
            except Exception:  # a bad window must not stop the timer
                logger.exception("Drift computation failed")
            else:
                self._timer = loop.call_soon(step, steps)
                return
            self._timer = loop.call_later(seconds, tick)

        def tick():
            step(self.compute_steps())

        self._timer = loop.call_later(seconds, tick)

    def compute(self) -> dict:
        steps = self.compute_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def compute_steps(self):
        """The report, computed one test at a time: a generator that yields
        between tests and returns the report."""
        inputs, outputs = list(self.inputs), list(self.outputs)
        n = len(inputs)
        answer = {
            "scope": "worker",
            "worker_pid": os.getpid(),
            "window_size": n,
            "window_capacity": self.inputs.maxlen,
            "min_samples": self.min_samples,
            "p_value_threshold": self.p_value,
            "per_test_threshold": self.test_threshold,
            "reference_size": len(self.reference),
            "computed_at": time.time(),
        }
        if n < self.min_samples:
            return {**answer, "status": "insufficient_data"}
        recent = np.array(inputs, dtype=float)
        features = {}
        for j, name in enumerate(self.features):
            features[name] = feature_drift(
                self.reference[:, j], recent[:, j], self.test_threshold
            )
            yield
        predictions = [orjson.loads(encoded) for encoded in outputs]
        yield
        classes = class_drift(
            self.reference_labels,
            [p["label"] for p in predictions],
            self.classes,
            self.test_threshold,
        )
        mean_confidence = float(
            np.mean([p["confidence"] for p in predictions])
        )
        reference_confidence = float(self.reference_confidences.mean())
        data_drift = any(f["drift"] for f in features.values())
        for name, figures in features.items():
            DRIFT_P_VALUE.labels(name).set(figures["p_value"])
        DRIFT_DETECTED.labels("data").set(int(data_drift))
        DRIFT_DETECTED.labels("prediction").set(int(classes["drift"]))
        MEAN_CONFIDENCE.labels("recent").set(mean_confidence)
        MEAN_CONFIDENCE.labels("reference").set(reference_confidence)
        return {
            **answer,
            "status": "drift" if data_drift or classes["drift"] else "ok",
            "data_drift": data_drift,
            "features": features,
            "prediction_drift": classes,
            "mean_confidence": mean_confidence,
            "reference_mean_confidence": reference_confidence,
        }
