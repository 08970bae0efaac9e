"""Evaluation: the task's test metrics against a baseline, its plots, permutation importance,
SHAP explanations, the error analysis by slice, and a report.

What is measured depends on the task (``tasks/``); this module runs it the same way for every
task. ``evaluate(cfg)`` re-scores the current model on its own holdout rows and rewrites the
reports; training writes the same reports for the model it is about to publish. Plots use
matplotlib's object API (no pyplot), so nothing global is touched.

Explanations are a view of the model, never a condition for it: if SHAP cannot explain a model
(an estimator it does not know, a missing dependency), the report says why and everything else
is written as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from . import artifacts, explain, explain_report, model_store
from .atomic import replace_text, replacing
from .config import TASK_METRICS, Config, EvaluationConfig, FeaturesConfig, metric_direction
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .error_analysis import SliceReport, slice_report
from .errors import DataError
from .errortext import typed_first_line
from .features import to_model_frame
from .tasks import Target, Task, task_for
from .tasks.base import Evaluation, Holdout, markdown_table, plot
from .tasks.labels import known_target

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
SLICES_FILE = "error_slices.csv"


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one model version on its holdout rows, and the files written."""

    version: str
    task: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    files: list[Path]


@dataclass(frozen=True)
class Insights:
    """What the report says beyond the metrics: SHAP explanations of a sample of the test rows
    (or why there are none) and the error analysis by slice."""

    slices: SliceReport
    explanation: explain.SampledExplanation | None = None
    # (explained rows, inputs): each row's values for its own output (multiclass: the class
    # predicted for it), and the inputs' values of those rows, for the plots.
    row_values: np.ndarray | None = None
    display: dict[str, explain.Display] | None = None
    missing: str | None = None  # why there is no explanation


def insights(
    pipeline: Any,
    *,
    task: Task,
    model_name: str,
    features: FeaturesConfig,
    settings: EvaluationConfig,
    seed: int,
    holdout: Holdout,
    threshold: float | None,
    target_label: str,
    importance: pd.DataFrame,
    background: pd.DataFrame,
) -> Insights:
    """Explain a seeded sample of the test rows (``holdout.inputs``, model-ready) relative to
    ``background`` (training rows), and slice the test metrics, binning the numeric inputs
    SHAP ranks highest (permutation importance when SHAP failed)."""
    sampled = row_values = display = None
    missing = None
    try:
        explainer = explain.PipelineExplainer(
            pipeline,
            task=task.name,
            features=features,
            background=background,
            model_name=model_name,
            target_label=target_label,
            seed=seed,
        )
        sampled = explain.explain_rows(
            explainer, holdout.inputs, max_rows=settings.shap_rows, seed=seed
        )
        rows = holdout.inputs.iloc[sampled.positions]
        predicted = holdout.scores[sampled.positions].argmax(axis=1) if task.is_classifier else None
        row_values = sampled.explanation.for_rows(predicted)
        display = explain.display_values(rows, features)
    except Exception as exc:  # SHAP failing must not cost the model: the report says why
        missing = typed_first_line(exc)[:300]
        sampled = row_values = display = None
        logger.warning("no SHAP explanations: %s", missing)
    ranking = (
        [str(name) for name in sampled.explanation.mean_abs().index]
        if sampled is not None
        else [str(name) for name in importance["feature"]]
    )
    slices = slice_report(
        task.name,
        holdout.inputs,
        features,
        holdout.y,
        holdout.scores,
        threshold,
        ranking=ranking,
        bins=settings.slice_bins,
        min_rows=settings.slice_min_rows,
    )
    return Insights(slices, sampled, row_values, display, missing)


