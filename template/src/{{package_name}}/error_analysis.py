"""Error analysis: the test metrics by slice of the data, and the worst slices flagged.

One number over the whole test set hides where a model fails. Slices: every value of each
categorical and boolean input (the most frequent ``MAX_VALUES``, the rest together), and
quantile bins (``evaluation.slice_bins``) of the top ``NUMERIC_INPUTS`` numeric inputs (by
mean |SHAP|, else by permutation importance); a missing value is a slice of its own.

Each slice gets its size and the task's metrics, and for classification a calibration check
(binary: mean predicted probability against the observed positive rate, and the Brier score;
multiclass: mean confidence against accuracy). Slices are ranked by the mean per-row loss
(log loss for classification, absolute error for regression), which every slice has whatever
its labels; the ``WORST`` slices worse than the whole test set are flagged, counting only
slices of at least ``evaluation.slice_min_rows`` rows: a handful of rows is noise, not a
finding (small slices are listed, with their size, but never flagged).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from .config import FeaturesConfig
from .tasks.base import markdown_table

NUMERIC_INPUTS = 3
MAX_VALUES = 20
WORST = 5
EPSILON = 1e-15
BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
MISSING = "missing"

# Per task: the loss slices are ranked by, and the columns of the report's table.
FLAG_METRIC = {BINARY: "log_loss", MULTICLASS: "log_loss", "regression": "mae"}
COLUMNS: dict[str, list[tuple[str, str]]] = {
    BINARY: [
        ("positive_rate", "positive rate"),
        ("mean_probability", "mean predicted p"),
        ("roc_auc", "ROC-AUC"),
        ("pr_auc", "PR-AUC"),
        ("recall", "recall"),
        ("precision", "precision"),
        ("brier", "Brier"),
        ("log_loss", "log loss"),
    ],
    MULTICLASS: [
        ("accuracy", "accuracy"),
        ("f1_macro", "macro F1"),
        ("mean_confidence", "mean confidence"),
        ("log_loss", "log loss"),
    ],
    "regression": [
        ("mean_actual", "mean actual"),
        ("mean_predicted", "mean predicted"),
        ("mae", "MAE"),
        ("rmse", "RMSE"),
        ("bias", "bias"),
    ],
}


@dataclass(frozen=True)
class Slice:
    """One slice: which input, which values, how many rows, its metrics; ``flagged`` when it
    is among the worst slices large enough to judge."""

    feature: str
    kind: str  # "value" (a category or true/false) or "bin" (a quantile bin of a number)
    label: str
    rows: int
    metrics: dict[str, float | None]
    flagged: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "slice": self.label,
            "rows": self.rows,
            **self.metrics,
            "flagged": self.flagged,
        }


@dataclass(frozen=True)
class SliceReport:
    """Every slice of the test rows, the whole set's metrics and how slices were judged."""

    task: str
    overall: dict[str, float | None]
    slices: list[Slice]
    flag_metric: str
    min_rows: int
    binned: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[Slice]:
        worst = [s for s in self.slices if s.flagged]
        return sorted(worst, key=lambda s: -(s.metrics[self.flag_metric] or 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "flag_metric": self.flag_metric,
            "min_rows": self.min_rows,
            "binned_numeric_inputs": self.binned,
            "overall": self.overall,
            "slices": [s.as_dict() for s in self.slices],
            "flagged": [s.as_dict() for s in self.flagged],
        }

    def table(self) -> pd.DataFrame:
        """One row per slice (for ``error_slices.csv``)."""
        return pd.DataFrame([s.as_dict() for s in self.slices])

    def markdown(self) -> str:
        columns = COLUMNS[self.task]
        header = ["input", "slice", "rows", *(title for _, title in columns)]

        def row(feature: str, label: str, rows: int, metrics: dict[str, Any]) -> list[str]:
            return [feature, label, str(rows), *(_cell(metrics.get(key)) for key, _ in columns)]

        overall_rows = row("(all test rows)", "", int(self.overall["rows"] or 0), self.overall)
        flagged = self.flagged
        worst = (
            markdown_table(
                header,
                [overall_rows, *(row(s.feature, s.label, s.rows, s.metrics) for s in flagged)],
            )
            if flagged
            else f"No slice of {self.min_rows} or more rows is worse than the whole test set."
        )
        every = markdown_table(
            [*header, "flag"],
            [
                [*row(s.feature, s.label, s.rows, s.metrics), "worst" if s.flagged else ""]
                for s in self.slices
            ],
        )
        binned = ", ".join(self.binned) if self.binned else "none"
        loss = self.flag_metric.replace("_", " ")
        return f"""Slices: each value of every categorical and boolean input, and quantile bins
of the top numeric inputs ({binned}); {len(self.slices)} slices. Flagged: up to {WORST}
slices with the highest {loss} that are worse than the whole test set and have at least
{self.min_rows} rows (evaluation.slice_min_rows); smaller slices are listed but never
flagged: read their metrics with their size in mind.

### Worst slices

{worst}

### Every slice

{every}
"""


def slice_report(
    task: str,
    frame: pd.DataFrame,
    features: FeaturesConfig,
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    *,
    ranking: Sequence[str],
    bins: int,
    min_rows: int,
) -> SliceReport:
    """The slices of the test rows ``frame`` (model-ready: categories as text, booleans as
    1/0), with their targets ``y`` and the model's ``scores``. ``ranking``: inputs, most
    important first; the first ``NUMERIC_INPUTS`` numeric ones are binned."""
    numeric = {f.name for f in features.numeric}
    binned = [name for name in ranking if name in numeric][:NUMERIC_INPUTS]
    groups: list[tuple[str, str, str, np.ndarray]] = []
    for categorical in features.categorical:
        groups += _value_slices(categorical.name, frame[categorical.name].astype(str).to_numpy())
    for boolean in features.boolean:
        values = frame[boolean.name].to_numpy(float)
        labels = np.where(np.isnan(values), MISSING, np.where(values > 0.5, "true", "false"))
        groups += _value_slices(boolean.name, labels.astype(object))
    for name in binned:
        groups += _bin_slices(name, frame[name].to_numpy(float), bins)
    measure = _measure(task, threshold)
    overall = {"rows": float(len(y)), **measure(y, scores)}
    flag = FLAG_METRIC[task]
    reference = overall[flag]
    slices = [
        Slice(feature, kind, label, int(mask.sum()), measure(y[mask], scores[mask]))
        for feature, kind, label, mask in groups
        if mask.any()
    ]
    eligible = [
        i
        for i, s in enumerate(slices)
        if s.rows >= min_rows
        and reference is not None
        and (s.metrics[flag] or 0.0) > reference + 1e-12
    ]
    worst = set(sorted(eligible, key=lambda i: -(slices[i].metrics[flag] or 0.0))[:WORST])
    slices = [
        Slice(s.feature, s.kind, s.label, s.rows, s.metrics, flagged=i in worst)
        for i, s in enumerate(slices)
    ]
    return SliceReport(task, overall, slices, flag, min_rows, binned)


def _value_slices(name: str, values: np.ndarray) -> list[tuple[str, str, str, np.ndarray]]:
    counts = pd.Series(values).value_counts(sort=True)
    kept = list(counts.index[:MAX_VALUES])
    slices = [(name, "value", str(value), values == value) for value in sorted(kept, key=str)]
    rest = ~np.isin(values, kept)
    if rest.any():
        others = len(counts) - len(kept)
        slices.append((name, "value", f"{others} other values", rest))
    return slices


def _bin_slices(name: str, values: np.ndarray, bins: int) -> list[tuple[str, str, str, np.ndarray]]:
    present = ~np.isnan(values)
    slices: list[tuple[str, str, str, np.ndarray]] = []
    if present.any():
        edges = np.unique(np.quantile(values[present], np.linspace(0, 1, bins + 1)))
        if len(edges) == 1:
            slices.append((name, "bin", f"= {edges[0]:.4g}", present))
        for i, (low, high) in enumerate(itertools.pairwise(edges)):
            last = i == len(edges) - 2
            inside = (values >= low) & ((values <= high) if last else (values < high))
            label = f"[{low:.4g}, {high:.4g}{']' if last else ')'}"
            slices.append((name, "bin", label, present & inside))
    if not present.all():
        slices.append((name, "bin", MISSING, ~present))
    return slices


def _measure(task: str, threshold: float | None) -> Any:
    if task == BINARY:
        return lambda y, scores: _binary(y, scores, 0.5 if threshold is None else threshold)
    if task == MULTICLASS:
        return _multiclass
    return _regression


def _binary(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    probability = scores[:, 1]
    y = y.astype(int)
    predicted = probability >= threshold
    positives = int(y.sum())
    both = 0 < positives < len(y)
    clipped = np.clip(probability, EPSILON, 1 - EPSILON)
    return {
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(predicted.mean()),
        "mean_probability": float(probability.mean()),
        "calibration_gap": float(probability.mean() - y.mean()),
        "roc_auc": float(roc_auc_score(y, probability)) if both else None,
        "pr_auc": float(average_precision_score(y, probability)) if both else None,
        "recall": float(predicted[y == 1].mean()) if positives else None,
        "precision": float(y[predicted].mean()) if predicted.any() else None,
        "brier": float(np.mean((probability - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
    }


def _multiclass(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    y = y.astype(int)
    predicted = scores.argmax(axis=1)
    confidence = scores.max(axis=1)
    accuracy = float(np.mean(predicted == y))
    own = np.clip(scores[np.arange(len(y)), y], EPSILON, 1.0)
    return {
        "accuracy": accuracy,
        # Over the classes present in the slice (actual or predicted): absent ones are no error.
        "f1_macro": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "mean_confidence": float(confidence.mean()),
        "calibration_gap": float(confidence.mean() - accuracy),
        "log_loss": float(-np.mean(np.log(own))),
    }


def _regression(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    error = scores - y
    return {
        "mean_actual": float(y.mean()),
        "mean_predicted": float(scores.mean()),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "bias": float(error.mean()),
    }


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
