"""Typed configuration: ``configs/config.yaml`` validated into frozen pydantic models.

Nothing here runs at import time. ``load_config(path)`` reads the YAML, applies environment
overrides for deployment settings and returns a ``Config``; every function that needs settings
takes it as an argument. Relative paths are resolved against the working directory (the project
root when you use the Makefile or the container).

Environment overrides use the package name as prefix and ``__`` between section and key, e.g.
``<PACKAGE>_SERVING__PORT=9000`` or ``<PACKAGE>_DATA__URL=postgresql+psycopg://...``. Only the
sections that change between deployments can be overridden: data, tracking, serving, paths
(an MLOps project adds its own, see ``mlops_config``). ``MLFLOW_TRACKING_URI`` is honoured as
well, as MLflow users expect.

An MLOps project's config adds the registry, prediction log and monitoring sections: its model
(``mlops_config.MlopsConfig``) exists only in MLOps projects, and ``load_config`` returns it
there, so every entry point (the CLI, the lean service) reads the same file the same way.
"""

from __future__ import annotations

import importlib
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from .config_base import (
    OVERRIDABLE_SECTIONS,
    Frozen,
    ServerSettings,
    TrackingConfig,
    apply_env_overrides,
    config_error,
    read_yaml,
)

TaskName = Literal["binary_classification", "multiclass_classification", "regression"]
ModelName = Literal[
    "logistic_regression", "ridge", "random_forest", "hist_gradient_boosting", "lightgbm", "xgboost"
]
# A class label as the user's table has it: text, an integer or a boolean.
Label = StrictBool | StrictInt | StrictStr
CLASSIFICATION_TASKS = ("binary_classification", "multiclass_classification")


