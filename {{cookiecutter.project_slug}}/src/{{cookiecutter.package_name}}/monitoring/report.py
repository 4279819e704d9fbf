"""`make drift-report`: an HTML drift report from the prediction log.

Reads the prediction log (PREDICTION_LOG, or --log; its rotated `.1` file
too) and the training reference (artifacts/reference.csv), runs the tests
of `/monitoring/drift` on every logged item (or the last --last ones) and
writes one self-contained HTML file: per-feature histograms of reference
vs recent, the KS statistics, the class distribution and the mean
confidence. The figures are embedded PNGs: the file opens in a browser
without a server.
"""

import argparse
import base64
import html
import io
import time
from pathlib import Path

import numpy as np
import orjson

from .. import PROJECT_NAME
from ..settings import get_settings
from .drift import (
    class_drift,
    feature_drift,
    load_reference,
    per_test_threshold,
)
from .prediction_log import log_files

CSS = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.8em; }
img { max-width: 100%; }
"""


def read_log(path: Path | None, last: int | None) -> tuple[list, list]:
    """The logged records (oldest first) and the files they came from."""
    if path is None:
        raise SystemExit(
            "No prediction log given: pass --log PATH, or set PREDICTION_LOG "
            "(the service writes the log there when it is set)."
        )
    files = log_files(path)
    if not files:
        raise SystemExit(
            f"Prediction log {path} not found: serve with PREDICTION_LOG="
            f"{path} and send some requests first."
        )
    records = []
    for file in files:
        for line in file.read_bytes().splitlines():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash
    if not records:
        raise SystemExit(
            f"Prediction log {path} is empty: send some requests to the "
            "service first."
        )
    return (records[-last:] if last else records), files


def figure_png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def histograms(features, reference, recent) -> str:
    import matplotlib.pyplot as plt

    columns = min(len(features), 2)
    rows = -(-len(features) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5 * columns, 3 * rows), squeeze=False
    )
    for j, (name, axis) in enumerate(zip(features, axes.flat)):
        values = np.concatenate([reference[:, j], recent[:, j]])
        bins = np.histogram_bin_edges(values, bins=20)
        axis.hist(reference[:, j], bins, density=True, alpha=0.5)
        axis.hist(recent[:, j], bins, density=True, alpha=0.5)
        axis.set_title(name)
        axis.legend(["reference", "recent"])
    for axis in list(axes.flat)[len(features) :]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure_png(figure)


def class_bars(classes, reference_share, recent_share) -> str:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    x = np.arange(len(classes))
    axis.bar(x - 0.2, reference_share, 0.4, label="reference")
    axis.bar(x + 0.2, recent_share, 0.4, label="recent")
    axis.set(xticks=x, xticklabels=classes, ylabel="share of predictions")
    axis.legend()
    figure.tight_layout()
    return figure_png(figure)


def table(header, rows) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def build(records, files, reference_path: Path, p_value: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    try:
        features, reference, reference_labels, reference_conf = load_reference(
            reference_path
        )
    except (FileNotFoundError, ValueError) as error:  # names the file
        raise SystemExit(str(error)) from None
    try:
        recent = np.array(
            [[float(r["inputs"][f]) for f in features] for r in records]
        )
    except KeyError as error:
        raise SystemExit(
            f"The log has no feature {error}: it was written by a model "
            f"trained on other features than {reference_path}."
        ) from None
    labels = [r["prediction"]["label"] for r in records]
    confidence = float(
        np.mean([r["prediction"]["confidence"] for r in records])
    )
    classes = sorted(set(reference_labels) | set(labels))
    threshold = per_test_threshold(p_value, len(features))
    tests = {
        name: feature_drift(reference[:, j], recent[:, j], threshold)
        for j, name in enumerate(features)
    }
    predicted = class_drift(reference_labels, labels, classes, threshold)
    drifted = [name for name, t in tests.items() if t["drift"]]
    if predicted["drift"]:
        drifted.append("predicted classes")
    times = [r["ts"] for r in records if "ts" in r]
    span = (
        " to ".join(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
            for t in (min(times), max(times))
        )
        if times
        else "unknown"
    )
    feature_rows = [
        (
            name,
            f"{t['statistic']:.3f}",
            f"{t['p_value']:.3g}",
            "DRIFT" if t["drift"] else "ok",
            f"{reference[:, j].mean():.3f}",
            f"{recent[:, j].mean():.3f}",
        )
        for j, (name, t) in enumerate(tests.items())
    ]
    recent_share = np.array([predicted["recent"][c] for c in classes])
    recent_share = recent_share / recent_share.sum()
    reference_share = np.array(
        [reference_labels.count(c) for c in classes]
    ) / len(reference_labels)
    class_rows = [
        (c, f"{reference_share[i]:.3f}", f"{recent_share[i]:.3f}")
        for i, c in enumerate(classes)
    ]
    verdict = (
        f"Drift detected in: {', '.join(drifted)}." if drifted else "No drift."
    )
    feature_table = table(
        ("feature", "KS statistic", "p-value", "verdict")
        + ("reference mean", "recent mean"),
        feature_rows,
    )
    class_table = table(
        ("class", "reference share", "recent share"), class_rows
    )
    histogram_png = histograms(features, reference, recent)
    class_png = class_bars(classes, reference_share, recent_share)
    class_verdict = "DRIFT" if predicted["drift"] else "ok"
    sources = ", ".join(str(f) for f in files)
    title = html.escape(f"Drift report: {PROJECT_NAME}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style></head><body>
<h1>{title}</h1>
<p><strong>{html.escape(verdict)}</strong></p>
<p>{len(records)} logged predictions ({html.escape(span)}) from
{html.escape(sources)}, against {len(reference)} reference rows from
{html.escape(str(reference_path))}. Significance level {p_value},
Bonferroni-corrected over {len(features) + 1} tests: each test flags a
p-value below {threshold:.3g}.</p>
<h2>Features: two-sample Kolmogorov-Smirnov</h2>
{feature_table}
<img alt="histograms" src="data:image/png;base64,{histogram_png}">
<h2>Predicted classes: chi-square</h2>
<p>Statistic {predicted['statistic']:.3f}, p-value
{predicted['p_value']:.3g}: {class_verdict}. Mean confidence
{confidence:.3f} (reference {reference_conf.mean():.3f}).</p>
{class_table}
<img alt="class distribution" src="data:image/png;base64,{class_png}">
</body></html>
"""


def main(argv=None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=settings.prediction_log)
    parser.add_argument(
        "--artifacts", type=Path, default=settings.artifacts_dir
    )
    parser.add_argument("--out", type=Path, default=Path("reports/drift.html"))
    parser.add_argument("--last", type=int, help="only the last N items")
    parser.add_argument(
        "--p-value", type=float, default=settings.drift_p_value
    )
    args = parser.parse_args(argv)
    records, files = read_log(args.log, args.last)
    page = build(
        records, files, args.artifacts / "reference.csv", args.p_value
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"{len(records)} predictions; report in {args.out}")


if __name__ == "__main__":
    main()
