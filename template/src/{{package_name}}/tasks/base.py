"""The shape every task shares, and the helpers its modules use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

from ..config import Config, Label


@dataclass(frozen=True)
class Target:
    """The target as the model learns it: class indices (classification) or values."""

    y: np.ndarray
    classes: list[Label] | None = None
    positive_class: Label | None = None


@dataclass(frozen=True)
class Parity:
    """How far the exported graph's outputs are from scikit-learn's on the same rows."""

    max_abs_diff: float
    # The largest difference the tolerance applies to: |diff| / max(1, |value|) for a
    # regression value, the plain difference for probabilities.
    max_scaled_diff: float
    label_flips: int
    passed: bool
    worst: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Holdout:
    """The held-out rows an evaluation judges: their target (as ``Target.y`` reads it), the
    model's scores for them, their raw feature columns and their ids."""

    y: np.ndarray
    scores: np.ndarray
    inputs: pd.DataFrame
    ids: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """A task's judgement of one set of scores: the test metrics and the details behind them."""

    metrics: dict[str, float]
    details: dict[str, Any]


class Task:
    """The behaviour training, evaluation and export need from a task."""

    name: ClassVar[str]
    is_classifier: ClassVar[bool]
    # Fold metrics summarised as cv_<name>_mean / _std.
    cv_metrics: ClassVar[tuple[str, ...]]
    # The scikit-learn scorer permutation importance uses, and how the report names it.
    importance_scoring: ClassVar[str]
    importance_label: ClassVar[str]

    def target(self, values: pd.Series, cfg: Config, source: str) -> Target:
        """Check and encode the target column; a ``DataError`` says what is wrong with it."""
        raise NotImplementedError

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        """Class probabilities (n, k) or predicted values (n,)."""
        raise NotImplementedError

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, threshold: float | None
    ) -> dict[str, float]:
        """Every test metric of the task (the names in ``config.TASK_METRICS``)."""
        raise NotImplementedError

    def baseline_scores(self, y_train: np.ndarray, rows: int) -> np.ndarray:
        """What a model that ignores the inputs would say for ``rows`` rows."""
        raise NotImplementedError

    def tune_threshold(self, y: np.ndarray, oof: np.ndarray, metric: str) -> float | None:
        """The decision threshold (binary classification only)."""
        return None

    def evaluation(self, holdout: Holdout, target: Target, threshold: float | None) -> Evaluation:
        """Metrics plus the task's details (per-class tables, error deciles, ...)."""
        return Evaluation(self.metrics(holdout.y, holdout.scores, threshold), {})

    def plots(
        self,
        reports_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        threshold: float | None,
        target: Target,
    ) -> list[Path]:
        raise NotImplementedError

    def report_sections(self, metrics: dict[str, float], details: dict[str, Any]) -> str:
        """Markdown for ``report.md`` after the metric table."""
        return ""

    def parity(
        self, native: np.ndarray, exported: np.ndarray, threshold: float | None, tolerance: float
    ) -> Parity:
        raise NotImplementedError

    def splitter(self, folds: int, seed: int, ordered: bool) -> Any:
        """Cross-validation folds: forward in time for a time split, else shuffled (and
        stratified, for classification)."""
        if ordered:
            return TimeSeriesSplit(n_splits=folds)
        if self.is_classifier:
            return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return KFold(n_splits=folds, shuffle=True, random_state=seed)


def plot(path: Path, title: str, draw: Callable[[Any], object]) -> Path:
    """Draw on a fresh figure (matplotlib's object API: nothing global) and save it."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    draw(axes)
    axes.set_title(title)
    figure.savefig(path, dpi=100)
    return path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parity_report(diff: np.ndarray, flips: np.ndarray, tolerance: float) -> Parity:
    """Parity from per-row differences and label flips; ``worst`` lists flipped rows first."""
    worst = np.argsort(np.where(flips, np.inf, diff))[::-1][:3].tolist()
    biggest = float(diff.max()) if len(diff) else 0.0
    return Parity(
        max_abs_diff=biggest,
        max_scaled_diff=biggest,
        label_flips=int(flips.sum()),
        passed=bool(len(diff)) and biggest <= tolerance and not flips.any(),
        worst=worst,
    )


def normalised(scores: np.ndarray) -> np.ndarray:
    """Probabilities that sum to one per row (float32 ONNX outputs miss by ~1e-7, and
    scikit-learn's log loss warns about that)."""
    return scores / scores.sum(axis=1, keepdims=True)
