"""The MLOps project's configuration: ``Config`` plus the registry, prediction log and
monitoring sections, and the serving settings of the champion service (reload, admin token).

This module exists only in MLOps projects; ``config.load_config`` finds it and validates the
config file into ``MlopsConfig``, so the lean service and every command read the same model.
Lifecycle code takes ``MlopsConfig``; ``load_mlops_config`` reads it typed as such.
Pydantic and the standard library only: the serving process imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, cast

from pydantic import Field, field_validator, model_validator

from .config import TASK_METRICS, Config, ServingConfig, validate_config
from .config_base import Frozen, read_yaml


class MlopsServingConfig(ServingConfig):
    """The champion service's settings on top of the tabular ones."""

    # Here a version number of registry.model_name in the MLflow Model Registry (e.g. "3"),
    # not a directory: the service serves it instead of the champion alias; null follows the
    # champion.
    pinned_version: Annotated[str, Field(pattern=r"^[1-9][0-9]*$")] | None = None

    @field_validator("pinned_version", mode="before")
    @classmethod
    def _version_number_as_text(cls, value: object) -> object:
        # `pinned_version: 3` in YAML (or SERVING__PINNED_VERSION=3) is a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    # How often the service asks the registry whether the champion changed (0: only on
    # POST /admin/reload). The old model serves until the new one is loaded and checked.
    reload_interval_s: Annotated[float, Field(ge=0)] = 30.0
    # When set, POST /admin/reload needs "Authorization: Bearer <token>" (set it from a secret:
    # <PACKAGE>_SERVING__ADMIN_TOKEN).
    admin_token: str | None = None

    @field_validator("admin_token")
    @classmethod
    def _empty_token_is_unset(cls, value: str | None) -> str | None:
        # An empty environment variable means "not set", not "the empty password".
        return value or None


class RegistryConfig(Frozen):
    """MLflow Model Registry: where versions live, and the promotion gate.

    Every training run registers a version and points ``challenger_alias`` at it (the first
    version also becomes the champion). ``promote`` moves ``champion_alias`` to the challenger
    only if it beats the champion on ``metric`` by ``min_improvement`` on the same holdout and
    passes every check below.
    """

    model_name: str = "model"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    # Any test metric of the task (see TASK_METRICS); null: the task's default gate metric.
    # "Beats" follows the metric's direction: a lower RMSE is better.
    metric: str | None = None
    min_improvement: Annotated[float, Field(ge=0)] = 0.002
    # Median single-row scoring time of the challenger's ONNX graph, in this process.
    max_latency_ms: Annotated[float, Field(gt=0)] = 5.0
    # A challenger with different inputs needs a new API contract: refused unless declared.
    allow_schema_change: bool = False
    # Downloaded champion bundles (the service and `monitor` read these).
    cache_dir: Path = Path("models/registry")
    # One JSON file per promotion decision, promoted or refused.
    decisions_dir: Path = Path("reports/promotions")

    @model_validator(mode="after")
    def _distinct_aliases(self) -> RegistryConfig:
        if self.champion_alias == self.challenger_alias:
            raise ValueError("registry: champion_alias and challenger_alias must differ")
        return self


class PredictionLogConfig(Frozen):
    """Where the service logs every prediction (any SQLAlchemy URL), off the request path."""

    enabled: bool = True
    url: str = "sqlite:///logs/predictions.db"
    table: str = "prediction_log"
    drift_table: str = "drift_reports"
    # Rows waiting to be written; beyond this, predictions are still served but not logged
    # (counted in prediction_log_dropped_total and logged as a warning).
    queue_size: Annotated[int, Field(ge=1)] = 10_000
    batch_size: Annotated[int, Field(ge=1)] = 500
    flush_interval_s: Annotated[float, Field(gt=0)] = 1.0


class MonitoringConfig(Frozen):
    """Drift checks of logged traffic against the champion's training reference."""

    window: Annotated[int, Field(ge=1)] = 5000  # the most recent logged predictions
    min_rows: Annotated[int, Field(ge=1)] = 200  # fewer: the report says so, no alert
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    psi_warn: Annotated[float, Field(gt=0)] = 0.1
    psi_alert: Annotated[float, Field(gt=0)] = 0.25
    # KS / chi-square p-values below this are reported as significant (with large windows
    # tiny shifts are significant: PSI decides the alert level).
    p_value: Annotated[float, Field(gt=0, lt=1)] = 0.01
    reports_dir: Path = Path("reports/monitoring")

    @model_validator(mode="after")
    def _ordered(self) -> MonitoringConfig:
        if self.psi_warn >= self.psi_alert:
            raise ValueError(
                f"monitoring: psi_warn {self.psi_warn} must be below psi_alert {self.psi_alert}"
            )
        return self


class MlopsConfig(Config):
    """The whole MLOps project configuration."""

    env_sections: ClassVar[tuple[str, ...]] = (
        *Config.env_sections,
        "registry",
        "prediction_log",
        "monitoring",
    )

    serving: MlopsServingConfig = MlopsServingConfig()
    registry: RegistryConfig = RegistryConfig()
    prediction_log: PredictionLogConfig = PredictionLogConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @model_validator(mode="after")
    def _registry_metric_known(self) -> MlopsConfig:
        metric = self.registry.metric
        if metric is not None and metric not in TASK_METRICS[self.task]:
            raise ValueError(
                f"registry.metric: {metric} is not a {self.task} metric; choose one of "
                f"{', '.join(TASK_METRICS[self.task])}"
            )
        return self

    @property
    def registry_metric(self) -> str:
        """The metric promotion compares: ``registry.metric`` or the quality gate's."""
        return self.registry.metric or self.gate.metric


def load_mlops_config(path: str | Path, environ: Mapping[str, str] | None = None) -> MlopsConfig:
    """``config.load_config`` typed for lifecycle code."""
    environ = os.environ if environ is None else environ
    return cast(MlopsConfig, validate_config(MlopsConfig, read_yaml(path), environ, path))


def mlops_config_from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: object = "<dict>"
) -> MlopsConfig:
    """``config.config_from_dict`` typed for lifecycle code (tests)."""
    return cast(MlopsConfig, validate_config(MlopsConfig, raw, environ, source))