def as_label(value: object) -> Label:
    """A class label as JSON-ready Python: numpy scalars become bool/int, integral floats (an
    integer column read as float because of a missing value) int, anything else its text."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(float(value))
    return str(value)


# Which estimators serve which task (the forest and the boosted trees serve all three).
TREE_MODELS = ("random_forest", "hist_gradient_boosting", "lightgbm", "xgboost")
TASK_MODELS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("logistic_regression", *TREE_MODELS),
    "multiclass_classification": ("logistic_regression", *TREE_MODELS),
    "regression": ("ridge", *TREE_MODELS),
}
# Every test metric a task reports, and whether higher ("max") or lower ("min") is better.
# Quality gates and the registry's promotion gate may use any of them.
TASK_METRICS: dict[str, dict[str, Literal["max", "min"]]] = {
    "binary_classification": {
        "roc_auc": "max",
        "pr_auc": "max",
        "f1": "max",
        "precision": "max",
        "recall": "max",
        "accuracy": "max",
        "balanced_accuracy": "max",
        "log_loss": "min",
    },
    "multiclass_classification": {
        "accuracy": "max",
        "balanced_accuracy": "max",
        "f1_macro": "max",
        "f1_weighted": "max",
        "roc_auc_ovr": "max",
        "log_loss": "min",
    },
    "regression": {"rmse": "min", "mae": "min", "r2": "max", "mape": "min"},
}
# The gate a task gets when the config names none: better than chance / than the mean.
DEFAULT_GATES: dict[str, tuple[str, float]] = {
    "binary_classification": ("roc_auc", 0.6),
    "multiclass_classification": ("roc_auc_ovr", 0.6),
    "regression": ("r2", 0.0),
}
# The MLOps config model, in the module only MLOps projects have.
MLOPS_CONFIG_MODULE = "mlops_config"


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


# The longest value accepted for a categorical feature with ``unknown: other`` (API, simulate).
MAX_CATEGORY_LENGTH = 200


class CategoricalFeature(Frozen):
    """A categorical input column.

    ``unknown``: what a value outside ``categories`` is. ``error`` (default): refused by data
    validation and the API (422). ``other``: accepted and encoded like no known category at all
    (all-zero one-hot), for high-cardinality columns whose values cannot all be listed; then
    ``categories`` may be empty and ``min_frequency`` groups the values seen fewer times than
    that in training with the unknown ones.
    """

    name: str
    categories: list[str] = Field(default_factory=list)
    nullable: bool = False
    unknown: Literal["error", "other"] = "error"
    min_frequency: Annotated[int, Field(ge=1)] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _categories_for_policy(self) -> CategoricalFeature:
        if self.unknown == "error" and not self.categories:
            raise ValueError(
                f"feature '{self.name}': list its categories, or set unknown: other to accept "
                "any value (high-cardinality columns)"
            )
        if self.min_frequency is not None and self.unknown != "other":
            raise ValueError(
                f"feature '{self.name}': min_frequency groups rare values with unknown ones, "
                "so it needs unknown: other"
            )
        return self


class BooleanFeature(Frozen):
    """A true/false input column (true/false, or 1/0 in the data); the model sees 1.0/0.0."""

    name: str
    nullable: bool = False
    description: str = ""


DatetimePart = Literal["days", "hour", "day_of_week", "month"]
DATETIME_PARTS: tuple[DatetimePart, ...] = ("days", "hour", "day_of_week", "month")


class DatetimeFeature(Frozen):
    """A timestamp input column (ISO 8601 text or a SQL date/timestamp; naive times are UTC).

    The model derives ``parts`` from it, the same way in training, batch predict and serving
    (``inputs.datetime_parts``): ``days`` since 2000-01-01 (trend), and hour of day, day of
    week and month as cyclical sine/cosine pairs (23:00 is next to 00:00).
    """

    name: str
    parts: Annotated[list[DatetimePart], Field(min_length=1)] = Field(
        default_factory=lambda: list(DATETIME_PARTS)
    )
    nullable: bool = False
    description: str = ""


class TextFeature(Frozen):
    """A free-text input column, vectorised by TF-IDF inside the exported model (missing
    text counts as empty). ``max_features``: the vocabulary size (the most frequent terms);
    ``ngrams``: 1 for single words, 2 to add word pairs; ``min_df``: a term must appear in
    at least this many training rows."""

    name: str
    max_features: Annotated[int, Field(ge=1, le=100_000)] = 2000
    ngrams: Literal[1, 2] = 1
    min_df: Annotated[int, Field(ge=1)] = 2
    max_length: Annotated[int, Field(ge=1)] = 10_000  # characters accepted by the API
    nullable: bool = True
    description: str = ""


SAMPLE_WAREHOUSE_URL = "sqlite:///data/sample/warehouse.db"
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A feature name every layer keeps as it is: model input, ONNX graph input, API field.
FEATURE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def usable_feature_name(name: str) -> bool:
    """Whether ``name`` survives unchanged as an ONNX input (the exporter rewrites other
    characters) and as a field of the API's pydantic record model (which refuses names of its
    own attributes, such as ``json`` or ``model_config``)."""
    return FEATURE_NAME.fullmatch(name) is not None and not hasattr(BaseModel, name)


class SampleDataConfig(Frozen):
    """The embedded sample warehouse that ``data`` builds: where, how big, which seed.

    ``url`` is the sample's own database. ``data`` writes only there, and refuses a database
    that holds tables the sample builder did not create, so it can never overwrite yours.
    """

    url: str = SAMPLE_WAREHOUSE_URL
    n_customers: Annotated[int, Field(ge=100)] = 5000
    months: Annotated[int, Field(ge=1, le=36)] = 6
    seed: int = 42


class DataConfig(Frozen):
    """Where the training table comes from and which columns mean what.

    ``url`` is read, never written: point it at your own database (or keep the sample's).
    """

    url: str = SAMPLE_WAREHOUSE_URL
    # CSV/Parquet files the queries read as tables (with a DuckDB url): name -> file, folder
    # or glob, e.g. {"events": "data/events/*.parquet"}.
    tables: dict[str, str] = Field(default_factory=dict)
    query: Path = Path("sql/training_set.sql")
    scoring_query: Path = Path("sql/scoring_set.sql")
    chunk_size: Annotated[int, Field(ge=1)] = 50_000
    id_column: str = "customer_id"
    target: str = "churned"
    # Binary classification: the label that counts as "positive" (the one whose probability is
    # served). Optional when the labels are 0/1 or booleans (1 / true is positive).
    positive_class: Label | None = None
    leaky_columns: list[str] = Field(default_factory=list)
    sample: SampleDataConfig = SampleDataConfig()

    @model_validator(mode="after")
    def _tables_readable_by_url(self) -> DataConfig:
        bad = [name for name in self.tables if not TABLE_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"data.tables: {', '.join(bad)} is not a plain SQL table name "
                "(letters, digits and underscores, not starting with a digit)"
            )
        if self.tables and not self.url.startswith("duckdb:"):
            raise ValueError(
                'data.tables are read with DuckDB: set data.url: "duckdb:///:memory:" (quoted) '
                f"(it is {self.url})"
            )
        return self

    @property
    def uses_sample(self) -> bool:
        """True when training reads the sample warehouse (``url`` is ``sample.url``)."""
        return self.url == self.sample.url


class FeaturesConfig(Frozen):
    """The model's inputs: the raw columns the API and batch predict take. Derived values
    (datetime parts, TF-IDF terms, interactions) are computed from these, the same way in
    training and serving."""

    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    boolean: list[BooleanFeature] = Field(default_factory=list)
    datetime: list[DatetimeFeature] = Field(default_factory=list)
    text: list[TextFeature] = Field(default_factory=list)
    interactions: list[tuple[str, str]] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Every raw input column, in config order (numeric, categorical, boolean, datetime,
        text)."""
        return [
            feature.name
            for group in (self.numeric, self.categorical, self.boolean, self.datetime, self.text)
            for feature in group
        ]

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesConfig:
        names = self.names
        if not names:
            raise ValueError("features: list at least one feature")
        unusable = [name for name in names if not usable_feature_name(name)]
        if unusable:
            raise ValueError(
                f"features: {', '.join(repr(n) for n in unusable)} cannot be a model input and "
                "API field name (letters, digits and _, starting with a letter, not a pydantic "
                "attribute such as 'json'): alias the column in the query, e.g. "
                '"mean radius" AS mean_radius'
            )
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
    """Estimator choice; ``params`` go to its constructor (checked against its signature).

    ``class_weight`` applies to classification (ignored in regression)."""

    name: ModelName = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)
    class_weight: Literal["balanced"] | None = "balanced"


