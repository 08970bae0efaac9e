"""Regression: one predicted number per row.

Metrics: RMSE, MAE, R² and MAPE (when no actual value is zero); residual and predicted-vs-actual
plots, the error by decile of the prediction, and the largest errors with their inputs. The
baseline predicts the training mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.metrics import (
    PredictionErrorDisplay,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    r2_score,
)

from ..config import Config
from ..errors import DataError
from .base import (
    Evaluation,
    Holdout,
    Parity,
    Target,
    Task,
    markdown_table,
    parity_report,
    plot,
)

LARGEST_ERRORS = 10
DECILES = 10


class Regression(Task):
    name = "regression"
    is_classifier = False
    cv_metrics: ClassVar[tuple[str, ...]] = ("rmse", "mae", "r2")
    importance_scoring = "r2"
    importance_label = "drop in R²"

    def target(self, values: pd.Series, cfg: Config, source: str) -> Target:
        target = cfg.data.target
        if pd.api.types.is_bool_dtype(values):
            raise DataError(
                f"{source}: the target {target} is true/false: set task: binary_classification"
            )
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        if not bad.empty:
            examples = ", ".join(repr(v) for v in bad.head(3))
            raise DataError(
                f"{source}: the target {target} is not numeric in {len(bad)} rows (e.g. "
                f"{examples}): regression predicts a number; for labels set task: "
                "binary_classification or multiclass_classification"
            )
        y = numbers.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise DataError(
                f"{source}: the target {target} is infinite in {int((~np.isfinite(y)).sum())} "
                "rows: leave them out or cap them in the query"
            )
        if np.ptp(y) == 0:
            raise DataError(
                f"{source}: the target {target} is {y[0]:g} in every row: nothing to predict"
            )
        return Target(y=y)

    def scores(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(features), dtype=np.float64).reshape(-1)

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, threshold: float | None
    ) -> dict[str, float]:
        metrics = {
            "rmse": float(np.sqrt(mean_squared_error(y, scores))),
            "mae": float(mean_absolute_error(y, scores)),
            "r2": float(r2_score(y, scores)) if np.ptp(y) > 0 else 0.0,
        }
        if len(y) and np.all(y != 0):  # a percentage of zero is undefined
            metrics["mape"] = float(mean_absolute_percentage_error(y, scores))
        return metrics

    def baseline_scores(self, y_train: np.ndarray, rows: int) -> np.ndarray:
        return np.full(rows, float(np.mean(y_train)))

    def evaluation(self, holdout: Holdout, target: Target, threshold: float | None) -> Evaluation:
        y, scores, inputs, ids = holdout.y, holdout.scores, holdout.inputs, holdout.ids
        error = scores - y
        bins = pd.qcut(pd.Series(scores).rank(method="first"), q=min(DECILES, len(y)), labels=False)
        deciles = [
            {
                "decile": int(b) + 1,
                "rows": int(mask.sum()),
                "mean_predicted": float(scores[mask].mean()),
                "mean_actual": float(y[mask].mean()),
                "mae": float(np.abs(error[mask]).mean()),
                "bias": float(error[mask].mean()),
            }
            for b in sorted(bins.unique())
            for mask in [(bins == b).to_numpy()]
        ]
        worst = np.argsort(np.abs(error))[::-1][:LARGEST_ERRORS]
        largest = [
            {
                "id": _plain(ids[i]),
                "actual": float(y[i]),
                "predicted": float(scores[i]),
                "error": float(error[i]),
                "inputs": {k: _plain(v) for k, v in inputs.iloc[i].items()},
            }
            for i in worst
        ]
        return Evaluation(
            self.metrics(y, scores, threshold),
            {"error_by_decile": deciles, "largest_errors": largest},
        )

    def plots(
        self,
        reports_dir: Path,
        y: np.ndarray,
        scores: np.ndarray,
        threshold: float | None,
        target: Target,
    ) -> list[Path]:
        return [
            plot(
                reports_dir / "residuals.png",
                "Residuals vs predicted (test)",
                lambda ax: PredictionErrorDisplay.from_predictions(
                    y, scores, kind="residual_vs_predicted", ax=ax
                ),
            ),
            plot(
                reports_dir / "predicted_vs_actual.png",
                "Predicted vs actual (test)",
                lambda ax: PredictionErrorDisplay.from_predictions(
                    y, scores, kind="actual_vs_predicted", ax=ax
                ),
            ),
        ]

    def report_sections(self, metrics: dict[str, float], details: dict[str, Any]) -> str:
        deciles = markdown_table(
            ["decile of prediction", "rows", "mean predicted", "mean actual", "MAE", "bias"],
            [
                [
                    str(d["decile"]),
                    str(d["rows"]),
                    f"{d['mean_predicted']:.4g}",
                    f"{d['mean_actual']:.4g}",
                    f"{d['mae']:.4g}",
                    f"{d['bias']:+.4g}",
                ]
                for d in details["error_by_decile"]
            ],
        )
        largest = markdown_table(
            ["id", "actual", "predicted", "error", "inputs"],
            [
                [
                    str(e["id"]),
                    f"{e['actual']:.4g}",
                    f"{e['predicted']:.4g}",
                    f"{e['error']:+.4g}",
                    ", ".join(f"{k}={v}" for k, v in e["inputs"].items())[:300],
                ]
                for e in details["largest_errors"]
            ],
        )
        mape = "" if "mape" in metrics else "MAPE is not reported: some actual values are zero.\n\n"
        return f"""{mape}### Error by decile of the prediction (bias = mean predicted - actual)

{deciles}

### Largest errors (test)

{largest}
"""

    def parity(
        self, native: np.ndarray, exported: np.ndarray, threshold: float | None, tolerance: float
    ) -> Parity:
        # |difference| within tolerance x max(1, |value|): float32 keeps ~7 digits.
        diff = np.abs(native - exported)
        relative = diff / np.maximum(1.0, np.abs(native))
        report = parity_report(relative, np.zeros(len(diff), dtype=bool), tolerance)
        return Parity(
            max_abs_diff=float(diff.max()) if len(diff) else 0.0,
            max_scaled_diff=report.max_abs_diff,
            label_flips=0,
            passed=report.passed,
            worst=report.worst,
        )


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy numbers become Python numbers, missing values None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}")  # the model computes in float32: no false digits
    return value if isinstance(value, int | str | bool) else str(value)
