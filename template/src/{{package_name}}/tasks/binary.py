"""Binary classification: the probability of the positive class and a tuned threshold.

Metrics at the threshold (accuracy, precision, recall, F1, the confusion matrix) and ranking
metrics (ROC-AUC, PR-AUC, log loss); ROC, precision-recall, confusion-matrix and calibration
plots. The threshold maximises ``training.threshold_metric`` on out-of-fold scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay
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
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ..config import Config
from .base import Evaluation, Holdout, Parity, Target, Task, normalised, parity_report, plot
from .labels import read_classes


class BinaryClassification(Task):
    name = "binary_classification"
    is_classifier = True
    cv_metrics: ClassVar[tuple[str, ...]] = ("roc_auc", "pr_auc")
    importance_scoring = "roc_auc"
    importance_label = "drop in ROC-AUC"

    def target(self, values: pd.Series, cfg: Config, source: str) -> Target:
        y, classes = read_classes(values, cfg, source, binary=True)
        return Target(y=y, classes=classes, positive_class=classes[1])

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(features), dtype=np.float64)

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, threshold: float | None
    ) -> dict[str, float]:
        cut = 0.5 if threshold is None else threshold
        probability = scores[:, 1]
        predicted = (probability >= cut).astype(int)
        tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
        both = len(np.unique(y)) == 2  # ranking metrics need both classes among the rows
        return {
            "accuracy": float(accuracy_score(y, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
            "precision": float(precision_score(y, predicted, zero_division=0)),
            "recall": float(recall_score(y, predicted, zero_division=0)),
            "f1": float(f1_score(y, predicted, zero_division=0)),
            "roc_auc": float(roc_auc_score(y, probability)) if both else 0.5,
            "pr_auc": float(average_precision_score(y, probability)) if both else 0.0,
            "log_loss": float(log_loss(y, normalised(scores), labels=[0, 1])),
            "threshold": float(cut),
            "tn": float(tn),
            "fp": float(fp),
            "fn": float(fn),
            "tp": float(tp),
        }

    def baseline_scores(self, y_train: np.ndarray, rows: int) -> np.ndarray:
        rate = float(np.mean(y_train))
        return np.tile([1.0 - rate, rate], (rows, 1))

    def tune_threshold(self, y: np.ndarray, oof: np.ndarray, metric: str) -> float | None:
        """The cut-off that maximises ``metric`` on held-out (out-of-fold) probabilities.

        The default 0.5 is wrong for imbalanced data; the tuned value trades precision for
        recall the way the chosen metric says (f2 weighs recall twice as much as precision).
        """
        probability = oof[:, 1]
        candidates = np.unique(np.quantile(probability, np.linspace(0.01, 0.99, 197)))
        scores = [_threshold_score(y, (probability >= t).astype(int), metric) for t in candidates]
        return float(candidates[int(np.argmax(scores))])

    def plots(
        self,
        reports_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        threshold: float | None,
        target: Target,
    ) -> list[Path]:
        probability = scores[:, 1]
        cut = 0.5 if threshold is None else threshold
        labels = [str(c) for c in target.classes or [0, 1]]
        return [
            plot(
                reports_dir / "roc_curve.png",
                "ROC curve (test)",
                lambda ax: RocCurveDisplay.from_predictions(y, probability, ax=ax),
            ),
            plot(
                reports_dir / "pr_curve.png",
                "Precision-recall curve (test)",
                lambda ax: PrecisionRecallDisplay.from_predictions(y, probability, ax=ax),
            ),
            plot(
                reports_dir / "confusion_matrix.png",
                f"Confusion matrix at threshold {cut:.3f}",
                lambda ax: ConfusionMatrixDisplay.from_predictions(
                    y,
                    (probability >= cut).astype(int),
                    labels=[0, 1],
                    display_labels=labels,
                    ax=ax,
                    colorbar=False,
                ),
            ),
            plot(
                reports_dir / "calibration.png",
                "Calibration (test)",
                lambda ax: CalibrationDisplay.from_predictions(
                    y, probability, n_bins=10, strategy="quantile", ax=ax
                ),
            ),
        ]

    def report_sections(self, metrics: dict[str, float], details: dict[str, Any]) -> str:
        return (
            f"Confusion matrix at the tuned threshold {metrics['threshold']:.3f} (positive "
            f"class {details.get('positive_class')!r}): TN {metrics['tn']:.0f}, "
            f"FP {metrics['fp']:.0f}, FN {metrics['fn']:.0f}, TP {metrics['tp']:.0f}.\n"
        )

    def evaluation(self, holdout: Holdout, target: Target, threshold: float | None) -> Evaluation:
        metrics = self.metrics(holdout.y, holdout.scores, threshold)
        return Evaluation(metrics, {"positive_class": target.positive_class})

    def parity(
        self, native: np.ndarray, exported: np.ndarray, threshold: float | None, tolerance: float
    ) -> Parity:
        diff = np.abs(native - exported).max(axis=1)
        cut = 0.5 if threshold is None else threshold
        flips = (native[:, 1] >= cut) != (exported[:, 1] >= cut)
        # A row within the tolerance of the threshold is a tie either side may break (e.g. an
        # even number of trees voting half-half): not a flip, when the probabilities agree.
        flips &= np.abs(native[:, 1] - cut) > tolerance
        return parity_report(diff, flips, tolerance)


def _threshold_score(y: np.ndarray, predicted: np.ndarray, metric: str) -> float:
    if metric == "f1":
        return float(f1_score(y, predicted, zero_division=0))
    if metric == "f2":
        return float(fbeta_score(y, predicted, beta=2, zero_division=0))
    return float(balanced_accuracy_score(y, predicted))
