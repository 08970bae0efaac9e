"""Evaluation: metrics at the tuned threshold, plots, permutation importance and a report.

``classification_metrics`` and ``tune_threshold`` are pure functions used by training;
``evaluate(cfg)`` re-scores the current model on its own holdout rows and rewrites the reports.
Plots use matplotlib's object API (no pyplot), so nothing global is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from . import artifacts
from .config import Config
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .errors import DataError
from .features import to_model_frame

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model version on its holdout rows, and the files written."""

    version: str
    metrics: dict[str, float]
    files: list[Path]


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """Threshold-dependent and ranking metrics; the confusion matrix as tn/fp/fn/tp."""
    predicted = (probability >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "threshold": float(threshold),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


def tune_threshold(y_true: np.ndarray, probability: np.ndarray, metric: str) -> float:
    """The probability cut-off that maximises ``metric`` on held-out (out-of-fold) scores.

    The default 0.5 is wrong for imbalanced data; the tuned value trades precision for recall
    the way the chosen metric says (f2 weighs recall twice as much as precision).
    """
    candidates = np.unique(np.quantile(probability, np.linspace(0.01, 0.99, 197)))
    scores = [_threshold_score(y_true, (probability >= t).astype(int), metric) for t in candidates]
    return float(candidates[int(np.argmax(scores))])


def _threshold_score(y_true: np.ndarray, predicted: np.ndarray, metric: str) -> float:
    if metric == "f1":
        return float(f1_score(y_true, predicted, zero_division=0))
    if metric == "f2":
        return float(fbeta_score(y_true, predicted, beta=2, zero_division=0))
    return float(balanced_accuracy_score(y_true, predicted))


def importance_table(
    pipeline: Any, features: pd.DataFrame, y_true: np.ndarray, repeats: int, seed: int
) -> pd.DataFrame:
    """Permutation importance of each *raw* input column (drop in ROC-AUC when shuffled)."""
    result = permutation_importance(
        pipeline, features, y_true, scoring="roc_auc", n_repeats=repeats, random_state=seed
    )
    table = pd.DataFrame(
        {
            "feature": features.columns,
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return table.sort_values("importance_mean", ascending=False, ignore_index=True)


def write_reports(
    reports_dir: Path,
    *,
    version: str,
    metrics: dict[str, float],
    cv_metrics: dict[str, float],
    y_true: np.ndarray,
    probability: np.ndarray,
    importance: pd.DataFrame,
    notes: list[str] | None = None,
) -> list[Path]:
    """Write plots, ``metrics.json`` and ``report.md``; return the paths written."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    threshold = metrics["threshold"]
    files = [
        _plot(
            reports_dir / "roc_curve.png",
            "ROC curve (test)",
            lambda ax: RocCurveDisplay.from_predictions(y_true, probability, ax=ax),
        ),
        _plot(
            reports_dir / "pr_curve.png",
            "Precision-recall curve (test)",
            lambda ax: PrecisionRecallDisplay.from_predictions(y_true, probability, ax=ax),
        ),
        _plot(
            reports_dir / "confusion_matrix.png",
            f"Confusion matrix at threshold {threshold:.3f}",
            lambda ax: ConfusionMatrixDisplay.from_predictions(
                y_true, (probability >= threshold).astype(int), ax=ax, colorbar=False
            ),
        ),
        _plot(
            reports_dir / "calibration.png",
            "Calibration (test)",
            lambda ax: CalibrationDisplay.from_predictions(
                y_true, probability, n_bins=10, strategy="quantile", ax=ax
            ),
        ),
        _plot(
            reports_dir / "feature_importance.png",
            "Permutation importance (drop in ROC-AUC)",
            lambda ax: _importance_bars(ax, importance),
        ),
    ]
    metrics_path = reports_dir / METRICS_FILE
    artifacts.write_json(
        metrics_path,
        {
            "version": version,
            "test": metrics,
            "cross_validation": cv_metrics,
            "permutation_importance": importance.to_dict(orient="records"),
        },
    )
    report_path = reports_dir / REPORT_FILE
    report_path.write_text(
        _markdown_report(version, metrics, cv_metrics, importance, notes or []), encoding="utf-8"
    )
    return [*files, metrics_path, report_path]


def _plot(path: Path, title: str, draw: Any) -> Path:
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    draw(axes)
    axes.set_title(title)
    figure.savefig(path, dpi=100)
    return path


def _importance_bars(axes: Any, importance: pd.DataFrame) -> None:
    ordered = importance.iloc[::-1]
    axes.barh(ordered["feature"], ordered["importance_mean"], xerr=ordered["importance_std"])
    axes.set_xlabel("mean drop in ROC-AUC")


def _markdown_report(
    version: str,
    metrics: dict[str, float],
    cv_metrics: dict[str, float],
    importance: pd.DataFrame,
    notes: list[str],
) -> str:
    rows = "\n".join(
        f"| {name} | {metrics[name]:.4f} |"
        for name in ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "threshold")
    )
    cv_rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(cv_metrics.items()))
    top = "\n".join(
        f"| {row.feature} | {row.importance_mean:.4f} ± {row.importance_std:.4f} |"
        for row in importance.head(10).itertuples()
    )
    notes_text = "".join(f"\n> {note}\n" for note in notes)
    return f"""# Model report: {version}
{notes_text}
## Test set (held out, never used for fitting or threshold tuning)

| metric | value |
|---|---|
{rows}

Confusion matrix at the tuned threshold: TN {metrics["tn"]:.0f}, FP {metrics["fp"]:.0f},
FN {metrics["fn"]:.0f}, TP {metrics["tp"]:.0f}.

## Cross-validation on the training split (out-of-fold)

| metric | value |
|---|---|
{cv_rows}

## Most important inputs (permutation importance on the test set)

| feature | drop in ROC-AUC |
|---|---|
{top}

Plots: `roc_curve.png`, `pr_curve.png`, `confusion_matrix.png`, `calibration.png`,
`feature_importance.png`.
"""


def evaluate(cfg: Config, version: str | None = None) -> EvaluationResult:
    """Score a trained model (default: ``LATEST``) on its holdout rows and rewrite the reports."""
    model_dir = artifacts.resolve_model_dir(cfg.paths.models_dir, version)
    metadata = artifacts.load_metadata(model_dir)
    pipeline = artifacts.load_pipeline(model_dir, metadata)
    holdout_ids = set(artifacts.read_json(model_dir / artifacts.HOLDOUT_FILE))

    frame = validate_frame(extract_training_frame(cfg), cfg, source=str(cfg.data.query))
    test = frame[frame[cfg.data.id_column].isin(holdout_ids)]
    if test.empty:
        raise DataError(
            "none of the model's holdout rows are in the current data; "
            "evaluate a model trained on this data (retrain)"
        )
    notes = []
    if len(test) < len(holdout_ids):
        notes.append(f"{len(holdout_ids) - len(test)} holdout rows are no longer in the data.")
    features = to_model_frame(test, cfg.features)
    y_true = test[cfg.data.target].to_numpy()
    probability = pipeline.predict_proba(features)[:, 1]
    metrics = classification_metrics(y_true, probability, metadata.threshold)
    importance = importance_table(
        pipeline, features, y_true, cfg.evaluation.permutation_repeats, cfg.training.seed
    )
    files = write_reports(
        cfg.paths.reports_dir,
        version=metadata.version,
        metrics=metrics,
        cv_metrics=metadata.cv_metrics,
        y_true=y_true,
        probability=probability,
        importance=importance,
        notes=notes,
    )
    return EvaluationResult(version=metadata.version, metrics=metrics, files=files)
