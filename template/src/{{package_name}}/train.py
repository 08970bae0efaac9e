"""Training: extract -> validate -> split -> cross-validate -> tune threshold (binary) -> fit ->
evaluate against a baseline -> quality gate -> export and check ONNX -> publish a versioned
artifact -> track in MLflow. The same steps for every task; what differs lives in ``tasks/``.

Validation, the quality gate and every check run *before* anything is written to the models
directory, so bad data or a bad model leaves the currently served model untouched.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from . import artifacts, evaluate, explain, model_store, onnx_export, tracking
from .config import Config
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .errors import DataError, ModelQualityError, TrackingError
from .features import check_trainable, frequent_categories, raw_columns, to_model_frame
from .model import build_pipeline, fit_pipeline
from .model_store import git_commit
from .tasks import Task, task_for
from .tasks.base import Holdout

logger = logging.getLogger(__name__)

# Estimators from their own library (module name = model name): recorded in the metadata.
BOOSTING_LIBRARIES = ("lightgbm", "xgboost")


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced."""

    version: str
    model_dir: Path
    task: str
    threshold: float | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    cv_metrics: dict[str, float]
    report_files: list[Path]
    run_id: str | None


def data_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the training table's content (row order and column names included)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split_rows(
    data: pd.DataFrame, y: np.ndarray, cfg: Config, task: Task
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and test rows.

    ``training.split: random`` draws the test rows at random (stratified by class for
    classification); ``time`` holds out the latest rows by ``training.order_column``, which is
    what a model meets in production: the future.
    """
    positions = np.arange(len(data))
    if cfg.training.split == "time":
        column = str(cfg.training.order_column)
        order = data[column]
        if order.isna().any():
            raise DataError(
                f"training.order_column {column} is missing in {int(order.isna().sum())} rows: "
                "a time split needs every row's time"
            )
        ordered = positions[np.argsort(order.to_numpy(), kind="stable")]
        n_test = max(1, int(np.ceil(cfg.training.test_size * len(data))))
        return ordered[:-n_test], ordered[-n_test:]
    train_rows, test_rows = train_test_split(
        positions,
        test_size=cfg.training.test_size,
        stratify=y if task.is_classifier else None,
        random_state=cfg.training.seed,
    )
    return np.asarray(train_rows), np.asarray(test_rows)


def cross_validate_oof(
    pipeline: Pipeline, task: Task, features: pd.DataFrame, y: np.ndarray, cfg: Config
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Out-of-fold scores (for threshold tuning), which rows have one, and the mean and
    standard deviation of the task's fold metrics.

    With a time split, each fold is scored by a model fitted on the rows before it only, so
    the first block of rows has no out-of-fold score.
    """
    ordered = cfg.training.split == "time"
    splitter = task.splitter(cfg.training.cv_folds, cfg.training.seed, ordered)
    oof: np.ndarray | None = None
    scored = np.zeros(len(y), dtype=bool)
    folds: dict[str, list[float]] = {name: [] for name in task.cv_metrics}
    for fit_idx, val_idx in splitter.split(features, y):
        fold_model = fit_pipeline(
            clone(pipeline), features.iloc[fit_idx], y[fit_idx], cfg.model.class_weight
        )
        fold_scores = task.scores(fold_model, features.iloc[val_idx])
        if fold_scores.ndim == 2 and fold_scores.shape[1] < _width(task, y):
            raise DataError(
                "a time-ordered cross-validation fold was trained without every class: "
                "rare classes appear late in the data; use training.split: random or fewer "
                "training.cv_folds"
            )
        if oof is None:
            oof = np.zeros((len(y), *fold_scores.shape[1:]), dtype=float)
        oof[val_idx] = fold_scores
        scored[val_idx] = True
        fold = task.metrics(y[val_idx], fold_scores, None)
        for name in task.cv_metrics:
            folds[name].append(fold[name])
    summary: dict[str, float] = {}
    for name, values in folds.items():
        summary[f"cv_{name}_mean"] = float(np.mean(values))
        summary[f"cv_{name}_std"] = float(np.std(values))
    assert oof is not None  # at least two folds
    return oof, scored, summary


def _width(task: Task, y: np.ndarray) -> int:
    return int(y.max()) + 1 if task.is_classifier else 1


