"""Training: extract -> validate -> split -> cross-validate -> tune threshold -> fit -> evaluate
-> publish a versioned artifact -> track in MLflow.

Validation, the quality gate and every check run *before* anything is written to the models
directory, so bad data or a bad model leaves the currently served model untouched.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from . import artifacts, evaluate, onnx_export, tracking
from .config import Config
from .data.extract import extract_training_frame
from .data.validate import validate_frame
from .errors import ModelQualityError, TrackingError
from .features import to_model_frame
from .model import build_pipeline
from .versioning import git_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What one training run produced."""

    version: str
    model_dir: Path
    threshold: float
    metrics: dict[str, float]
    cv_metrics: dict[str, float]
    report_files: list[Path]
    run_id: str | None


def data_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the training table's content (row order and column names included)."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def cross_validate_oof(
    pipeline: Pipeline, features: pd.DataFrame, y: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Out-of-fold probabilities (for threshold tuning) and per-fold ROC/PR-AUC summaries."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = np.zeros(len(y), dtype=float)
    roc, pr = [], []
    for fit_idx, val_idx in splitter.split(features, y):
        fold_model = clone(pipeline).fit(features.iloc[fit_idx], y[fit_idx])
        oof[val_idx] = fold_model.predict_proba(features.iloc[val_idx])[:, 1]
        fold = evaluate.classification_metrics(y[val_idx], oof[val_idx], 0.5)
        roc.append(fold["roc_auc"])
        pr.append(fold["pr_auc"])
    summary = {
        "cv_roc_auc_mean": float(np.mean(roc)),
        "cv_roc_auc_std": float(np.std(roc)),
        "cv_pr_auc_mean": float(np.mean(pr)),
        "cv_pr_auc_std": float(np.std(pr)),
    }
    return oof, summary


def train(cfg: Config, frame: pd.DataFrame | None = None) -> TrainResult:
    """Run the whole training pipeline; ``frame`` replaces the SQL extract (tests, notebooks)."""
    raw = extract_training_frame(cfg) if frame is None else frame
    source = "the training frame" if frame is not None else str(cfg.data.query)
    data = validate_frame(raw, cfg, source=source)
    fingerprint = data_fingerprint(data)
    features = to_model_frame(data, cfg.features)
    y = data[cfg.data.target].to_numpy()
    ids = data[cfg.data.id_column].to_numpy()
    logger.info("training on %d rows, positive rate %.3f", len(y), y.mean())

    x_train, x_test, y_train, y_test, _, ids_test = train_test_split(
        features,
        y,
        ids,
        test_size=cfg.training.test_size,
        stratify=y,
        random_state=cfg.training.seed,
    )
    pipeline = build_pipeline(cfg)
    oof, cv_metrics = cross_validate_oof(
        pipeline, x_train, y_train, cfg.training.cv_folds, cfg.training.seed
    )
    threshold = evaluate.tune_threshold(y_train, oof, cfg.training.threshold_metric)
    pipeline.fit(x_train, y_train)
    probability = pipeline.predict_proba(x_test)[:, 1]
    metrics = evaluate.classification_metrics(y_test, probability, threshold)
    if metrics["roc_auc"] < cfg.training.min_test_roc_auc:
        raise ModelQualityError(
            f"test ROC-AUC {metrics['roc_auc']:.3f} is below training.min_test_roc_auc "
            f"{cfg.training.min_test_roc_auc}: the model was not published"
        )

    # Export and check before anything is written: the service scores with this graph.
    onnx_model = onnx_export.export_pipeline(pipeline, cfg.features)
    parity = onnx_export.check_parity(onnx_model, pipeline, x_test, cfg.features, threshold)
    logger.info(
        "ONNX export matches scikit-learn on %d rows (max |diff| %.1e)",
        parity.rows,
        parity.max_abs_diff,
    )

    version = artifacts.new_version(fingerprint)
    importance = evaluate.importance_table(
        pipeline, x_test, y_test, cfg.evaluation.permutation_repeats, cfg.training.seed
    )
    report_files = evaluate.write_reports(
        cfg.paths.reports_dir,
        version=version,
        metrics=metrics,
        cv_metrics=cv_metrics,
        y_true=y_test,
        probability=probability,
        importance=importance,
    )
    commit = git_commit()
    input_example = _input_example(x_test, cfg)

    def write(model_dir: Path) -> None:
        sha = artifacts.save_pipeline(pipeline, model_dir)
        (model_dir / artifacts.ONNX_FILE).write_bytes(onnx_model)
        artifacts.write_json(model_dir / artifacts.HOLDOUT_FILE, sorted(ids_test.tolist()))
        artifacts.write_metadata(
            model_dir,
            artifacts.ModelMetadata(
                version=version,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                project=cfg.project,
                model_name=cfg.model.name,
                model_params={
                    k: repr(v) for k, v in pipeline.named_steps["model"].get_params().items()
                },
                target=cfg.data.target,
                id_column=cfg.data.id_column,
                threshold=threshold,
                metrics=metrics,
                cv_metrics=cv_metrics,
                features=cfg.features,
                input_example=input_example,
                data_fingerprint=fingerprint,
                n_train_rows=len(y_train),
                n_test_rows=len(y_test),
                git_commit=commit,
                library_versions={
                    "python": platform.python_version(),
                    "scikit-learn": sklearn.__version__,
                    "pandas": pd.__version__,
                    "numpy": np.__version__,
                },
                artifact_sha256=sha,
                onnx_sha256=artifacts.sha256_file(model_dir / artifacts.ONNX_FILE),
                onnx_parity=parity.as_dict(),
            ),
        )

    model_dir = artifacts.publish(cfg.paths.models_dir, version, write)
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
                    "model": cfg.model.name,
                    "threshold_metric": cfg.training.threshold_metric,
                    "cv_folds": cfg.training.cv_folds,
                    "test_size": cfg.training.test_size,
                    "seed": cfg.training.seed,
                    "features": ",".join(cfg.features.names),
                    **{f"model.{k}": v for k, v in cfg.model.params.items()},
                },
                metrics={
                    **{f"test_{k}": v for k, v in metrics.items()},
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
                    model_dir / artifacts.METADATA_FILE,
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
        threshold=threshold,
        metrics=metrics,
        cv_metrics=cv_metrics,
        report_files=report_files,
        run_id=run_id,
    )


def _input_example(features: pd.DataFrame, cfg: Config) -> dict[str, object]:
    """One real test record as JSON-ready values, typed as the API expects them."""
    complete = features.dropna()
    row = (complete if not complete.empty else features).iloc[0]
    example: dict[str, object] = {}
    for feature in cfg.features.numeric:
        value = row[feature.name]
        if pd.isna(value):
            example[feature.name] = None
        else:
            example[feature.name] = int(value) if feature.dtype == "int" else float(value)
    for categorical in cfg.features.categorical:
        value = row[categorical.name]
        example[categorical.name] = None if pd.isna(value) else str(value)
    return example
