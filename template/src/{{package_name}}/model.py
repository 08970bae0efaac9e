"""Estimator factory: the model named in the config for the config's task, with class
imbalance handled for classifiers, and ``fit_pipeline``, the one way a pipeline is fitted.

LightGBM and XGBoost are imported only when selected (they are the heaviest imports of the
training side). Both take missing values natively, need no scaling and export to ONNX through
the onnxmltools converters (see ``onnx_export``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.utils.class_weight import compute_sample_weight

from .config import CLASSIFICATION_TASKS, Config, ModelConfig
from .errors import ConfigError, DataError
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
# The boosting libraries: module, classifier class, regressor class (imported on first use).
BOOSTED: dict[str, tuple[str, str, str]] = {
    "lightgbm": ("lightgbm", "LGBMClassifier", "LGBMRegressor"),
    "xgboost": ("xgboost", "XGBClassifier", "XGBRegressor"),
}

# Linear models need comparable scales; trees do not (and are exact in ONNX without it).
NEEDS_SCALING = {"logistic_regression", "ridge"}
# Estimators that route missing values themselves (and export that routing to ONNX).
HANDLES_MISSING = {"hist_gradient_boosting", "lightgbm", "xgboost"}

# Sensible starting points; anything in model.params overrides them. The boosted libraries get
# the same budget as hist_gradient_boosting (300 rounds at 0.05), row and column subsampling
# (a little regularisation that costs nothing) and no console output. One thread each: their
# OpenMP threads wait for each other at every split, so on a busy machine (parallel tests,
# `tune --workers`, a container whose CPU quota is below the host's core count) all-cores
# training was measured 25-75x slower than one thread on the sample; on a machine of your
# own, set model.params.n_jobs to its physical cores for large tables.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 2000},
    "ridge": {"alpha": 1.0},
    "random_forest": {"n_estimators": 300, "min_samples_leaf": 5, "n_jobs": -1},
    "hist_gradient_boosting": {"learning_rate": 0.05, "max_iter": 300, "early_stopping": True},
    "lightgbm": {
        "n_estimators": 300,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "n_jobs": 1,
        "verbose": -1,
    },
    "xgboost": {
        "n_estimators": 300,
        "learning_rate": 0.05,
        "max_depth": 6,
        "min_child_weight": 1.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "tree_method": "hist",
        "n_jobs": 1,
        "verbosity": 0,
    },
}

# Accepted but refused: LightGBM's linear trees (a linear model in each leaf) have no ONNX
# converter that honours them; onnxmltools exports the constant leaves silently instead.
REFUSED_PARAMS: dict[str, dict[str, str]] = {
    "lightgbm": {
        "linear_tree": "model.params.linear_tree: LightGBM's linear trees do not export to "
        "ONNX (the converter drops the leaf models and scores wrongly): remove it, or use "
        "ridge / logistic_regression for a linear model",
    },
}


def is_boosted(instance: object) -> bool:
    """Whether ``instance`` (an estimator, or an error) comes from LightGBM or XGBoost: by its
    type's module, so nothing is imported."""
    return _library(instance) in BOOSTED


