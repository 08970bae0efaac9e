"""Synthetic rows drawn from the feature config, with a target that depends on them.

The project's tests train, serve and compare models on these rows instead of on one particular
dataset, so they keep passing when the config describes your data rather than the sample: every
value respects the config (numeric bounds and integer types, the listed categories, missing
values only where a feature is nullable), and the target is a seeded function of the features
(a logistic one for a binary target, a softmax over ``MULTICLASS_LABELS`` for a multiclass
one, a noisy linear one for regression), so a model has something real to learn and a quality
gate something to measure.
"""

from __future__ import annotations

import math
from typing import Any

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
# The classes of a synthetic multiclass target (the config does not list a target's classes).
MULTICLASS_LABELS = ("class_a", "class_b", "class_c")
# A synthetic regression target: mean, and noise as a share of the signal's spread.
REGRESSION_MEAN = 100.0
REGRESSION_NOISE = 0.3
# First timestamp of a synthetic training.order_column (one row per hour after it).
ORDER_START = "2024-01-01"
# Values of a categorical feature that lists none (``unknown: other``).
OPEN_LEVELS = 300
# Datetime features: uniform over two years from this start.
DATETIME_START = "2023-01-01T00:00:00"
DATETIME_SPAN_S = 2 * 365 * 86_400
# Text features: documents of this many words drawn from a vocabulary of this size.
TEXT_VOCABULARY = 40
TEXT_WORDS = 8


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
        # A high-cardinality column without a list: a few hundred made-up values.
        listed = categorical.categories or [f"{categorical.name}_{i}" for i in range(OPEN_LEVELS)]
        levels = np.asarray(listed, dtype=object)
        level_effects = effects.normal(size=len(levels))
        if categorical.categories:
            picks = rng.integers(0, len(levels), size=rows)
        else:  # a long tail, as such columns have: some values frequent, most rare
            picks = np.minimum(rng.zipf(1.4, size=rows) - 1, len(levels) - 1)
        logit += level_effects[picks]
        values = levels[picks].copy()
        if categorical.nullable:
            values[rng.random(rows) < MISSING_SHARE] = None
        columns[categorical.name] = values
    for boolean in cfg.features.boolean:
        flags = rng.random(rows) < 0.4
        logit += effects.normal() * (flags - 0.4) * 2
        values = flags.astype(object)
        if boolean.nullable:
            values[rng.random(rows) < MISSING_SHARE] = None
        columns[boolean.name] = values
    for stamp in cfg.features.datetime:
        offsets = rng.integers(0, DATETIME_SPAN_S, size=rows)
        stamps = np.datetime64(DATETIME_START, "s") + offsets.astype("timedelta64[s]")
        hours = (offsets % 86_400) / 86_400
        logit += effects.normal() * np.sin(2 * np.pi * hours) + effects.normal() * (
            offsets / DATETIME_SPAN_S - 0.5
        )
        text = np.array([f"{value}Z" for value in stamps], dtype=object)
        if stamp.nullable:
            text[rng.random(rows) < MISSING_SHARE] = None
        columns[stamp.name] = text
    for text_feature in cfg.features.text:
        words = np.asarray([f"{text_feature.name}{i}" for i in range(TEXT_VOCABULARY)])
        weights = effects.normal(size=len(words))
        picks = rng.integers(0, len(words), size=(rows, TEXT_WORDS))
        logit += weights[picks].mean(axis=1) * 2
        documents = np.array([" ".join(words[row]) for row in picks], dtype=object)
        if text_feature.nullable:
            documents[rng.random(rows) < MISSING_SHARE] = None
        columns[text_feature.name] = documents
    frame = pd.DataFrame(columns)
    if not with_target:
        return frame
    spread = logit.std()
    logit = SIGNAL * (logit - logit.mean()) / (spread if spread > 0 else 1.0)
    target = _target(cfg, logit, rng, effects)
    for leaky in cfg.data.leaky_columns:
        # Known only after the outcome: it gives the target away, as a real leak does.
        frame[leaky] = np.where(rng.random(rows) < 0.95, target, np.roll(target, 1))
    order = cfg.training.order_column
    if cfg.training.split == "time" and order and order not in frame:
        frame[order] = pd.date_range(ORDER_START, periods=rows, freq="h")
    frame[cfg.data.target] = target
    return frame


def _target(
    cfg: Config, logit: np.ndarray, rng: np.random.Generator, effects: np.random.Generator
) -> np.ndarray:
    """The task's target from the standardised signal ``logit``."""
    rows = len(logit)
    if cfg.task == "regression":
        noise = rng.normal(0.0, REGRESSION_NOISE * SIGNAL, size=rows)
        return REGRESSION_MEAN + 10.0 * (logit + noise)
    if cfg.task == "multiclass_classification":
        # Each class leans on its own mix of the signal and of pure chance.
        weights = effects.normal(size=len(MULTICLASS_LABELS))
        shifts = effects.normal(size=(rows, len(MULTICLASS_LABELS)))
        scores = np.outer(logit, weights) + rng.gumbel(size=(rows, len(MULTICLASS_LABELS)))
        scores += 0.1 * shifts
        picks = scores.argmax(axis=1)
        picks[: len(MULTICLASS_LABELS)] = np.arange(min(rows, len(MULTICLASS_LABELS)))
        return np.asarray(MULTICLASS_LABELS, dtype=object)[picks]
    intercept = -float(np.quantile(logit, 1 - POSITIVE_RATE))
    positive = rng.random(rows) < 1 / (1 + np.exp(-(logit + intercept)))
    if rows > 0 and positive.min() == positive.max():  # tiny samples: both classes, always
        positive[: max(1, rows // 4)] = not positive[0]
    negative_label, positive_label = binary_labels(cfg)
    return np.where(positive, positive_label, negative_label)


def binary_labels(cfg: Config) -> tuple[Any, Any]:
    """(negative, positive) labels of a synthetic binary target, in the type of
    ``data.positive_class``: 0/1 by default, False/True, or "not_<positive>"/"<positive>"."""
    positive = cfg.data.positive_class
    if positive is None or (isinstance(positive, int) and not isinstance(positive, bool)):
        return (0, 1) if positive in (None, 1) else (0 if positive != 0 else 1, positive)
    if isinstance(positive, bool):
        return (not positive, positive)
    return (f"not_{positive}", positive)
