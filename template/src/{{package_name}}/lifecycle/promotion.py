"""The promotion gate and rollback.

``promote`` scores the challenger and the champion on the same rows (the challenger's holdout,
read from the current data) with their ONNX graphs, the way the service will, and moves the
champion alias only if every check passes:

- metric: challenger better than the champion by ``registry.min_improvement`` on
  ``registry.metric`` (any test metric of the task; default: the quality gate's), higher or
  lower as the metric's direction says (R², ROC-AUC: higher; RMSE, log loss: lower). Both
  models must do the same task: a model of another task (``task`` changed in the config) is
  never comparable, so it is refused and belongs under another ``registry.model_name``;
- schema: the same input features (or ``registry.allow_schema_change``);
- latency: median single-row scoring time <= ``registry.max_latency_ms``;
- parity: the ONNX export matched scikit-learn when it was trained (checked before
  registration; the tag is re-read here).

Every decision, promoted or refused, is written to ``registry.decisions_dir`` as JSON and set
as tags on the challenger version, with its reasons. ``rollback`` points the champion back at
the previous one.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import artifacts, model_store
from ..config import metric_direction
from ..data.extract import extract_training_frame
from ..data.validate import validate_frame
from ..errors import DataError, ModelNotFoundError
from ..features import raw_columns
from ..mlops_config import MlopsConfig
from ..scoring import OnnxPredictor
from ..tasks import task_for
from ..tasks.labels import known_target
from . import registry

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

LATENCY_CALLS = 200


@dataclass(frozen=True)
class Check:
    """One gate check with its evidence."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    """A promotion or rollback decision and everything it was based on."""

    action: str  # promote | rollback
    outcome: str  # promoted | refused | rolled_back | no_challenger
    challenger: str | None
    champion_before: str | None
    champion_after: str | None
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: int = 0
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    record: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["record"] = str(self.record) if self.record else None
        return payload


def promote(cfg: MlopsConfig, frame: pd.DataFrame | None = None) -> Decision:
    """Run the gate for the current challenger; move the champion alias if it passes.

    ``frame`` is the validated training table (default: extracted and validated now)."""
    mlflow = registry.client(cfg)
    name = cfg.registry.model_name
    challenger = registry.require_alias(cfg, cfg.registry.challenger_alias, mlflow)
    champion = registry.require_alias(cfg, cfg.registry.champion_alias, mlflow)
    if challenger.version == champion.version:
        return _record(
            cfg,
            mlflow,
            Decision(
                action="promote",
                outcome="no_challenger",
                challenger=str(challenger.version),
                champion_before=str(champion.version),
                champion_after=str(champion.version),
                reasons=[f"version {challenger.version} is already the champion"],
            ),
        )
    data = (
        validate_frame(extract_training_frame(cfg), cfg, source=str(cfg.data.query))
        if frame is None
        else frame
    )
    with (
        registry.fetched(cfg, challenger) as challenger_dir,
        registry.fetched(cfg, champion) as champion_dir,
    ):
        new = OnnxPredictor(challenger_dir)
        old = OnnxPredictor(champion_dir)
        holdout_ids = set(model_store.read_json(challenger_dir / artifacts.HOLDOUT_FILE))
        rows = data[data[cfg.data.id_column].isin(holdout_ids)]
        if len(rows) < 2 or rows[cfg.data.target].nunique() < 2:
            needed = "classes" if new.outputs.is_classifier else "distinct target values"
            raise DataError(
                f"only {len(rows)} of the challenger's {len(holdout_ids)} holdout rows are in the "
                f"current data (at least two {needed} needed): promote right after training on "
                "this data"
            )
        same_task = new.metadata.task == old.metadata.task
        scores = {
            "challenger": _score(new, rows, cfg),
            # A champion of another task cannot be scored on these targets at all.
            "champion": _score(old, rows, cfg) if same_task else {},
        }
        checks = [
            _metric_check(cfg, scores) if same_task else _task_mismatch(new, old),
            _schema_check(cfg, new, old),
            _latency_check(cfg, new),
            _parity_check(challenger.tags),
        ]
    promoted = all(check.passed for check in checks)
    if promoted:
        with registry.registry_errors(cfg, "move the champion alias"):
            mlflow.set_registered_model_alias(name, cfg.registry.champion_alias, challenger.version)
        past = registry.history(cfg, mlflow) or [str(champion.version)]
        registry.set_history(cfg, [*past, str(challenger.version)], mlflow)
    decision = Decision(
        action="promote",
        outcome="promoted" if promoted else "refused",
        challenger=str(challenger.version),
        champion_before=str(champion.version),
        champion_after=str(challenger.version if promoted else champion.version),
        reasons=[c.detail for c in checks if not c.passed] or [c.detail for c in checks],
        checks=checks,
        metrics=scores,
        rows=len(rows),
    )
    return _record(cfg, mlflow, decision)


def rollback(cfg: MlopsConfig) -> Decision:
    """Point the champion alias back at the previous champion."""
    mlflow = registry.client(cfg)
    current = registry.require_alias(cfg, cfg.registry.champion_alias, mlflow)
    past = registry.history(cfg, mlflow)
    if len(past) < 2 or past[-1] != str(current.version):
        raise ModelNotFoundError(
            f"no previous champion to roll back to (champion history: {past or 'empty'}; "
            f"current champion {current.version})"
        )
    previous = past[-2]
    with registry.registry_errors(cfg, "move the champion alias"):
        mlflow.set_registered_model_alias(
            cfg.registry.model_name, cfg.registry.champion_alias, previous
        )
    registry.set_history(cfg, past[:-1], mlflow)
    decision = Decision(
        action="rollback",
        outcome="rolled_back",
        challenger=None,
        champion_before=str(current.version),
        champion_after=previous,
        reasons=[f"champion moved back from version {current.version} to version {previous}"],
    )
    return _record(cfg, mlflow, decision, tag_version=str(current.version))


def _score(predictor: OnnxPredictor, rows: pd.DataFrame, cfg: MlopsConfig) -> dict[str, float]:
    scores = predictor.predict_columns(raw_columns(rows, predictor.metadata.features))
    metadata = predictor.metadata
    target = known_target(
        rows[cfg.data.target], metadata.classes, metadata.positive_class, "the holdout rows"
    )
    return task_for(metadata.task).metrics(target.y, scores, metadata.threshold)


def _metric_check(cfg: MlopsConfig, scores: dict[str, dict[str, float]]) -> Check:
    metric = cfg.registry_metric
    new, old = scores["challenger"].get(metric), scores["champion"].get(metric)
    if new is None or old is None:
        return Check("metric", False, f"{metric}: undefined on the holdout rows")
    margin = cfg.registry.min_improvement
    if metric_direction(cfg.task, metric) == "max":
        passed, bar = bool(new >= old + margin), f"champion {old:.4f} + margin {margin:g}"
    else:  # lower is better (RMSE, log loss): the challenger must be lower by the margin
        passed, bar = bool(new <= old - margin), f"champion {old:.4f} - margin {margin:g}"
    verdict = "beats" if passed else "does not beat"
    return Check("metric", passed, f"{metric}: challenger {new:.4f} {verdict} {bar}")


def _task_mismatch(new: OnnxPredictor, old: OnnxPredictor) -> Check:
    return Check(
        "metric",
        False,
        f"metric: the challenger does {new.metadata.task}, the champion "
        f"{old.metadata.task}: their metrics are not comparable; register the new task under "
        "another registry.model_name (its first version becomes the champion)",
    )


def _schema_check(cfg: MlopsConfig, new: OnnxPredictor, old: OnnxPredictor) -> Check:
    same = new.metadata.features == old.metadata.features
    if same:
        return Check("schema", True, "schema: same input features as the champion")
    if cfg.registry.allow_schema_change:
        return Check("schema", True, "schema: inputs changed (allowed by allow_schema_change)")
    return Check(
        "schema",
        False,
        "schema: the challenger's input features differ from the champion's "
        "(set registry.allow_schema_change: true and deploy the new config to accept)",
    )


def _latency_check(cfg: MlopsConfig, predictor: OnnxPredictor) -> Check:
    example = [predictor.metadata.input_example]
    predictor.predict_records(example)  # warm-up
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        predictor.predict_records(example)
        timings.append((time.perf_counter() - start) * 1000.0)
    median = statistics.median(timings)
    budget = cfg.registry.max_latency_ms
    passed = bool(np.isfinite(median) and median <= budget)
    relation = "within" if passed else "over"
    return Check(
        "latency", passed, f"latency: median {median:.3f} ms per row, {relation} {budget:g} ms"
    )


def _parity_check(tags: dict[str, str]) -> Check:
    if tags.get("onnx_parity") == "passed":
        diff = tags.get("onnx_max_abs_diff", "?")
        return Check("parity", True, f"parity: ONNX matches scikit-learn (max |diff| {diff})")
    return Check("parity", False, "parity: the version has no passed ONNX parity check")


def _record(
    cfg: MlopsConfig, mlflow: MlflowClient, decision: Decision, tag_version: str | None = None
) -> Decision:
    """Write the decision file and tag the version it is about."""
    directory = cfg.registry.decisions_dir
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    subject = tag_version or decision.challenger or "none"
    path = directory / f"{stamp}-{decision.action}-v{subject}.json"
    decision = replace(decision, record=path)
    model_store.write_json(path, decision.as_dict())
    if subject != "none":
        name = cfg.registry.model_name
        with registry.registry_errors(cfg, f"tag version {subject}"):
            for key, value in {
                f"{decision.action}.decision": decision.outcome,
                f"{decision.action}.reasons": "; ".join(decision.reasons)[:4000],
                f"{decision.action}.decided_at": decision.decided_at,
            }.items():
                mlflow.set_model_version_tag(name, subject, key, value)
    logger.info("%s decision for version %s: %s", decision.action, subject, decision.outcome)
    return decision
