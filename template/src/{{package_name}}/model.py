"""Estimator factory: the model named in the config for the config's task, with class
imbalance handled for classifiers."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from .config import CLASSIFICATION_TASKS, Config, ModelConfig
from .errors import ConfigError
from .features import build_preprocessor

CLASSIFIERS: dict[str, type[BaseEstimator]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
REGRESSORS: dict[str, type[BaseEstimator]] = {
    "ridge": Ridge,
    "random_forest": RandomForestRegressor,
    "hist_gradient_boosting": HistGradientBoostingRegressor,
}

# Linear models need comparable scales; trees do not (and are exact in ONNX without it).
NEEDS_SCALING = {"logistic_regression", "ridge"}
# Estimators that route missing values themselves (and export that routing to ONNX).
HANDLES_MISSING = {"hist_gradient_boosting"}

# Sensible starting points; anything in model.params overrides them.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 2000},
    "ridge": {"alpha": 1.0},
    "random_forest": {"n_estimators": 300, "min_samples_leaf": 5, "n_jobs": -1},
    "hist_gradient_boosting": {"learning_rate": 0.05, "max_iter": 300, "early_stopping": True},
}


def build_estimator(cfg: ModelConfig, seed: int, task: str) -> BaseEstimator:
    """Instantiate the configured estimator for ``task``; unknown parameters get a clear error."""
    classifier = task in CLASSIFICATION_TASKS
    estimators = CLASSIFIERS if classifier else REGRESSORS
    if cfg.name not in estimators:
        raise ConfigError(
            f"model.name {cfg.name} does not do {task}: choose one of {', '.join(estimators)}"
        )
    estimator_cls = estimators[cfg.name]
    accepted = set(inspect.signature(estimator_cls).parameters)
    unknown = sorted(set(cfg.params) - accepted)
    if unknown:
        raise ConfigError(
            f"model.params: {', '.join(unknown)} not accepted by {cfg.name}; "
            f"valid parameters: {', '.join(sorted(accepted))}"
        )
    params: dict[str, Any] = {**DEFAULT_PARAMS[cfg.name], **cfg.params}
    if "class_weight" in accepted:  # classifiers only: regression has no classes to weigh
        params.setdefault("class_weight", cfg.class_weight)
    if "random_state" in accepted:
        params.setdefault("random_state", seed)
    estimator = estimator_cls(**params)
    try:
        # scikit-learn checks parameter values only at fit time; check now, before any work.
        estimator._validate_params()  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.params for {cfg.name} are invalid: {exc}") from None
    return estimator


def build_pipeline(cfg: Config, frequent: Mapping[str, list[str]] | None = None) -> Pipeline:
    """Features + estimator, unfitted; the preprocessing is what this estimator needs.

    ``frequent``: the categories each ``min_frequency`` feature keeps (see
    ``features.frequent_categories``)."""
    name = cfg.model.name
    preprocessor = build_preprocessor(
        cfg.features,
        scale=name in NEEDS_SCALING,
        impute=name not in HANDLES_MISSING,
        frequent=frequent,
    )
    return Pipeline(
        [
            ("features", preprocessor),
            ("model", build_estimator(cfg.model, cfg.training.seed, cfg.task)),
        ]
    )