def check_gate(cfg: Config, metrics: dict[str, float], baseline: dict[str, float]) -> None:
    """Refuse to publish a model below the quality gate (above, for lower-is-better)."""
    gate = cfg.gate
    value = metrics.get(gate.metric)
    if value is None:
        raise ModelQualityError(
            f"the quality gate's metric {gate.metric} is undefined on the test rows (MAPE needs "
            "non-zero actual values): gate on another metric; the model was not published"
        )
    failed = (gate.min is not None and value < gate.min) or (
        gate.max is not None and value > gate.max
    )
    if failed:
        bound = f"min {gate.min}" if gate.min is not None else f"max {gate.max}"
        base = baseline.get(gate.metric)
        versus = f" (baseline {base:.4f})" if base is not None else ""
        raise ModelQualityError(
            f"test {gate.metric} {value:.4f}{versus} fails training.gate {bound}: "
            "the model was not published"
        )


def train(cfg: Config, frame: pd.DataFrame | None = None) -> TrainResult:
    """Run the whole training pipeline; ``frame`` replaces the SQL extract (tests, notebooks)."""
    raw = extract_training_frame(cfg) if frame is None else frame
    source = "the training frame" if frame is not None else str(cfg.data.query)
    return train_validated(cfg, validate_frame(raw, cfg, source=source), source)


def train_validated(cfg: Config, data: pd.DataFrame, source: str) -> TrainResult:
    """The training pipeline on a table ``validate_frame`` already checked (read from
    ``source``): for callers that use the same rows again (the MLOps registration and gate)."""
    task = task_for(cfg.task)
    target = task.target(data[cfg.data.target], cfg, source)
    fingerprint = data_fingerprint(data)
    features = to_model_frame(data, cfg.features)
    y = target.y
    ids = data[cfg.data.id_column].to_numpy()
    logger.info("training %s on %d rows", task.name.replace("_", " "), len(y))

    train_rows, test_rows = split_rows(data, y, cfg, task)
    x_train, x_test = features.iloc[train_rows], features.iloc[test_rows]
    y_train, y_test = y[train_rows], y[test_rows]
    ids_test = ids[test_rows]
    check_trainable(x_train, cfg.features, source)
    pipeline = build_pipeline(cfg, frequent_categories(x_train, cfg.features))
    oof, scored, cv_metrics = cross_validate_oof(pipeline, task, x_train, y_train, cfg)
    threshold = task.tune_threshold(y_train[scored], oof[scored], cfg.training.threshold_metric)
    fit_pipeline(pipeline, x_train, y_train, cfg.model.class_weight)
    scores = task.scores(pipeline, x_test)
    evaluation = task.evaluation(Holdout(y_test, scores, x_test, ids_test), target, threshold)
    metrics = evaluation.metrics
    baseline = task.metrics(y_test, task.baseline_scores(y_train, len(y_test)), None)
    check_gate(cfg, metrics, baseline)

    # Export and check before anything is written: the service scores with this graph.
    onnx_model = onnx_export.export_pipeline(pipeline, cfg.features)
    parity = onnx_export.check_parity(
        onnx_model, pipeline, x_test, cfg.features, task=task, threshold=threshold
    )
    logger.info(
        "ONNX export matches scikit-learn on %d rows (max |diff| %.1e)",
        parity.rows,
        parity.max_abs_diff,
    )

    version = model_store.new_version(fingerprint)
    importance = evaluate.importance_table(
        pipeline, x_test, y_test, task, cfg.evaluation.permutation_repeats, cfg.training.seed
    )
    # The explanations' reference rows, saved with the model for predict --explain.
    background = explain.background_sample(x_train, cfg.training.seed)
    insights = evaluate.insights(
        pipeline,
        task=task,
        model_name=cfg.model.name,
        features=cfg.features,
        settings=cfg.evaluation,
        seed=cfg.training.seed,
        holdout=Holdout(y_test, scores, x_test, ids_test),
        threshold=threshold,
        target_label=evaluate.target_label(target, cfg.data.target),
        importance=importance,
        background=background,
    )
    report_files = evaluate.write_reports(
        cfg.paths.reports_dir,
        version=version,
        task=task,
        target=target,
        evaluation=evaluation,
        baseline=baseline,
        cv_metrics=cv_metrics,
        y_true=y_test,
        scores=scores,
        threshold=threshold,
        importance=importance,
        insights=insights,
        settings=cfg.evaluation,
    )
    commit = git_commit()
    input_example = _input_example(data.iloc[test_rows], cfg)

    def write(model_dir: Path) -> None:
        sha = artifacts.save_pipeline(pipeline, model_dir)
        (model_dir / artifacts.ONNX_FILE).write_bytes(onnx_model)
        explain.save_background(background, model_dir)
        model_store.write_json(model_dir / artifacts.HOLDOUT_FILE, sorted(ids_test.tolist()))
        model_store.write_metadata(
            model_dir,
            artifacts.ModelMetadata(
                version=version,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                project=cfg.project,
                task=cfg.task,
                model_name=cfg.model.name,
                model_params={
                    k: repr(v) for k, v in pipeline.named_steps["model"].get_params().items()
                },
                target=cfg.data.target,
                id_column=cfg.data.id_column,
                classes=target.classes,
                positive_class=target.positive_class,
                threshold=threshold,
                metrics=metrics,
                baseline_metrics=baseline,
                cv_metrics=cv_metrics,
                features=cfg.features,
                input_example=input_example,
                data_fingerprint=fingerprint,
                n_train_rows=len(y_train),
                n_test_rows=len(y_test),
                git_commit=commit,
                library_versions=library_versions(cfg.model.name),
                artifact_sha256=sha,
                onnx_sha256=model_store.sha256_file(model_dir / artifacts.ONNX_FILE),
                onnx_parity=parity.as_dict(),
            ),
        )

    model_dir = model_store.publish(cfg.paths.models_dir, version, write)
    logger.info("published model %s to %s", version, model_dir)

    # The model is published before tracking: a tracker outage must not block a good model,
    # and the error below names the published version so the run can be logged again.
    run_id = None
    if cfg.tracking.enabled:
        try:
            run_id = tracking.log_training_run(
                cfg.tracking,
                run_name=version,
                params={
                    "task": task.name,
                    "model": cfg.model.name,
                    "split": cfg.training.split,
                    "threshold_metric": cfg.training.threshold_metric,
                    "cv_folds": cfg.training.cv_folds,
                    "test_size": cfg.training.test_size,
                    "seed": cfg.training.seed,
                    "features": ",".join(cfg.features.names),
                    **{f"model.{k}": v for k, v in cfg.model.params.items()},
                },
                metrics={
                    **{f"test_{k}": v for k, v in metrics.items()},
                    **{f"baseline_{k}": v for k, v in baseline.items()},
                    **cv_metrics,
                    "onnx_max_abs_diff": parity.max_abs_diff,
                    "onnx_label_flips": float(parity.label_flips),
                },
                tags={
                    "model_version": version,
                    "data_fingerprint": fingerprint,
                    "git_commit": commit or "unknown",
                    "onnx_parity": "passed",
                },
                artifact_paths=[
                    *report_files,
                    model_dir / model_store.METADATA_FILE,
                    model_dir / artifacts.ONNX_FILE,
                ],
                model=pipeline,
                input_example=x_test.head(3),
            )
        except TrackingError as exc:
            raise TrackingError(f"model {version} was published, but {exc}") from exc
    return TrainResult(
        version=version,
        model_dir=model_dir,
        task=task.name,
        threshold=threshold,
        metrics=metrics,
        baseline_metrics=baseline,
        cv_metrics=cv_metrics,
        report_files=report_files,
        run_id=run_id,
    )


