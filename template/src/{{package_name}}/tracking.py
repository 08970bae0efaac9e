"""MLflow tracking: an embedded SQLite store by default, a tracking server when configured.

``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) selects the store: ``sqlite:///mlflow.db`` needs no
server; ``http://mlflow:5000`` logs to a team server. MLflow is imported only when a run is
logged: it costs seconds to import and the service never needs it.
"""

from __future__ import annotations

import logging
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
    try:
        import mlflow
        import mlflow.sklearn

        mlflow.set_tracking_uri(cfg.uri)
        experiment_id = ensure_experiment(mlflow, cfg)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
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
    except Exception as exc:
        raise TrackingError(
            f"could not log the run to MLflow at {cfg.uri}: {first_line(exc)} "
            "(fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled: false)"
        ) from exc


def _trusted_types(model: Any) -> list[str]:
    import skops.io as sio

    return list(sio.get_untrusted_types(data=sio.dumps(model)))
