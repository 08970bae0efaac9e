"""Evaluation: the task's test metrics against a baseline, its plots, permutation importance
and a report.

What is measured depends on the task (``tasks/``); this module runs it the same way for every
task. ``evaluate(cfg)`` re-scores the current model on its own holdout rows and rewrites the
reports. Plots use matplotlib's object API (no pyplot), so nothing global is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from . import artifacts, model_store
from .config import TASK_METRICS, Config, metric_direction
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .errors import DataError
from .features import to_model_frame
from .tasks import Target, Task, task_for
from .tasks.base import Evaluation, Holdout, markdown_table, plot
from .tasks.labels import known_target

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model version on its holdout rows, and the files written."""

    version: str
    task: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    files: list[Path]


def importance_table(
    pipeline: Any, features: pd.DataFrame, y: np.ndarray, task: Task, repeats: int, seed: int
) -> pd.DataFrame:
    """Permutation importance of each model input (how much the task's score drops when the
    column is shuffled): the raw columns, and a timestamp's derived parts one by one."""
    result = permutation_importance(
        pipeline,
        features,
        y,
        scoring=task.importance_scoring,
        n_repeats=repeats,
        random_state=seed,
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
    task: Task,
    target: Target,
    evaluation: Evaluation,
    baseline: dict[str, float],
    cv_metrics: dict[str, float],
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    importance: pd.DataFrame,
    notes: list[str] | None = None,
) -> list[Path]:
    """Write the task's plots, the importance plot, ``metrics.json`` and ``report.md``."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    files = task.plots(reports_dir, y_true, scores, threshold, target)
    files.append(
        plot(
            reports_dir / "feature_importance.png",
            f"Permutation importance ({task.importance_label})",
            lambda ax: _importance_bars(ax, importance, task.importance_label),
        )
    )
    metrics_path = reports_dir / METRICS_FILE
    model_store.write_json(
        metrics_path,
        {
            "version": version,
            "task": task.name,
            "classes": target.classes,
            "test": evaluation.metrics,
            "baseline": baseline,
            "cross_validation": cv_metrics,
            "details": evaluation.details,
            "permutation_importance": importance.to_dict(orient="records"),
        },
    )
    report_path = reports_dir / REPORT_FILE
    report_path.write_text(
        _markdown_report(
            version, task, evaluation, baseline, cv_metrics, importance, files, notes or []
        ),
        encoding="utf-8",
    )
    return [*files, metrics_path, report_path]


def metric_rows(
    task: str, metrics: dict[str, float], baseline: dict[str, float]
) -> list[list[str]]:
    """One row per test metric: value, the baseline's, and the lift (signed so that a
    positive lift is always an improvement, also for lower-is-better metrics)."""
    rows = []
    for name in TASK_METRICS[task]:
        if name not in metrics:
            continue
        value, base = metrics[name], baseline.get(name)
        if base is None:
            rows.append([name, f"{value:.4f}", "", ""])
            continue
        lift = value - base if metric_direction(task, name) == "max" else base - value
        rows.append([name, f"{value:.4f}", f"{base:.4f}", f"{lift:+.4f}"])
    return rows


def _importance_bars(axes: Any, importance: pd.DataFrame, label: str) -> None:
    ordered = importance.iloc[::-1]
    axes.barh(ordered["feature"], ordered["importance_mean"], xerr=ordered["importance_std"])
    axes.set_xlabel(label)


def _markdown_report(
    version: str,
    task: Task,
    evaluation: Evaluation,
    baseline: dict[str, float],
    cv_metrics: dict[str, float],
    importance: pd.DataFrame,
    files: list[Path],
    notes: list[str],
) -> str:
    metrics = markdown_table(
        ["metric", "model", "baseline", "lift"],
        metric_rows(task.name, evaluation.metrics, baseline),
    )
    cv_rows = markdown_table(
        ["metric", "value"], [[name, f"{value:.4f}"] for name, value in sorted(cv_metrics.items())]
    )
    top = markdown_table(
        ["feature", task.importance_label],
        [
            [str(row.feature), f"{row.importance_mean:.4f} ± {row.importance_std:.4f}"]
            for row in importance.head(10).itertuples()
        ],
    )
    baseline_name = (
        "always the most frequent class, probabilities = class shares"
        if task.is_classifier
        else "always the training mean"
    )
    notes_text = "".join(f"\n> {note}\n" for note in notes)
    plots = ", ".join(f"`{path.name}`" for path in files)
    unused_for = (
        "fitting or threshold tuning" if task.name == "binary_classification" else "fitting"
    )
    return f"""# Model report: {version} ({task.name.replace("_", " ")})
{notes_text}
## Test set (held out, never used for {unused_for})

Baseline: {baseline_name}. Lift: how much better the model is (positive = better).

{metrics}

{task.report_sections(evaluation.metrics, evaluation.details)}
## Cross-validation on the training split (out-of-fold)

{cv_rows}

## Most important inputs (permutation importance on the test set)

{top}

Plots: {plots}.
"""


def evaluate(cfg: Config, version: str | None = None) -> EvaluationResult:
    """Score a trained model (default: ``LATEST``) on its holdout rows and rewrite the reports."""
    model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, version)
    metadata = artifacts.load_metadata(model_dir)
    pipeline = artifacts.load_pipeline(model_dir, metadata)
    holdout_ids = set(model_store.read_json(model_dir / artifacts.HOLDOUT_FILE))
    task = task_for(metadata.task)

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
    target = known_target(
        test[cfg.data.target], metadata.classes, metadata.positive_class, str(cfg.data.query)
    )
    features = to_model_frame(test, metadata.features)
    scores = task.scores(pipeline, features)
    ids = test[cfg.data.id_column].to_numpy()
    holdout = Holdout(target.y, scores, features, ids)
    evaluation = task.evaluation(holdout, target, metadata.threshold)
    importance = importance_table(
        pipeline,
        features,
        target.y,
        task,
        cfg.evaluation.permutation_repeats,
        cfg.training.seed,
    )
    files = write_reports(
        cfg.paths.reports_dir,
        version=metadata.version,
        task=task,
        target=target,
        evaluation=evaluation,
        baseline=metadata.baseline_metrics,
        cv_metrics=metadata.cv_metrics,
        y_true=target.y,
        scores=scores,
        threshold=metadata.threshold,
        importance=importance,
        notes=notes,
    )
    return EvaluationResult(
        version=metadata.version,
        task=task.name,
        metrics=evaluation.metrics,
        baseline=metadata.baseline_metrics,
        files=files,
    )
