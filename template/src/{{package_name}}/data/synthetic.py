"""Synthetic rows drawn from the feature config, with a target that depends on them.

The project's tests train, serve and compare models on these rows instead of on one particular
dataset, so they keep passing when the config describes your data rather than the sample: every
value respects the config (numeric bounds and integer types, the listed categories, missing
values only where a feature is nullable), and the target is a seeded logistic function of the
features, so a model has something real to learn and a quality gate something to measure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import Config, NumericFeature

# Numeric features without bounds are drawn from this span (from ``min``, or up to ``max``).
DEFAULT_SPAN = 100.0
# Share of missing values in a nullable feature.
MISSING_SHARE = 0.1
# Signal strength: the logit's standard deviation (about 0.9 ROC-AUC for the ideal model).
SIGNAL = 3.0
# Share of positive rows (the intercept is set so the target is imbalanced, as it usually is).
POSITIVE_RATE = 0.3


def numeric_bounds(feature: NumericFeature) -> tuple[float, float]:
    """The interval values of ``feature`` are drawn from (its bounds, or a default span)."""
    if feature.min is not None and feature.max is not None:
        low, high = feature.min, feature.max
    elif feature.min is not None:
        low, high = feature.min, feature.min + DEFAULT_SPAN
    elif feature.max is not None:
        low, high = feature.max - DEFAULT_SPAN, feature.max
    else:
        low, high = 0.0, DEFAULT_SPAN
    if feature.dtype == "int":
        low, high = float(math.ceil(low)), float(math.floor(high))
        if low > high:  # no integer inside the bounds: the config is the problem, not us
            high = low
    return low, high


def synthetic_frame(
    cfg: Config, rows: int, *, seed: int = 0, with_target: bool = True
) -> pd.DataFrame:
    """``rows`` rows with the id column, every feature, the leaky columns and the target.

    Without ``with_target`` the rows look like a scoring table: id and features only. The same
    ``cfg`` and ``seed`` give the same rows.
    """
    rng = np.random.default_rng(seed)
    effects = np.random.default_rng(seed + 10_007)  # the true model: independent of ``rows``
    columns: dict[str, object] = {cfg.data.id_column: np.arange(1, rows + 1)}
    logit = np.zeros(rows)
    for feature in cfg.features.numeric:
        low, high = numeric_bounds(feature)
        if feature.dtype == "int":
            values = rng.integers(int(low), int(high) + 1, size=rows).astype(float)
        else:
            values = rng.uniform(low, high, size=rows)
        scaled = (values - low) / (high - low) - 0.5 if high > low else np.zeros(rows)
        logit += effects.normal() * scaled * math.sqrt(12)  # unit variance per feature
        if feature.nullable:
            values[rng.random(rows) < MISSING_SHARE] = np.nan
        columns[feature.name] = (
            pd.array(values, dtype="Int64")
            if feature.dtype == "int"
            else pd.array(values, dtype="Float64")
        )
    for categorical in cfg.features.categorical:
        levels = np.asarray(categorical.categories, dtype=object)
        level_effects = effects.normal(size=len(levels))
        picks = rng.integers(0, len(levels), size=rows)
        logit += level_effects[picks]
        values = levels[picks].copy()
        if categorical.nullable:
            values[rng.random(rows) < MISSING_SHARE] = None
        columns[categorical.name] = values
    frame = pd.DataFrame(columns)
    if not with_target:
        return frame
    spread = logit.std()
    logit = SIGNAL * (logit - logit.mean()) / (spread if spread > 0 else 1.0)
    intercept = -float(np.quantile(logit, 1 - POSITIVE_RATE))
    target = (rng.random(rows) < 1 / (1 + np.exp(-(logit + intercept)))).astype(int)
    if rows > 0 and target.min() == target.max():  # tiny samples: both classes, always
        target[: max(1, rows // 4)] = 1 - target[0]
    for leaky in cfg.data.leaky_columns:
        # Known only after the outcome: it gives the target away, as a real leak does.
        frame[leaky] = np.where(rng.random(rows) < 0.95, target, 1 - target)
    frame[cfg.data.target] = target
    return frame
