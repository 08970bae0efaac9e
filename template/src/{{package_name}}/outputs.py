"""What a model's raw scores mean to its users, for each task: the API's answers, batch
predict's columns and the class counts in ``/metrics``.

A runtime returns class probabilities ``(n, k)`` (classification) or values ``(n,)``
(regression); ``Outputs`` turns them into the user's labels with the model's metadata (the
classes in training order, the tuned threshold). NumPy only: the serving process imports it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .artifacts import ModelMetadata

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"


class Outputs:
    """Scores -> predictions for one model."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.task = metadata.task
        classes: list[Any] = list(metadata.classes or [0, 1])
        self.classes = classes
        self._labels = np.empty(len(classes), dtype=object)
        self._labels[:] = classes
        self._names = [str(label) for label in classes]
        self.threshold = 0.5 if metadata.threshold is None else metadata.threshold

    @property
    def is_classifier(self) -> bool:
        return self.task != REGRESSION

    def problem(self, scores: np.ndarray, rows: int) -> str | None:
        """Why ``scores`` are not what this model should return for ``rows`` rows, or None."""
        if not self.is_classifier:
            if scores.shape != (rows,) or not np.isfinite(scores).all():
                return f"expected {rows} finite value(s), got shape {scores.shape}"
            return None
        if scores.shape != (rows, len(self.classes)):
            return f"expected {rows} x {len(self.classes)} class probabilities, got {scores.shape}"
        if not ((scores >= 0) & (scores <= 1)).all():
            return "class probabilities outside [0, 1]"
        return None

    def predicted(self, scores: np.ndarray) -> list[Any]:
        """The predicted label (or value) of each row, as JSON-ready Python values."""
        if self.task == REGRESSION:
            values: list[Any] = scores.tolist()
            return values
        if self.task == BINARY:
            index = (scores[:, 1] >= self.threshold).astype(np.int64)
        else:
            index = scores.argmax(axis=1)
        labels: list[Any] = self._labels[index].tolist()
        return labels

    def records(self, scores: np.ndarray, version: str) -> list[dict[str, Any]]:
        """API answers in request order (the shape of the task's response model)."""
        predicted = self.predicted(scores)
        if self.task == REGRESSION:
            return [{"prediction": value, "model_version": version} for value in predicted]
        if self.task == BINARY:
            return [
                {"prediction": label, "probability": p, "model_version": version}
                for label, p in zip(predicted, scores[:, 1].tolist(), strict=True)
            ]
        return [
            {
                "prediction": label,
                "probabilities": dict(zip(self._names, row, strict=True)),
                "model_version": version,
            }
            for label, row in zip(predicted, scores.tolist(), strict=True)
        ]

    def columns(self, scores: np.ndarray) -> dict[str, Any]:
        """Batch-predict output columns: ``prediction`` plus the probability of the positive
        class (binary) or one ``probability_<class>`` column per class (multiclass)."""
        columns: dict[str, Any] = {"prediction": self.predicted(scores)}
        if self.task == BINARY:
            columns["probability"] = scores[:, 1]
        elif self.task == MULTICLASS:
            for i, name in enumerate(self._names):
                columns[f"probability_{name}"] = scores[:, i]
        return columns

    def counts(self, scores: np.ndarray) -> Counter[str]:
        """Predictions per class (regression: all counted as ``value``)."""
        if self.task == REGRESSION:
            return Counter({"value": len(scores)})
        return Counter(str(label) for label in self.predicted(scores))

    def summary(self, counts: Counter[str], value_sum: float = 0.0) -> str:
        """One line for batch predict: counts per class, or the mean predicted value."""
        if self.task == REGRESSION:
            rows = counts["value"]
            return f"mean prediction {value_sum / rows:.4g}" if rows else "no rows"
        total = sum(counts.values()) or 1
        top = ", ".join(f"{label} {n} ({n / total:.1%})" for label, n in counts.most_common(5))
        return f"predicted {top}"
