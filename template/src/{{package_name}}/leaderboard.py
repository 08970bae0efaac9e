"""The leaderboard (``tune --compare``): every candidate estimator with its best known
parameters under the same cross-validation, so the model choice cites measured numbers.

For each estimator of ``tuning.compare`` (default: every estimator of the task) the parameters
are the best trial of its study in ``tuning.storage`` when there is one, else the shipped
defaults (plus ``model.params`` for the configured estimator). Each is cross-validated on the
training split exactly as ``tune`` and ``train`` do, then fitted on the whole training split,
exported to ONNX (with the parity check ``train`` applies) and timed scoring one row through
ONNX Runtime, as the service does. An estimator that fails at any step is a row with the
reason, not a crash: the other rows still answer the question.
"""

from __future__ import annotations

import io
import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import clone

from . import onnx_export, tracking
from .atomic import replace_text
from .config import TASK_MODELS, Config, metric_direction
from .errors import ProjectError
from .errortext import first_line, typed_first_line
from .model import build_pipeline, fit_pipeline
from .scoring import OnnxScorer
from .tasks import task_for
from .tasks.base import markdown_table
from .tune import (
    TrainingSplit,
    cross_validate,
    cv_summary,
    open_storage,
    shown_storage,
    storage_exists,
    study_name_for,
    training_split,
    trial_params,
    tuning_metric,
    with_model,
)

logger = logging.getLogger(__name__)

MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
# Single-row scoring calls timed per estimator (after one warm-up call); the median is reported.
LATENCY_CALLS = 200
# Training rows the ONNX export is compared on (the same check `train` runs on its test rows).
PARITY_ROWS = 500


@dataclass(frozen=True)
class Entry:
    """One leaderboard row: an estimator, where its parameters come from, and what it
    measured (or why it could not be measured)."""

    estimator: str
    source: str
    params: dict[str, Any]
    cv: dict[str, float] = field(default_factory=dict)
    fit_seconds: float | None = None
    latency_ms: float | None = None
    onnx_bytes: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Leaderboard:
    """The ranked rows (best first; failures last), the files written and the MLflow run."""

    task: str
    metric: str
    direction: str
    rows: int
    entries: list[Entry]
    files: list[Path]
    run_id: str | None

    def table(self) -> str:
        """The leaderboard as a Markdown table (also what the command prints)."""
        return markdown_table(
            [
                "rank",
                "estimator",
                f"cv {self.metric} (mean ± std)",
                "fit s",
                "ONNX 1-row ms",
                "ONNX KB",
                "parameters from",
            ],
            [_cells(rank, entry, self.metric) for rank, entry in enumerate(self.entries, 1)],
        )


def estimators_of(cfg: Config) -> list[str]:
    """The estimators the leaderboard fits: ``tuning.compare``, or every one of the task."""
    return list(cfg.tuning.compare) or list(TASK_MODELS[cfg.task])


def best_known_params(cfg: Config, name: str, metric: str) -> tuple[dict[str, Any], str]:
    """The parameters the leaderboard fits ``name`` with, and where they come from: the best
    trial of its study (made for the same metric), else the shipped defaults (and
    ``model.params`` for the configured estimator)."""
    import optuna

    configured = dict(cfg.model.params) if name == cfg.model.name else {}
    fallback = "defaults + model.params" if configured else "shipped defaults"
    if not storage_exists(cfg.tuning.storage):
        return configured, fallback
    study_name = study_name_for(cfg, name)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(cfg.tuning.storage))
    except KeyError:  # no such study
        return configured, fallback
    if study.user_attrs.get("metric") != metric:
        return configured, f"{fallback} (study {study_name} tunes another metric)"
    try:
        best = study.best_trial
    except ValueError:  # no complete trial
        return configured, fallback
    return trial_params(best, configured), f"study {study_name}, trial {best.number}"


def measure(cfg: Config, name: str, split: TrainingSplit, metric: str) -> Entry:
    """Cross-validate, fit, export, check and time one estimator; any failure is the row's
    error."""
    task = task_for(cfg.task)
    params, source = best_known_params(cfg, name, metric)
    try:
        candidate = with_model(cfg, name, params)
        pipeline = build_pipeline(candidate, split.frequent)
        cv = cv_summary(cross_validate(pipeline, task, split.x, split.y, candidate))
        started = time.perf_counter()
        fitted = fit_pipeline(clone(pipeline), split.x, split.y, cfg.model.class_weight)
        fit_seconds = time.perf_counter() - started
        graph = onnx_export.export_pipeline(fitted, cfg.features)
        onnx_export.check_parity(
            graph,
            fitted,
            split.x.iloc[:PARITY_ROWS],
            cfg.features,
            task=task,
            threshold=None,
        )
        latency = _latency_ms(OnnxScorer(graph, cfg.features), split.x.iloc[[0]])
    except ProjectError as exc:
        logger.warning("leaderboard: %s failed: %s", name, first_line(exc))
        return Entry(name, source, params, error=first_line(exc))
    except Exception as exc:  # the estimator or a converter failing is a row, not a crash
        logger.warning("leaderboard: %s failed: %s", name, typed_first_line(exc))
        return Entry(name, source, params, error=typed_first_line(exc))
    logger.info(
        "leaderboard: %s cv %s %.4f, fit %.2fs, %.3f ms per row",
        name,
        metric,
        cv[f"cv_{metric}_mean"],
        fit_seconds,
        latency,
    )
    return Entry(name, source, params, cv, fit_seconds, latency, len(graph))


