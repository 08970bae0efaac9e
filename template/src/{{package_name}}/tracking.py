"""MLflow tracking: an embedded SQLite store by default, a tracking server when configured.

``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) selects the store: ``sqlite:///mlflow.db`` needs no
server; ``http://mlflow:5000`` logs to a team server. MLflow is imported only when a run is
logged: it costs seconds to import and the service never needs it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrackingConfig
from .errors import TrackingError
from .errortext import first_line
from .mlflow_experiment import ensure_experiment

logger = logging.getLogger(__name__)


def log_training_run(
    cfg: TrackingConfig,
    *,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    artifact_paths: list[Path],
    model: Any,
    input_example: Any,
) -> str:
    """Log one training run with its model; return the MLflow run id.

    Any MLflow failure (server down, bad URI, store not writable) becomes a ``TrackingError``
    with the URI in the message, instead of a traceback from deep inside MLflow.
    """
    with _started_run(cfg, run_name) as (mlflow, _experiment_id, run):
        import mlflow.sklearn

        _log_values(mlflow, params, metrics, tags)
        for path in artifact_paths:
            mlflow.log_artifact(str(path), artifact_path="reports")
        mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=_trusted_types(model),
            input_example=input_example,
        )
        return str(run.info.run_id)


@dataclass(frozen=True)
class ChildRun:
    """One nested run under a parent (a tuning trial): ``steps`` are metric series by step
    (a trial's running CV mean after each fold); ``status`` is MLflow's end status (FINISHED,
    KILLED for a pruned trial, FAILED)."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    steps: dict[str, dict[int, float]] = field(default_factory=dict)
    status: str = "FINISHED"


def log_run(
    cfg: TrackingConfig,
    *,
    run_name: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    artifact_paths: Sequence[Path] = (),
    children: Sequence[ChildRun] = (),
) -> str:
    """Log one run without a model (a tuning study, a leaderboard), with ``children`` as its
    nested runs; return its run id. MLflow failures become a ``TrackingError``, as above."""
    with _started_run(cfg, run_name) as (mlflow, experiment_id, run):
        _log_values(mlflow, params, metrics, tags)
        for path in artifact_paths:
            mlflow.log_artifact(str(path), artifact_path="reports")
        for child in children:
            # Not a `with` block: the child ends with its own status (KILLED, FAILED).
            mlflow.start_run(experiment_id=experiment_id, run_name=child.name, nested=True)
            try:
                _log_values(mlflow, child.params, child.metrics, child.tags)
                for key, series in child.steps.items():
                    for step, value in sorted(series.items()):
                        mlflow.log_metric(key, value, step=step)
            except BaseException:
                mlflow.end_run(status="FAILED")
                raise
            mlflow.end_run(status=child.status)
        return str(run.info.run_id)


@contextmanager
def _started_run(cfg: TrackingConfig, run_name: str) -> Iterator[tuple[Any, str, Any]]:
    """A run started in the configured store's experiment: yields (mlflow, experiment id, run).
    Any MLflow failure inside (server down, bad URI, store not writable) becomes a
    ``TrackingError`` with the URI in the message, instead of a traceback from deep in MLflow."""
    try:
        import mlflow

        mlflow.set_tracking_uri(cfg.uri)
        experiment_id = ensure_experiment(mlflow, cfg)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            yield mlflow, experiment_id, run
    except Exception as exc:
        raise TrackingError(
            f"could not log the run to MLflow at {cfg.uri}: {first_line(exc)} "
            "(fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled: false)"
        ) from exc


def _log_values(
    mlflow: Any, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]
) -> None:
    mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
    mlflow.log_metrics({key: value for key, value in metrics.items() if not math.isnan(value)})
    mlflow.set_tags(tags)


def _trusted_types(model: Any) -> list[str]:
    import skops.io as sio

    return list(sio.get_untrusted_types(data=sio.dumps(model)))