def library_versions(model_name: str) -> dict[str, str]:
    """The versions that produced the model: Python, scikit-learn, pandas, NumPy, and the
    boosting library when the estimator comes from one (a model is only reproducible, and its
    file only loadable, with a compatible version)."""
    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }
    if model_name in BOOSTING_LIBRARIES:
        module = importlib.import_module(model_name)
        versions[model_name] = str(module.__version__)
    return versions


def _input_example(rows: pd.DataFrame, cfg: Config) -> dict[str, object]:
    """One real test record as JSON-ready raw values, typed as the API expects them."""
    complete = rows[cfg.features.names].dropna()
    row = (complete if not complete.empty else rows).iloc[[0]]
    columns = raw_columns(row, cfg.features)
    example: dict[str, object] = {}
    for feature in cfg.features.numeric:
        value = columns[feature.name][0]
        if np.isnan(value):
            example[feature.name] = None
        else:
            example[feature.name] = int(value) if feature.dtype == "int" else float(value)
    for boolean in cfg.features.boolean:
        value = columns[boolean.name][0]
        example[boolean.name] = None if np.isnan(value) else bool(value)
    for stamp in cfg.features.datetime:
        value = columns[stamp.name][0]
        example[stamp.name] = None if np.isnat(value) else f"{value}Z"
    for name in [f.name for f in cfg.features.categorical] + [f.name for f in cfg.features.text]:
        value = columns[name][0]
        example[name] = None if value is None else str(value)
    return {name: example[name] for name in cfg.features.names}
