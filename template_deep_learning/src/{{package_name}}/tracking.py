"""MLflow tracking: an embedded SQLite store by default, a tracking server when configured.

``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) selects the store: ``sqlite:///mlflow.db`` needs no
server; ``http://mlflow:5000`` logs to a team server. A ``TrackedRun`` wraps one MLflow run
through ``MlflowClient`` (no global "active run"), so training can log metrics every epoch and
``train --resume`` can reopen the run its checkpoint names. MLflow is imported only when a run
is opened: it costs seconds to import and the service never needs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config_base import TrackingConfig
from .errors import TrackingError
from .mlflow_experiment import ensure_experiment

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 500


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class TrackedRun:
    """One MLflow run, or a no-op stand-in when tracking is disabled (``run_id`` is None).

    Every MLflow failure (server down, bad URI, store not writable) becomes a
    ``TrackingError`` naming the URI, instead of a traceback from deep inside MLflow.
    """

    def __init__(self, cfg: TrackingConfig, client: Any = None, run_id: str | None = None) -> None:
        self.cfg = cfg
        self._client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._client is None:
            return
        from mlflow.entities import Param

        entries = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(params.items())]
        self._call("log params", lambda c: c.log_batch(self.run_id, params=entries))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [
            Metric(k, float(v), now, step if step is not None else 0)
            for k, v in sorted(metrics.items())
        ]
        self._call("log metrics", lambda c: c.log_batch(self.run_id, metrics=entries))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._client is None:
            return
        from mlflow.entities import RunTag

        entries = [RunTag(k, str(v)) for k, v in sorted(tags.items())]
        self._call("set tags", lambda c: c.log_batch(self.run_id, tags=entries))

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str) -> None:
        for path in paths:
            self._call(
                f"log {path.name}",
                lambda c, p=path: c.log_artifact(self.run_id, str(p), artifact_path),
            )

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED, FAILED or KILLED."""
        self._call("end the run", lambda c: c.set_terminated(self.run_id, status=status))

    def _call(self, what: str, action: Any) -> None:
        if self._client is None:
            return
        try:
            action(self._client)
        except Exception as exc:
            raise _tracking_error(self.cfg, f"could not {what}", exc) from exc


def open_run(cfg: TrackingConfig, *, run_name: str, resume_run_id: str | None = None) -> TrackedRun:
    """Start a new run, or reopen ``resume_run_id`` (``train --resume``) and keep logging to it.

    With ``tracking.enabled: false`` this returns a run that logs nothing.
    """
    if not cfg.enabled:
        return TrackedRun(cfg)
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=cfg.uri)
        if resume_run_id is not None:
            client.get_run(resume_run_id)  # fails clearly if the store does not have it
            client.update_run(resume_run_id, status="RUNNING")
            logger.info("resuming MLflow run %s at %s", resume_run_id, cfg.uri)
            return TrackedRun(cfg, client, resume_run_id)
        run = client.create_run(ensure_experiment(client, cfg), run_name=run_name)
    except Exception as exc:
        what = f"could not reopen run {resume_run_id}" if resume_run_id else "could not start a run"
        raise _tracking_error(cfg, what, exc) from exc
    logger.info("MLflow run %s at %s", run.info.run_id, cfg.uri)
    return TrackedRun(cfg, client, str(run.info.run_id))


def _tracking_error(cfg: TrackingConfig, what: str, exc: Exception) -> TrackingError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return TrackingError(
        f"{what} in MLflow at {cfg.uri}: {first_line} "
        "(fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled: false)"
    )
