"""Typed configuration: ``configs/config.yaml`` validated into frozen pydantic models.

Nothing here runs at import time. ``load_config(path)`` reads the YAML, applies environment
overrides for deployment settings and returns a ``Config``; every function that needs settings
takes it as an argument. Relative paths are resolved against the working directory (the project
root when you use the Makefile or the container).

Environment overrides use the package name as prefix and ``__`` between section and key, e.g.
``<PACKAGE>_SERVING__PORT=9000`` or ``<PACKAGE>_DATA__URL=postgresql+psycopg://...``. Only the
sections that change between deployments can be overridden: data, tracking, serving, paths.
``MLFLOW_TRACKING_URI`` is honoured as well, as MLflow users expect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from .settings import Frozen, TrackingConfig, apply_env_overrides, config_error, read_yaml

ModelName = Literal["logistic_regression", "random_forest", "hist_gradient_boosting"]


class NumericFeature(Frozen):
    """A numeric input column; ``min``/``max`` bound valid values (data checks and API)."""

    name: str
    dtype: Literal["int", "float"] = "float"
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> NumericFeature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature '{self.name}': min {self.min} is above max {self.max}")
        return self


class CategoricalFeature(Frozen):
    """A categorical input column with its allowed values."""

    name: str
    categories: Annotated[list[str], Field(min_length=1)]
    nullable: bool = False
    description: str = ""


class SampleDataConfig(Frozen):
    """Size and seed of the embedded sample warehouse built by ``data``."""

    n_customers: Annotated[int, Field(ge=100)] = 5000
    months: Annotated[int, Field(ge=1, le=36)] = 6
    seed: int = 42


class DataConfig(Frozen):
    """Where the training table comes from and which columns mean what."""

    url: str = "sqlite:///data/warehouse.db"
    query: Path = Path("sql/training_set.sql")
    scoring_query: Path = Path("sql/scoring_set.sql")
    chunk_size: Annotated[int, Field(ge=1)] = 50_000
    id_column: str = "customer_id"
    target: str = "churned"
    leaky_columns: list[str] = Field(default_factory=list)
    sample: SampleDataConfig = SampleDataConfig()


class FeaturesConfig(Frozen):
    """The model's inputs. Derived features are built inside the pipeline from these."""

    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    interactions: list[tuple[str, str]] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesConfig:
        names = self.names
        if not names:
            raise ValueError("features: list at least one numeric or categorical feature")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features: listed more than once: {', '.join(duplicates)}")
        numeric = {f.name for f in self.numeric}
        for left, right in self.interactions:
            missing = [n for n in (left, right) if n not in numeric]
            if missing:
                raise ValueError(
                    f"features.interactions: {', '.join(missing)} is not a numeric feature"
                )
        return self


class ModelConfig(Frozen):
    """Estimator choice; ``params`` go to its constructor (checked against its signature)."""

    name: ModelName = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)
    class_weight: Literal["balanced"] | None = "balanced"


class TrainingConfig(Frozen):
    """Split, cross-validation, threshold tuning and the quality gate."""

    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5
    seed: int = 42
    threshold_metric: Literal["f1", "f2", "balanced_accuracy"] = "f1"
    min_test_roc_auc: Annotated[float, Field(ge=0, le=1)] = 0.6


class EvaluationConfig(Frozen):
    """How much work evaluation spends on permutation importance."""

    permutation_repeats: Annotated[int, Field(ge=1)] = 5


class ServingConfig(Frozen):
    """HTTP service settings."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_batch_size: Annotated[int, Field(ge=1)] = 1000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    model_version: str | None = None
    runtime: Literal["onnx", "sklearn"] = "onnx"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class PathsConfig(Frozen):
    """Where artifacts go."""

    models_dir: Path = Path("models")
    reports_dir: Path = Path("reports")


class Config(Frozen):
    """The whole project configuration."""

    project: str = "project"
    data: DataConfig = DataConfig()
    features: FeaturesConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    paths: PathsConfig = PathsConfig()

    @model_validator(mode="after")
    def _no_leaks(self) -> Config:
        names = set(self.features.names)
        leaked = sorted(names & set(self.data.leaky_columns))
        if leaked:
            raise ValueError(
                f"features use leaky column(s) {', '.join(leaked)}: they are only known after "
                "the outcome; remove them from features or from data.leaky_columns"
            )
        for column in (self.data.target, self.data.id_column):
            if column in names:
                raise ValueError(f"'{column}' is the target or id column, not a feature")
        return self


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate; raise ``ConfigError`` on any problem."""
    return config_from_dict(read_yaml(path), os.environ if environ is None else environ, path)


def config_from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: object = "<dict>"
) -> Config:
    """Validate a mapping (after environment overrides) into a ``Config``."""
    try:
        return Config.model_validate(apply_env_overrides(raw, environ or {}))
    except ValidationError as exc:
        raise config_error(exc, source) from None
