"""Evaluation: test-set metrics, per-class scores, plots and a Markdown report.

Error analysis for images: the confusion matrix, the most confident mistakes overall
(``most_confused.png``), and per class its error rate, what it is mistaken for most, and its
own most confident mistakes (``class_errors.png``, ``errors_by_class`` in ``metrics.json``):
one class's failures are easy to miss among the overall ones when classes are unbalanced.

Training calls ``write_reports`` with the PyTorch model's test predictions; ``evaluate(cfg)``
re-scores a *published* model (its ONNX graph, through ONNX Runtime, as the service runs it) on
the test split of the current data and rewrites the same reports. Plots use matplotlib's object
API (``Figure``, no pyplot), so nothing global is touched and no display is needed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import artifacts, model_store
from .config import Config
from .data.dataset import ManifestRow, class_indices, iter_pixel_batches, load_pixels
from .data.validate import validate_dataset
from .errors import DataError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CONFUSION_FILE = "confusion_matrix.png"
MOST_CONFUSED_FILE = "most_confused.png"
CLASS_ERRORS_FILE = "class_errors.png"
CURVES_FILE = "learning_curves.png"
HISTORY_FILE = "history.json"  # per-epoch training history, stored next to the model
SCORING_BATCH = 256
GRID_COLUMNS = 8
# Per-class error examples: the most confident mistakes of each true class (one grid row per
# class, the classes with the most errors first).
CLASS_EXAMPLES = 6
CLASS_ROWS = 20


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model version on the test split, and the report files written."""

    version: str
    metrics: dict[str, float]
    files: list[Path]


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall metrics (accuracy, macro precision/recall/F1, log loss) and per-class scores
    (a class never predicted has precision 0: ``zero_division=0``)."""
    # Imported here, not at the top: scikit-learn's metrics take about a second to import, and
    # training and the CLI import this module long before (or without) scoring anything.
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    labels = np.arange(len(classes))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=labels, zero_division=0
    )
    summary = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "log_loss": float(log_loss(y_true, probs, labels=labels)),
        "images": float(len(y_true)),
    }
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": float(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return summary, per_class


def write_reports(
    reports_dir: Path,
    *,
    version: str,
    source: str,
    classes: Sequence[str],
    root: Path,
    rows: Sequence[ManifestRow],
    probs: np.ndarray,
    image_size: int,
    channels: int,
    most_confused: int,
    history: Sequence[dict[str, float]] = (),
    notes: Sequence[str] = (),
) -> tuple[dict[str, float], list[Path]]:
    """Write the plots, ``metrics.json`` and ``report.md`` for ``probs``, the predictions for
    ``rows``; return the metrics and the files."""
    from sklearn.metrics import confusion_matrix  # slow to import: see classification_metrics

    reports_dir.mkdir(parents=True, exist_ok=True)
    y_true = class_indices(rows, classes)
    summary, per_class = classification_metrics(y_true, probs, classes)
    matrix = confusion_matrix(y_true, probs.argmax(axis=1), labels=np.arange(len(classes)))
    errors = errors_by_class(rows, y_true, probs, classes, CLASS_EXAMPLES)
    files = [
        _save(_confusion_figure(matrix, classes), reports_dir / CONFUSION_FILE),
        _save(
            _most_confused_figure(
                root, rows, y_true, probs, classes, image_size, channels, most_confused
            ),
            reports_dir / MOST_CONFUSED_FILE,
        ),
        _save(
            _class_errors_figure(root, rows, y_true, probs, classes, image_size, channels),
            reports_dir / CLASS_ERRORS_FILE,
        ),
    ]
    if history:
        files.append(_save(_curves_figure(history), reports_dir / CURVES_FILE))
    training = _training_summary(history)
    payload: dict[str, Any] = {
        "version": version,
        "source": source,
        "classes": list(classes),
        "test": summary,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "errors_by_class": errors,
        "training": training,
    }
    metrics_path = reports_dir / METRICS_FILE
    model_store.write_json(metrics_path, payload)
    report_path = reports_dir / REPORT_FILE
    report_path.write_text(
        _markdown(version, source, classes, summary, per_class, matrix, training, files, notes)
        + _errors_markdown(errors),
        encoding="utf-8",
    )
    return summary, [*files, metrics_path, report_path]


def errors_by_class(
    rows: Sequence[ManifestRow],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    examples: int,
) -> dict[str, dict[str, Any]]:
    """Per true class: its test images, how many the model got wrong, the class it is most
    often mistaken for, and its ``examples`` most confident mistakes (image path, predicted
    class, probability)."""
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(predicted)), predicted]
    result: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(classes):
        mine = y_true == index
        wrong = np.flatnonzero(mine & (predicted != y_true))
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
        mistaken = np.bincount(predicted[wrong], minlength=len(classes))
        result[name] = {
            "images": int(mine.sum()),
            "errors": len(wrong),
            "error_rate": float(len(wrong) / mine.sum()) if mine.any() else None,
            "mistaken_for": classes[int(mistaken.argmax())] if len(wrong) else None,
            "mistaken_for_count": int(mistaken.max()) if len(wrong) else 0,
            "examples": [
                {
                    "path": rows[i].path,
                    "predicted": classes[predicted[i]],
                    "probability": float(confidence[i]),
                }
                for i in wrong[:examples]
            ],
        }
    return result


def evaluate(cfg: Config, version: str | None = None) -> EvaluationResult:
    """Re-score a published model (default: ``LATEST``) with ONNX Runtime on the current test
    split and rewrite the reports."""
    from .export import onnx_probabilities, onnx_session

    model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, version)
    metadata = artifacts.load_metadata(model_dir)
    report = validate_dataset(cfg.data, create_missing_manifest=False)
    if report.classes != metadata.classes:
        raise DataError(
            f"the classes in {cfg.data.root} ({', '.join(report.classes)}) differ from model "
            f"{metadata.version}'s ({', '.join(metadata.classes)}): evaluate a model trained "
            "on this data"
        )
    notes = []
    if report.fingerprint != metadata.data_fingerprint:
        notes.append("The data changed since this model was trained (different fingerprint).")
    rows = report.split("test")
    session = onnx_session(str(model_dir / artifacts.ONNX_FILE))
    batches = iter_pixel_batches(
        cfg.data.root, rows, metadata.image_size, metadata.channels, SCORING_BATCH
    )
    probs = np.concatenate([onnx_probabilities(session, pixels) for pixels in batches])
    history_path = model_dir / HISTORY_FILE
    history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else []
    metrics, files = write_reports(
        cfg.paths.reports_dir,
        version=metadata.version,
        source="onnx",
        classes=metadata.classes,
        root=cfg.data.root,
        rows=rows,
        probs=probs,
        image_size=metadata.image_size,
        channels=metadata.channels,
        most_confused=cfg.evaluation.most_confused,
        history=history,
        notes=notes,
    )
    logger.info("model %s: test accuracy %.4f", metadata.version, metrics["accuracy"])
    return EvaluationResult(version=metadata.version, metrics=metrics, files=files)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100)
    return path


def _confusion_figure(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    size = max(4.0, 0.45 * len(classes) + 2)
    figure = Figure(figsize=(size, size))
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=90 if len(classes) > 12 else 0)
    ax.set_yticks(ticks, labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (test)")
    return figure


def _most_confused_figure(
    root: Path,
    rows: Sequence[ManifestRow],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    image_size: int,
    channels: int,
    limit: int,
) -> Figure:
    """The misclassified test images the model was most sure about, with true -> predicted.

    One mosaic image on one axes (not one axes per image): matplotlib lays out axes slowly.
    """
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:limit]
    columns = min(GRID_COLUMNS, max(1, len(worst)))
    grid_rows = max(1, math.ceil(len(worst) / columns))
    figure = Figure(figsize=(1.4 * columns + 0.4, 1.9 * grid_rows + 0.5))
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.96 - 0.4 / figure.get_figheight()))
    ax.set_axis_off()
    figure.suptitle("Most confident mistakes (test): true -> predicted (probability)", fontsize=9)
    if len(worst) == 0:
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        return figure
    gap = max(1, image_size // 6)  # between tiles
    label_room = max(2, round(image_size * 0.4))  # above each tile, for its caption
    width, height = image_size + gap, image_size + label_room
    mosaic = np.ones((grid_rows * height, columns * width + gap, 3), dtype=np.float32)
    pixels = load_pixels(root, [rows[i] for i in worst], image_size, channels)
    for slot, (i, image) in enumerate(zip(worst, pixels, strict=True)):
        top = (slot // columns) * height + label_room
        left = gap + (slot % columns) * width
        caption = f"{classes[y_true[i]]} -> {classes[predicted[i]]} ({probs[i, predicted[i]]:.2f})"
        _place_tile(ax, mosaic, image, (top, left), caption)
    ax.imshow(mosaic, interpolation="nearest")
    return figure


def _class_errors_figure(
    root: Path,
    rows: Sequence[ManifestRow],
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    image_size: int,
    channels: int,
) -> Figure:
    """One grid row per class with mistakes (most errors first, at most ``CLASS_ROWS``): its
    most confident mistakes, captioned with the predicted class and its probability."""
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(predicted)), predicted]
    wrong_of = []
    for index in range(len(classes)):
        wrong = np.flatnonzero((y_true == index) & (predicted != index))
        wrong_of.append(wrong[np.argsort(-confidence[wrong], kind="stable")])
    shown = sorted(
        (i for i in range(len(classes)) if len(wrong_of[i])), key=lambda i: -len(wrong_of[i])
    )[:CLASS_ROWS]
    grid_rows = max(1, len(shown))
    figure = Figure(figsize=(1.4 * CLASS_EXAMPLES + 1.6, 1.7 * grid_rows + 0.5))
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.96 - 0.4 / figure.get_figheight()))
    ax.set_axis_off()
    figure.suptitle("Mistakes by true class (most confident first): -> predicted (p)", fontsize=9)
    if not shown:
        ax.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        return figure
    gap = max(1, image_size // 6)
    label_room = max(2, round(image_size * 0.4))
    name_room = image_size * 1.5  # left of each grid row, for the class name
    width, height = image_size + gap, image_size + label_room
    mosaic = np.ones(
        (grid_rows * height, int(name_room) + CLASS_EXAMPLES * width + gap, 3), dtype=np.float32
    )
    for grid_row, index in enumerate(shown):
        picks = wrong_of[index][:CLASS_EXAMPLES]
        top = grid_row * height + label_room
        ax.text(
            name_room - gap,
            top + image_size / 2,
            f"{classes[index]}\n{len(wrong_of[index])} of {int((y_true == index).sum())}",
            ha="right",
            va="center",
            fontsize=7,
        )
        pixels = load_pixels(root, [rows[i] for i in picks], image_size, channels)
        for slot, (i, image) in enumerate(zip(picks, pixels, strict=True)):
            left = int(name_room) + gap + slot * width
            caption = f"-> {classes[predicted[i]]} ({confidence[i]:.2f})"
            _place_tile(ax, mosaic, image, (top, left), caption)
    ax.imshow(mosaic, interpolation="nearest")
    return figure


def _place_tile(
    ax: Axes, mosaic: np.ndarray, image: np.ndarray, corner: tuple[int, int], caption: str
) -> None:
    """Copy one (channels, size, size) image into the RGB ``mosaic`` at ``corner`` (top, left)
    and write ``caption`` just above it (grey images are repeated into three channels)."""
    top, left = corner
    size = image.shape[-1]
    tile = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    mosaic[top : top + size, left : left + size] = tile.transpose(1, 2, 0)
    ax.text(left + size / 2, top - 0.5, caption, ha="center", va="bottom", fontsize=7)


def _curves_figure(history: Sequence[dict[str, float]]) -> Figure:
    epochs = [int(h["epoch"]) for h in history]
    figure = Figure(figsize=(10, 3.6))
    loss_ax, acc_ax, lr_ax = (figure.add_subplot(1, 3, i) for i in (1, 2, 3))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val")
    _label(loss_ax, "Loss", "cross-entropy")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", color="tab:green")
    _label(acc_ax, "Validation accuracy", "accuracy")
    lr_ax.plot(epochs, [h["lr"] for h in history], marker="o", color="tab:purple")
    _label(lr_ax, "Learning rate", "lr")
    figure.tight_layout()
    return figure


def _label(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _training_summary(history: Sequence[dict[str, float]]) -> dict[str, float]:
    if not history:
        return {}
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    return {
        "epochs_trained": float(len(history)),
        "best_epoch": float(best["epoch"]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]),
    }


def _errors_markdown(errors: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, e in sorted(errors.items(), key=lambda item: -item[1]["errors"]):
        rate = "" if e["error_rate"] is None else f"{e['error_rate']:.1%}"
        mistaken = f"{e['mistaken_for']} ({e['mistaken_for_count']})" if e["mistaken_for"] else ""
        examples = ", ".join(
            f"`{x['path']}` -> {x['predicted']} ({x['probability']:.2f})" for x in e["examples"][:3]
        )
        lines.append(
            f"| {name} | {e['images']} | {e['errors']} | {rate} | {mistaken} | {examples} |"
        )
    table = "\n".join(lines)
    return f"""