def _latency_ms(scorer: OnnxScorer, row: pd.DataFrame) -> float:
    """Median time to score one row through ONNX Runtime, in milliseconds."""
    scorer.predict_model_columns(row)  # warm-up
    timings = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        scorer.predict_model_columns(row)
        timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings)


def compare(cfg: Config, frame: pd.DataFrame | None = None) -> Leaderboard:
    """Measure every estimator of ``tuning.compare``, write ``reports/leaderboard.md`` and
    ``.csv`` and log them to MLflow (one run)."""
    metric = tuning_metric(cfg)
    direction = metric_direction(cfg.task, metric)
    names = estimators_of(cfg)
    if storage_exists(cfg.tuning.storage):
        open_storage(cfg.tuning.storage)  # an unreachable storage is an error, not "no study"
    split = training_split(cfg, frame)
    logger.info(
        "leaderboard: %s on %d training rows, %d-fold cv %s",
        ", ".join(names),
        len(split.y),
        cfg.training.cv_folds,
        metric,
    )
    entries = [measure(cfg, name, split, metric) for name in names]
    key = f"cv_{metric}_mean"
    sign = -1.0 if direction == "max" else 1.0
    entries.sort(key=lambda e: (e.error is not None, sign * e.cv[key] if e.cv else 0.0))
    board = Leaderboard(cfg.task, metric, direction, len(split.y), entries, [], None)
    files = _write(board, cfg)
    run_id = None
    if cfg.tracking.enabled:
        run_id = tracking.log_run(
            cfg.tracking,
            run_name="leaderboard",
            params={
                "task": cfg.task,
                "metric": metric,
                "estimators": ",".join(names),
                "cv_folds": cfg.training.cv_folds,
                "training_rows": len(split.y),
                "storage": shown_storage(cfg.tuning.storage),
            },
            metrics=_run_metrics(entries),
            tags={
                "command": "tune --compare",
                "leader": next((e.estimator for e in entries if e.error is None), "none"),
            },
            artifact_paths=files,
        )
    return Leaderboard(cfg.task, metric, direction, len(split.y), entries, files, run_id)


def _run_metrics(entries: list[Entry]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for entry in entries:
        for key, value in entry.cv.items():
            metrics[f"{entry.estimator}.{key}"] = value
        if entry.fit_seconds is not None:
            metrics[f"{entry.estimator}.fit_seconds"] = entry.fit_seconds
        if entry.latency_ms is not None:
            metrics[f"{entry.estimator}.onnx_latency_ms"] = entry.latency_ms
        if entry.onnx_bytes is not None:
            metrics[f"{entry.estimator}.onnx_bytes"] = float(entry.onnx_bytes)
    return metrics


def _cells(rank: int, entry: Entry, metric: str) -> list[str]:
    if entry.error is not None:
        return [
            "-",
            entry.estimator,
            f"failed: {entry.error}".replace("|", "/"),
            "",
            "",
            "",
            entry.source,
        ]
    mean, std = entry.cv[f"cv_{metric}_mean"], entry.cv[f"cv_{metric}_std"]
    return [
        str(rank),
        entry.estimator,
        f"{mean:.4f} ± {std:.4f}",
        f"{entry.fit_seconds:.2f}",
        f"{entry.latency_ms:.3f}",
        f"{(entry.onnx_bytes or 0) / 1024:.0f}",
        entry.source,
    ]


def _write(board: Leaderboard, cfg: Config) -> list[Path]:
    reports = cfg.paths.reports_dir
    better = "higher" if board.direction == "max" else "lower"
    markdown = "\n".join(
        [
            "# Leaderboard",
            "",
            f"{board.task.replace('_', ' ')}: {cfg.training.cv_folds}-fold cross-validation "
            f"{board.metric} ({better} is better) on the {board.rows} training rows (the test "
            "rows stay unseen), each estimator with its best known parameters. Fit time: one "
            "fit on every training row. Latency: median time to score one row through ONNX "
            f"Runtime ({LATENCY_CALLS} calls), as the service does. Size: the exported ONNX "
            "model.",
            "",
            board.table(),
            "",
            "## Parameters",
            "",
            *[
                f"- {entry.estimator}: `{json.dumps(entry.params, sort_keys=True)}`"
                for entry in board.entries
            ],
            "",
        ]
    )
    rows = []
    for rank, entry in enumerate(board.entries, 1):
        rows.append(
            {
                "rank": rank if entry.error is None else None,
                "estimator": entry.estimator,
                "metric": board.metric,
                "cv_mean": entry.cv.get(f"cv_{board.metric}_mean"),
                "cv_std": entry.cv.get(f"cv_{board.metric}_std"),
                "fit_seconds": entry.fit_seconds,
                "onnx_latency_ms": entry.latency_ms,
                "onnx_bytes": entry.onnx_bytes,
                **entry.cv,
                "params": json.dumps(entry.params, sort_keys=True),
                "params_from": entry.source,
                "error": entry.error,
            }
        )
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    markdown_path, csv_path = reports / MARKDOWN_FILE, reports / CSV_FILE
    replace_text(markdown_path, markdown)
    replace_text(csv_path, buffer.getvalue())
    return [markdown_path, csv_path]