def target_label(target: Target, column: str) -> str:
    """What an explanation explains, in the user's words: ``churned = 1`` (the positive
    class), or the target column."""
    if target.positive_class is not None:
        return f"{column} = {target.positive_class}"
    return column


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
    insights: Insights | None = None,
    settings: EvaluationConfig | None = None,
) -> list[Path]:
    """Write the task's plots, the importance plot, the SHAP plots and the slice table (with
    ``insights``), ``metrics.json`` and ``report.md``."""
    settings = settings or EvaluationConfig()
    reports_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_shap_plots(reports_dir)
    files = task.plots(reports_dir, y_true, scores, threshold, target)
    files.append(
        plot(
            reports_dir / "feature_importance.png",
            f"Permutation importance ({task.importance_label})",
            lambda ax: _importance_bars(ax, importance, task.importance_label),
        )
    )
    content: dict[str, Any] = {
        "version": version,
        "task": task.name,
        "classes": target.classes,
        "test": evaluation.metrics,
        "baseline": baseline,
        "cross_validation": cv_metrics,
        "details": evaluation.details,
        "permutation_importance": importance.to_dict(orient="records"),
    }
    sections = ""
    if insights is not None:
        shap_section, shap_json = _shap_outputs(reports_dir, insights, settings, files)
        content["shap"] = shap_json
        content["error_analysis"] = insights.slices.as_dict()
        slices_path = reports_dir / SLICES_FILE
        with replacing(slices_path) as partial:
            insights.slices.table().to_csv(partial, index=False)
        files.append(slices_path)
        sections = f"""
## What drives the predictions (SHAP, test rows)

{shap_section}
## Error analysis: the test metrics by slice

{insights.slices.markdown()}"""
    metrics_path = reports_dir / METRICS_FILE
    replace_text(metrics_path, json.dumps(content, indent=2, sort_keys=True) + "\n")
    report_path = reports_dir / REPORT_FILE
    replace_text(
        report_path,
        _markdown_report(
            version,
            task,
            evaluation,
            baseline,
            cv_metrics,
            importance,
            [path for path in files if path.suffix == ".png"],
            notes or [],
        )
        + sections,
    )
    return [*files, metrics_path, report_path]


def _shap_outputs(
    reports_dir: Path, insights: Insights, settings: EvaluationConfig, files: list[Path]
) -> tuple[str, dict[str, Any]]:
    """The SHAP plots (appended to ``files``), the report section and the JSON entry; when
    there is no explanation, the reason in both."""
    sampled, row_values, display = insights.explanation, insights.row_values, insights.display
    if sampled is None or row_values is None or display is None:
        reason = insights.missing or "not computed"
        return f"> No SHAP explanations: {reason}.\n", {"missing": reason}
    files.extend(
        explain_report.write_plots(
            reports_dir,
            sampled,
            row_values,
            display,
            max_features=settings.shap_max_features,
            dependence=settings.shap_dependence_plots,
        )
    )
    summary = explain_report.summary(sampled, row_values, display)
    return explain_report.markdown(sampled, summary, settings.shap_max_features), summary


def _remove_stale_shap_plots(reports_dir: Path) -> None:
    """Dependence plots are named after inputs: drop those of an earlier report, so the folder
    holds only this model's (a model SHAP cannot explain leaves no old plots either)."""
    names = [explain_report.SUMMARY_FILE, explain_report.BAR_FILE]
    stale = [reports_dir / name for name in names]
    stale += reports_dir.glob(explain_report.DEPENDENCE_FILE.format(input="*"))
    for path in stale:
        path.unlink(missing_ok=True)


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
    background = explain.load_background(model_dir, metadata.features)
    if background is None:
        notes.append(
            "This model was saved without its SHAP reference rows (trained before they "
            "existed): SHAP values are relative to a sample of its test rows."
        )
        background = explain.background_sample(features, cfg.training.seed)
    found = insights(
        pipeline,
        task=task,
        model_name=metadata.model_name,
        features=metadata.features,
        settings=cfg.evaluation,
        seed=cfg.training.seed,
        holdout=holdout,
        threshold=metadata.threshold,
        target_label=target_label(target, metadata.target),
        importance=importance,
        background=background,
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
        insights=found,
        settings=cfg.evaluation,
    )
    return EvaluationResult(
        version=metadata.version,
        task=task.name,
        metrics=evaluation.metrics,
        baseline=metadata.baseline_metrics,
        files=files,
    )