class GateConfig(Frozen):
    """A quality gate on one test metric: ``min`` for metrics where higher is better (ROC-AUC,
    R²), ``max`` where lower is better (RMSE, log loss)."""

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> GateConfig:
        if (self.min is None) == (self.max is None):
            raise ValueError(f"gate on {self.metric}: give exactly one of min or max")
        return self


class TrainingConfig(Frozen):
    """Split, cross-validation, threshold tuning and the quality gate.

    ``split: time`` holds out the latest rows by ``order_column`` (and cross-validates forward
    in time) instead of a random (stratified, for classification) sample.
    """

    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5
    seed: int = 42
    split: Literal["random", "time"] = "random"
    order_column: str | None = None
    # Binary classification only: what the decision threshold maximises.
    threshold_metric: Literal["f1", "f2", "balanced_accuracy"] = "f1"
    # Below this (above, for a lower-is-better metric) the model is not published.
    gate: GateConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_gate(cls, data: Any) -> Any:
        # Before 0.5.0 the only gate was `min_test_roc_auc: X`; it still means the same.
        if isinstance(data, Mapping) and "min_test_roc_auc" in data:
            data = dict(data)
            legacy = data.pop("min_test_roc_auc")
            if data.get("gate") is not None:
                raise ValueError(
                    "min_test_roc_auc (before 0.5.0) and gate are both set: keep gate only"
                )
            data["gate"] = {"metric": "roc_auc", "min": legacy}
        return data

    @model_validator(mode="after")
    def _order_column_for_time_split(self) -> TrainingConfig:
        if self.split == "time" and not self.order_column:
            raise ValueError(
                "training.split: time needs training.order_column (the column that orders "
                "rows in time, e.g. a signup date)"
            )
        return self