def estimator_class(name: str, task: str) -> type[BaseEstimator]:
    """The estimator class ``name`` stands for in ``task``; LightGBM and XGBoost are imported
    here, on first use."""
    classifier = task in CLASSIFICATION_TASKS
    if name in BOOSTED:
        module_name, classifier_class, regressor_class = BOOSTED[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ConfigError(
                f"model.name {name} needs the {module_name} package: install the project with "
                "its [pipeline] extra"
            ) from None
        cls: type[BaseEstimator] = getattr(
            module, classifier_class if classifier else regressor_class
        )
        return cls
    estimators = CLASSIFIERS if classifier else REGRESSORS
    if name not in estimators:
        choices = [*estimators, *BOOSTED]
        raise ConfigError(
            f"model.name {name} does not do {task}: choose one of {', '.join(choices)}"
        )
    return estimators[name]


def estimator_params(name: str, task: str) -> set[str]:
    """The parameter names ``model.params`` (and a tuning search space) may set for ``name``.

    The constructor's named parameters (XGBoost's live on its base class); for LightGBM also
    the main names of its native parameters (``max_bin``, ``monotone_constraints``, ...),
    which its scikit-learn wrapper passes through. Aliases are refused: one spelling each."""
    cls = estimator_class(name, task)
    accepted = {
        parameter.name
        for klass in cls.__mro__
        if "__init__" in vars(klass) and klass is not object
        for parameter in inspect.signature(klass).parameters.values()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }
    if name == "lightgbm":
        accepted |= _lightgbm_native_params()
    return accepted


def listed_params(name: str, task: str) -> list[str]:
    """The parameter names an error message lists for ``name``: ``estimator_params``, but for
    LightGBM only its constructor's (its ~150 native parameters are too many to list)."""
    if name != "lightgbm":
        return sorted(estimator_params(name, task))
    return sorted(
        key
        for key, parameter in inspect.signature(estimator_class(name, task)).parameters.items()
        if parameter.kind is not parameter.VAR_KEYWORD
    )


def build_estimator(cfg: ModelConfig, seed: int, task: str) -> BaseEstimator:
    """Instantiate the configured estimator for ``task``; unknown parameters get a clear error.

    scikit-learn's parameter values are checked now; LightGBM and XGBoost check theirs when
    they fit, and ``fit_pipeline`` turns a refusal into the same kind of one-line error."""
    estimator_cls = estimator_class(cfg.name, task)
    accepted = estimator_params(cfg.name, task)
    unknown = sorted(set(cfg.params) - accepted)
    if unknown:
        more = " or a LightGBM parameter by its main name" if cfg.name == "lightgbm" else ""
        raise ConfigError(
            f"model.params: {', '.join(unknown)} not accepted by {cfg.name}; "
            f"valid parameters: {', '.join(listed_params(cfg.name, task))}{more}"
        )
    for parameter, reason in REFUSED_PARAMS.get(cfg.name, {}).items():
        if cfg.params.get(parameter):
            raise ConfigError(reason)
    params: dict[str, Any] = {**DEFAULT_PARAMS[cfg.name], **cfg.params}
    if task in CLASSIFICATION_TASKS and "class_weight" in accepted:
        # LightGBM's regressor has the parameter too; only classes can be weighed.
        params.setdefault("class_weight", cfg.class_weight)
    if "random_state" in accepted:
        params.setdefault("random_state", seed)
    if cfg.name == "lightgbm":
        _route_lightgbm_messages()
    estimator = estimator_cls(**params)
    if cfg.name not in BOOSTED:
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


def fit_pipeline(
    pipeline: Pipeline, features: pd.DataFrame, y: np.ndarray, class_weight: str | None
) -> Pipeline:
    """Fit ``pipeline`` (from ``build_pipeline``) on model-ready rows and the encoded target:
    the one way training, its cross-validation folds, tuning and the leaderboard fit, so every
    estimator is weighted and checked alike.

    ``class_weight`` (``model.class_weight``): a classifier without a ``class_weight``
    parameter (XGBoost) gets the same balancing as per-row sample weights computed from the
    rows it fits (for binary and multiclass alike; ``scale_pos_weight`` would cover binary
    only). A LightGBM or XGBoost refusal of its parameters becomes a ``ConfigError`` line.
    """
    step, estimator = pipeline.steps[-1]
    fit_params: dict[str, Any] = {}
    if (
        class_weight is not None
        and is_classifier(estimator)
        and "class_weight" not in estimator.get_params()
    ):
        fit_params["sample_weight"] = compute_sample_weight(class_weight, y)
    if not is_boosted(estimator):
        return pipeline.fit(features, y, **{f"{step}__{k}": v for k, v in fit_params.items()})
    if _library(estimator) == "xgboost" and is_classifier(estimator):
        _check_class_indices(y)
    # The features first, so that an error below is the library refusing its parameters.
    transformed = pipeline[:-1].fit_transform(features, y)
    try:
        estimator.fit(transformed, y, **fit_params)
    except Exception as exc:
        # LightGBMError, XGBoostError (a ValueError) or a ValueError/TypeError of the wrapper:
        # the rows are already validated numbers, so what is left is the parameters.
        if not (isinstance(exc, ValueError | TypeError) or is_boosted(exc)):
            raise
        raise ConfigError(
            f"model.params for {_library(estimator)} are invalid: {_reason(exc)}"
        ) from None
    return pipeline


def _check_class_indices(y: np.ndarray) -> None:
    # XGBoost learns classes 0..k-1 and refuses a gap; scikit-learn learns whatever is there.
    present = np.unique(y)
    if not np.array_equal(present, np.arange(len(present))):
        missing = sorted(set(range(int(present.max()) + 1)) - set(present.tolist()))
        raise DataError(
            f"the rows being fitted have no example of class index {missing[0]}: a "
            "time-ordered cross-validation fold without a rare class cannot train XGBoost; "
            "use training.split: random or fewer training.cv_folds"
        )


def _library(instance: object) -> str:
    return type(instance).__module__.split(".")[0]


def _reason(exc: BaseException) -> str:
    """The library's message without its C++ source location (LightGBM) or parameter
    documentation (XGBoost, after the first line)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return re.sub(r"\s+at \S+, line \d+\s*\.?$", "", text)


@functools.cache
def _lightgbm_native_params() -> frozenset[str]:
    """LightGBM's native parameter names (main spelling), read from the library itself; an
    empty set if a future version moves the table (then only the named ones are accepted)."""
    try:
        from lightgbm.basic import _ConfigAliases

        return frozenset(_ConfigAliases._get_all_param_aliases())
    except (ImportError, AttributeError):
        return frozenset()


@functools.cache
def _route_lightgbm_messages() -> None:
    """Send LightGBM's native messages to the ``lightgbm`` logger (its info at debug level,
    its warnings as warnings) instead of ``print``. Only a fatal error still goes straight to
    stderr from the C++ library, one line before the ``ConfigError`` that explains it."""
    import lightgbm

    lightgbm.register_logger(logging.getLogger("lightgbm"), info_method_name="debug")
