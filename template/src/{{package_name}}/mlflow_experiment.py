"""The MLflow experiment every project type's ``tracking`` logs its runs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config_base import TrackingConfig


def ensure_experiment(store: Any, cfg: TrackingConfig) -> str:
    """The id of the experiment ``cfg.experiment``, created on first use.

    ``store`` is the ``mlflow`` module or an ``MlflowClient``: both have these two methods.
    """
    experiment = store.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    # A local store keeps artifacts under the configured folder; a server decides for itself.
    location = None
    if cfg.uri.startswith(("sqlite:", "file:")) or "://" not in cfg.uri:
        location = Path(cfg.artifact_location).resolve().as_uri()
    return str(store.create_experiment(cfg.experiment, artifact_location=location))