class EvaluationConfig(Frozen):
    """How much work evaluation spends on explanations, and how it slices the errors.

    ``shap_rows``: test rows SHAP explains (a seeded sample when there are more; the report
    says how many); ``shap_max_features``: inputs shown in the SHAP plots and table (the most
    important first); ``shap_dependence_plots``: dependence plots for the top inputs;
    ``explain_top_k``: contributing inputs per row that ``predict --explain`` adds;
    ``slice_bins``: quantile bins of each top numeric input in the error analysis;
    ``slice_min_rows``: slices smaller than this are listed but never flagged as worst.
    """

    permutation_repeats: Annotated[int, Field(ge=1)] = 5
    shap_rows: Annotated[int, Field(ge=10, le=100_000)] = 500
    shap_max_features: Annotated[int, Field(ge=1, le=200)] = 20
    shap_dependence_plots: Annotated[int, Field(ge=0, le=20)] = 3
    explain_top_k: Annotated[int, Field(ge=1, le=50)] = 3
    slice_bins: Annotated[int, Field(ge=2, le=20)] = 4
    slice_min_rows: Annotated[int, Field(ge=1)] = 30


class SearchRange(Frozen):
    """Where ``tune`` searches one hyper-parameter: numbers from ``low`` to ``high`` (integers
    when both ends are integers; ``log: true`` samples evenly in orders of magnitude, for rates
    and penalties; ``step`` for a grid), or one of ``choices``."""

    low: StrictInt | float | None = None
    high: StrictInt | float | None = None
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (it is {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log: true and step cannot be combined")
        return self

    @property
    def is_int(self) -> bool:
        """Whether the range is over integers (both ends written as integers)."""
        return isinstance(self.low, int) and isinstance(self.high, int)


class TuningConfig(Frozen):
    """Hyper-parameter search (``tune``) and the leaderboard (``tune --compare``).

    ``trials`` and ``timeout_minutes`` bound one ``tune`` run (per worker process; whichever
    comes first). The objective is ``metric`` (a cross-validation metric of the task; default
    the task's first: roc_auc, accuracy or rmse) on the training split only. ``storage`` is the
    Optuna storage URL the study lives in: every process or machine pointed at the same URL
    works on the same study. ``search_space`` replaces the shipped range of a parameter, per
    estimator (``tune`` checks the names against the estimator). ``compare``: the estimators
    the leaderboard fits (default: every estimator of the task).
    """

    trials: Annotated[int, Field(ge=1)] = 30
    timeout_minutes: Annotated[float, Field(gt=0)] | None = 30
    metric: str | None = None
    storage: str = "sqlite:///optuna.db"
    study_name: str | None = None
    pruning: bool = True
    search_space: dict[ModelName, dict[str, SearchRange]] = Field(default_factory=dict)
    compare: list[ModelName] = Field(default_factory=list)


class ServingConfig(ServerSettings):
    """HTTP service settings (the connection limits and timeouts are ``ServerSettings``)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_batch_size: Annotated[int, Field(ge=1)] = 1000
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # The model version to serve instead of the newest: a directory name under
    # paths.models_dir (e.g. 20260101T120000000000Z-1a2b3c4d); null serves what models/LATEST
    # names. (MLOps projects pin a registry version instead: MlopsServingConfig.)
    pinned_version: str | None = None
    runtime: Literal["onnx", "sklearn"] = "onnx"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class PathsConfig(Frozen):
    """Where artifacts go."""

    models_dir: Path = Path("models")
    reports_dir: Path = Path("reports")


class Config(Frozen):
    """The whole project configuration."""

    # The sections a deployment may override from the environment.
    env_sections: ClassVar[tuple[str, ...]] = (*OVERRIDABLE_SECTIONS, "tuning")

    project: str = "project"
    task: TaskName = "binary_classification"
    data: DataConfig = DataConfig()
    features: FeaturesConfig
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tuning: TuningConfig = TuningConfig()
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
        if self.model.name not in TASK_MODELS[self.task]:
            raise ValueError(
                f"model.name {self.model.name} does not do {self.task}: choose one of "
                f"{', '.join(TASK_MODELS[self.task])}"
            )
        if self.training.order_column in (self.data.target, *self.data.leaky_columns):
            raise ValueError(
                f"training.order_column {self.training.order_column} is the target or a leaky "
                "column: order rows by when they were observed (e.g. a date)"
            )
        wrong = [name for name in self.tuning.compare if name not in TASK_MODELS[self.task]]
        if wrong:
            raise ValueError(
                f"tuning.compare: {', '.join(wrong)} does not do {self.task}: choose from "
                f"{', '.join(TASK_MODELS[self.task])}"
            )
        gate = self.training.gate
        if gate is not None:
            direction = "max" if gate.min is not None else "min"
            _check_gate(self.task, gate.metric, direction, "training.gate")
        return self

    @property
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION_TASKS

    @property
    def gate(self) -> GateConfig:
        """The quality gate: ``training.gate``, or the task's default."""
        if self.training.gate is not None:
            return self.training.gate
        metric, bound = DEFAULT_GATES[self.task]
        return GateConfig(metric=metric, min=bound)


def metric_direction(task: str, metric: str) -> Literal["max", "min"]:
    """Whether ``metric`` of ``task`` is better higher ("max") or lower ("min")."""
    return TASK_METRICS[task][metric]


def _check_gate(task: str, metric: str, direction: str, where: str) -> None:
    known = TASK_METRICS[task]
    if metric not in known:
        raise ValueError(
            f"{where}: {metric} is not a {task} metric; choose one of {', '.join(known)}"
        )
    if direction != known[metric]:
        bound, other = ("min", "max") if known[metric] == "max" else ("max", "min")
        raise ValueError(
            f"{where}: {metric} is better when {'higher' if known[metric] == 'max' else 'lower'}"
            f": give {bound}, not {other}"
        )


def project_module(name: str) -> ModuleType | None:
    """The package's module ``name`` (dotted, relative to the package), or None in a project
    type that does not have it: how shared code finds what only MLOps projects have."""
    absolute = f"{__package__}.{name}"
    try:
        return importlib.import_module(absolute)
    except ModuleNotFoundError as exc:
        parents = {absolute.rsplit(".", depth)[0] for depth in range(name.count(".") + 1)}
        if exc.name not in parents:  # the module exists but something it imports does not
            raise
        return None


def project_config_model() -> type[Config]:
    """The config model of this project: ``MlopsConfig`` in an MLOps project, else ``Config``."""
    module = project_module(MLOPS_CONFIG_MODULE)
    model: type[Config] = Config if module is None else module.MlopsConfig
    return model


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate into the project's config model;
    raise ``ConfigError`` on any problem."""
    return config_from_dict(read_yaml(path), os.environ if environ is None else environ, path)


def config_from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: object = "<dict>"
) -> Config:
    """Validate a mapping (after environment overrides) into the project's config model."""
    return validate_config(project_config_model(), raw, environ, source)


def validate_config(
    model: type[Config],
    raw: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    source: object = "<dict>",
) -> Config:
    """Validate a mapping (after the overrides of ``model.env_sections``) into ``model`` (the
    result is an instance of it; no type parameter, so the file stays Python 3.11 syntax that
    newer targets' linters accept too)."""
    try:
        return model.model_validate(apply_env_overrides(raw, environ or {}, model.env_sections))
    except ValidationError as exc:
        raise config_error(exc, source) from None
