"""Multiclass classification: a probability per class; the prediction is the likeliest class.

Metrics: accuracy, balanced accuracy, macro and weighted F1, log loss and one-vs-rest ROC-AUC;
a per-class precision/recall/F1 table, a normalised confusion matrix and the most-confused
pairs of classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ..config import Config
from .base import (
    Evaluation,
    Holdout,
    Parity,
    Target,
    Task,
    markdown_table,
    normalised,
    parity_report,
    plot,
)
from .labels import read_classes

CONFUSED_PAIRS = 5


class MulticlassClassification(Task):
    name = "multiclass_classification"
    is_classifier = True
    cv_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro", "log_loss")
    importance_scoring = "balanced_accuracy"
    importance_label = "drop in balanced accuracy"

    def target(self, values: pd.Series, cfg: Config, source: str) -> Target:
        y, classes = read_classes(values, cfg, source, binary=False)
        return Target(y=y, classes=classes)

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(features), dtype=np.float64)

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, threshold: float | None
    ) -> dict[str, float]:
        labels = list(range(scores.shape[1]))
        predicted = scores.argmax(axis=1)
        return {
            "accuracy": float(accuracy_score(y, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
            "f1_macro": float(
                f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
            ),
            "f1_weighted": float(
                f1_score(y, predicted, labels=labels, average="weighted", zero_division=0)
            ),
            "roc_auc_ovr": _roc_auc_ovr(y, scores),
            "log_loss": float(log_loss(y, normalised(scores), labels=labels)),
        }

    def baseline_scores(self, y_train: np.ndarray, rows: int) -> np.ndarray:
        classes = int(y_train.max()) + 1
        prior = np.bincount(y_train, minlength=classes) / len(y_train)
        return np.tile(prior, (rows, 1))

    def evaluation(self, holdout: Holdout, target: Target, threshold: float | None) -> Evaluation:
        y, scores = holdout.y, holdout.scores
        classes = target.classes or list(range(scores.shape[1]))
        indices = list(range(len(classes)))
        predicted = scores.argmax(axis=1)
        precision, recall, f1, support = precision_recall_fscore_support(
            y, predicted, labels=indices, zero_division=0
        )
        per_class = [
            {
                "class": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in indices
        ]
        matrix = confusion_matrix(y, predicted, labels=indices)
        pairs = [
            {
                "actual": classes[a],
                "predicted": classes[p],
                "rows": int(matrix[a, p]),
                "share_of_actual": float(matrix[a, p] / max(1, matrix[a].sum())),
            }
            for a in indices
            for p in indices
            if a != p and matrix[a, p] > 0
        ]
        pairs.sort(key=lambda pair: pair["rows"], reverse=True)
        return Evaluation(
            self.metrics(y, scores, threshold),
            {"per_class": per_class, "most_confused": pairs[:CONFUSED_PAIRS]},
        )

    def plots(
        self,
        reports_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        threshold: float | None,
        target: Target,
    ) -> list[Path]:
        labels = [str(c) for c in target.classes or range(scores.shape[1])]
        return [
            plot(
                reports_dir / "confusion_matrix.png",
                "Confusion matrix (test, share of each actual class)",
                lambda ax: ConfusionMatrixDisplay.from_predictions(
                    y,
                    scores.argmax(axis=1),
                    labels=list(range(len(labels))),
                    display_labels=labels,
                    normalize="true",
                    values_format=".2f",
                    ax=ax,
                    colorbar=False,
                ),
            )
        ]

    def report_sections(self, metrics: dict[str, float], details: dict[str, Any]) -> str:
        per_class = markdown_table(
            ["class", "precision", "recall", "F1", "rows"],
            [
                [
                    str(row["class"]),
                    f"{row['precision']:.3f}",
                    f"{row['recall']:.3f}",
                    f"{row['f1']:.3f}",
                    str(row["support"]),
                ]
                for row in details["per_class"]
            ],
        )
        confused = details["most_confused"]
        pairs = (
            markdown_table(
                ["actual", "predicted as", "rows", "share of actual"],
                [
                    [
                        str(p["actual"]),
                        str(p["predicted"]),
                        str(p["rows"]),
                        f"{p['share_of_actual']:.1%}",
                    ]
                    for p in confused
                ],
            )
            if confused
            else "No test row was confused."
        )
        return f"""### Per class (test)

{per_class}

### Most-confused pairs

{pairs}
"""

    def parity(
        self, native: np.ndarray, exported: np.ndarray, threshold: float | None, tolerance: float
    ) -> Parity:
        diff = np.abs(native - exported).max(axis=1)
        flips = native.argmax(axis=1) != exported.argmax(axis=1)
        # Two classes within the tolerance of each other are a tie either side may break.
        top_two = np.sort(native, axis=1)[:, -2:]
        flips &= (top_two[:, 1] - top_two[:, 0]) > tolerance
        return parity_report(diff, flips, tolerance)


def _roc_auc_ovr(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes that have rows on both sides (a time-ordered
    test split may lack a class; scikit-learn's ``multi_class="ovr"`` then refuses)."""
    aucs = [
        roc_auc_score(y == k, scores[:, k])
        for k in range(scores.shape[1])
        if 0 < int(np.sum(y == k)) < len(y)
    ]
    return float(np.mean(aucs)) if aucs else 0.5