## Errors by class

Each true class: its test images, the model's mistakes, the class it is most often mistaken
for, and its most confident mistakes (up to {CLASS_EXAMPLES} per class in `{CLASS_ERRORS_FILE}`
and `metrics.json`).

| class | images | errors | error rate | mistaken for (times) | most confident mistakes |
|---|---|---|---|---|---|
{table}
"""


def _markdown(
    version: str,
    source: str,
    classes: Sequence[str],
    summary: dict[str, float],
    per_class: dict[str, dict[str, float]],
    matrix: np.ndarray,
    training: dict[str, float],
    files: Sequence[Path],
    notes: Sequence[str],
) -> str:
    overall = "\n".join(f"| {name} | {value:.4f} |" for name, value in summary.items())
    by_class = "\n".join(
        f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
        f"{s['support']:.0f} |"
        for name, s in per_class.items()
    )
    off_diagonal = [
        (int(matrix[i, j]), classes[i], classes[j])
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and matrix[i, j] > 0
    ]
    confusions = "\n".join(
        f"- {true} predicted as {pred}: {count}"
        for count, true, pred in sorted(off_diagonal, key=lambda c: -c[0])[:5]
    )
    training_text = (
        f"Best epoch {training['best_epoch']:.0f} of {training['epochs_trained']:.0f}: "
        f"validation accuracy {training['best_val_accuracy']:.4f}, "
        f"loss {training['best_val_loss']:.4f}.\n"
        if training
        else ""
    )
    notes_text = "".join(f"\n> {note}\n" for note in notes)
    source_text = "the PyTorch model (before export)" if source == "pytorch" else "the ONNX model"
    plots = ", ".join(f"`{path.name}`" for path in files)
    return f"""# Model report: {version}
{notes_text}
Scored with {source_text} on the test split (held out from training and model selection).
{training_text}
## Test set

| metric | value |
|---|---|
{overall}

## Per class

| class | precision | recall | F1 | images |
|---|---|---|---|---|
{by_class}

## Most frequent confusions

{confusions or "- none"}

Plots: {plots}.
"""
