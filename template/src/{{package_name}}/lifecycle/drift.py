"""Drift statistics: compare current values with a reference profile. Pure NumPy/SciPy.

Two complementary measures per feature:

- PSI (population stability index) over the reference's bins: how far the distribution moved,
  on a scale that does not grow with the number of rows. It decides the status
  (``psi >= psi_alert``: alert, ``>= psi_warn``: warn). Rule of thumb: below 0.1 stable,
  0.1-0.25 a moderate shift, above 0.25 a major one.
- a test (Kolmogorov-Smirnov for numbers, chi-square for categories): whether the shift is
  statistically significant. With thousands of rows even tiny shifts are significant, so the
  p-value is reported next to PSI but does not raise the status on its own.

Numeric bins are the reference's quantile edges with open outer bins, so a value outside the
training range still lands in a bin; missing values are one more bin, so a surge of missing
values counts as drift. Categories that the reference never saw share one ``OTHER`` bucket.

The model's outputs are compared the same way, in the form the task gives them:

- binary classification: PSI of the positive class's probability over quantile bins, the
  positive rate at the model's threshold and the mean probability;
- multiclass classification: the class mix, the share of rows predicted as each class (PSI over
  the classes and a chi-square test), and the mean probability of the predicted class;
- regression: PSI of the predicted values over quantile bins and a KS test, and the shift of
  their mean and median.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, TypedDict

import numpy as np
from scipy import stats

Status = Literal["ok", "warn", "alert"]
STATUS_ORDER: dict[str, int] = {"ok": 0, "warn": 1, "alert": 2}
# The bucket for categories absent from the reference (angle brackets: never a real category).
OTHER = "<other>"
MAX_UNSEEN_LISTED = 10


class NumericProfile(TypedDict):
    """A numeric column in the reference. ``edges`` are the inner bin edges (the outer bins
    are open); ``fractions`` (one more than ``edges``) cover the non-missing values."""

    kind: Literal["numeric"]
    edges: list[float]
    fractions: list[float]
    missing_fraction: float
    sample: list[float]


class CategoricalProfile(TypedDict):
    """A categorical column in the reference: the fraction of rows per category."""

    kind: Literal["categorical"]
    fractions: dict[str, float]


BINARY: Final = "binary_classification"
MULTICLASS: Final = "multiclass_classification"
REGRESSION: Final = "regression"


class BinaryPredictionProfile(TypedDict):
    """A binary model's positive-class probabilities on its holdout rows, binned like a
    numeric column, with the positive rate at its threshold."""

    task: Literal["binary_classification"]
    edges: list[float]
    fractions: list[float]
    sample: list[float]
    threshold: float
    positive_rate: float
    mean_probability: float
    rows: int


class MulticlassPredictionProfile(TypedDict):
    """A multiclass model's class mix on its holdout rows: the share of rows predicted as each
    class (labels as text, in the model's class order) and the mean probability of the
    predicted class."""

    task: Literal["multiclass_classification"]
    fractions: dict[str, float]
    mean_probability: float
    rows: int


class RegressionPredictionProfile(TypedDict):
    """A regression model's predicted values on its holdout rows, binned like a numeric
    column."""

    task: Literal["regression"]
    edges: list[float]
    fractions: list[float]
    sample: list[float]
    mean: float
    median: float
    rows: int


PredictionProfile = (
    BinaryPredictionProfile | MulticlassPredictionProfile | RegressionPredictionProfile
)


@dataclass(frozen=True)
class Predictions:
    """One model version's outputs as logged: ``scores`` (binary: the positive class's
    probability; multiclass: the predicted class's; regression: the predicted value; NaN where
    unknown) and, for classification, the predicted labels as text."""

    scores: np.ndarray
    labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Thresholds:
    """PSI levels for warn/alert, and the significance level reported for the tests."""

    psi_warn: float
    psi_alert: float
    p_value: float


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison, as it appears in the drift report."""

    kind: Literal["numeric", "categorical"]
    psi: float
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    significant: bool
    status: Status
    unseen_categories: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["unseen_categories"] = list(self.unseen_categories)
        if self.kind == "numeric":
            del result["unseen_categories"]
        return result


@dataclass(frozen=True)
class BinaryPredictionDrift:
    """How a binary model's outputs moved: PSI of the probabilities, positive rate and mean."""

    psi: float
    reference_positive_rate: float
    current_positive_rate: float
    reference_mean_probability: float
    current_mean_probability: float
    rows: int
    status: Status
    task: Literal["binary_classification"] = BINARY

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MulticlassPredictionDrift:
    """How a multiclass model's class mix moved: PSI and chi-square over the predicted classes
    (labels it was not trained on, if any, under ``OTHER``), share per class, mean probability
    of the predicted class (None when no score was logged)."""

    psi: float
    test: Literal["chi2"]
    statistic: float
    p_value: float
    significant: bool
    reference_shares: dict[str, float]
    current_shares: dict[str, float]
    reference_mean_probability: float
    current_mean_probability: float | None
    rows: int
    status: Status
    task: Literal["multiclass_classification"] = MULTICLASS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegressionPredictionDrift:
    """How a regression model's predicted values moved: PSI over the reference's quantile bins,
    a KS test, and the shift of their mean and median."""

    psi: float
    test: Literal["ks"]
    statistic: float
    p_value: float
    significant: bool
    reference_mean: float
    current_mean: float
    reference_median: float
    current_median: float
    rows: int
    status: Status
    task: Literal["regression"] = REGRESSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PredictionDrift = BinaryPredictionDrift | MulticlassPredictionDrift | RegressionPredictionDrift


def label_text(label: object) -> str:
    """A class label as profiles and reports spell it, the way the API's ``probabilities``
    keys do: ``str(label)`` (so ``"gold"``, ``1`` and ``True`` become "gold", "1", "True")."""
    return str(label)


def psi(
    ref_fractions: Sequence[float] | np.ndarray,
    cur_fractions: Sequence[float] | np.ndarray,
    eps: float = 1e-4,
) -> float:
    """Population stability index: sum((cur - ref) * ln(cur / ref)) over the bins.

    Empty bins are clipped to ``eps`` so a bin that only one side fills adds a large but
    finite amount instead of infinity.
    """
    ref = np.clip(np.asarray(ref_fractions, dtype=np.float64), eps, None)
    cur = np.clip(np.asarray(cur_fractions, dtype=np.float64), eps, None)
    if ref.shape != cur.shape:
        raise ValueError(f"psi: {ref.size} reference bins but {cur.size} current bins")
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def status_for(psi_value: float, thresholds: Thresholds) -> Status:
    """The status a PSI value earns."""
    if psi_value >= thresholds.psi_alert:
        return "alert"
    if psi_value >= thresholds.psi_warn:
        return "warn"
    return "ok"


def worst_status(statuses: Iterable[Status]) -> Status:
    """The most severe status (``ok`` for none)."""
    return max(statuses, key=STATUS_ORDER.__getitem__, default="ok")


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner bin edges at the quantiles of ``values`` (non-missing), duplicates removed.

    A discrete column (e.g. mostly zeros) yields fewer distinct edges, hence fewer bins.
    """
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return []
    inner = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(inner)]


def bin_fractions(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Fraction of the non-missing ``values`` in each bin of ``edges`` (len(edges) + 1 bins).

    Bin ``i`` holds ``edges[i-1] <= x < edges[i]``; the first and last bins are open.
    """
    finite = values[~np.isnan(values)]
    counts = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=np.float64), finite, side="right"),
        minlength=len(edges) + 1,
    )
    return counts / finite.size if finite.size else np.zeros(len(edges) + 1)


def with_missing(fractions: Sequence[float] | np.ndarray, missing_fraction: float) -> np.ndarray:
    """Bins over all rows: the non-missing fractions scaled down, plus a missing-value bin."""
    scaled = np.asarray(fractions, dtype=np.float64) * (1.0 - missing_fraction)
    return np.append(scaled, missing_fraction)


def compare_numeric(
    profile: NumericProfile, current: np.ndarray, thresholds: Thresholds
) -> FeatureDrift:
    """PSI over the reference bins (plus missing) and a KS test against the reference sample."""
    values = np.asarray(current, dtype=np.float64)
    missing = float(np.isnan(values).mean()) if values.size else 0.0
    psi_value = psi(
        with_missing(profile["fractions"], profile["missing_fraction"]),
        with_missing(bin_fractions(values, profile["edges"]), missing),
    )
    present = values[~np.isnan(values)]
    if present.size and profile["sample"]:
        # At float32 precision, as the model sees values (and as the sample is stored):
        # otherwise an average such as 1/3 would not tie with itself and fake a shift.
        result = stats.ks_2samp(
            np.asarray(profile["sample"], dtype=np.float32), present.astype(np.float32)
        )
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        # Nothing to test (all values missing on one side): PSI's missing bin shows it.
        statistic, p_value = 0.0, 1.0
    return FeatureDrift(
        kind="numeric",
        psi=psi_value,
        test="ks",
        statistic=statistic,
        p_value=p_value,
        significant=p_value < thresholds.p_value,
        status=status_for(psi_value, thresholds),
    )


def category_counts(values: Iterable[str], known: Iterable[str]) -> dict[str, int]:
    """Counts per known category, with every other value counted under ``OTHER``."""
    counts = dict.fromkeys([*known, OTHER], 0)
    for value in values:
        counts[value if value in counts else OTHER] += 1
    return counts


def compare_categorical(
    profile: CategoricalProfile,
    current: Sequence[str],
    thresholds: Thresholds,
    eps: float = 1e-4,
) -> FeatureDrift:
    """PSI over the categories (plus ``OTHER``) and a chi-square goodness-of-fit test.

    The test's expected counts come from the reference fractions, smoothed by ``eps`` so a
    category the reference never saw has a small expected count instead of zero.
    """
    # A column without a list pools its long tail under OTHER in the reference already.
    reference = {**profile["fractions"], OTHER: profile["fractions"].get(OTHER, 0.0)}
    known = [name for name in reference if name != OTHER]
    counts = category_counts(current, known)
    total = sum(counts.values())
    names = list(reference)
    ref = np.array([reference[name] for name in names], dtype=np.float64)
    observed = np.array([counts[name] for name in names], dtype=np.float64)
    cur = observed / total if total else np.zeros_like(observed)
    psi_value = psi(ref, cur, eps)

    # Buckets empty on both sides carry no information; leaving them in only adds degrees of
    # freedom.
    used = (ref > 0) | (observed > 0)
    if total and used.sum() >= 2:
        expected = np.clip(ref[used], eps, None)
        expected = expected / expected.sum() * total
        result = stats.chisquare(observed[used], expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        statistic, p_value = 0.0, 1.0
    unseen = sorted({value for value in current if value not in reference})
    return FeatureDrift(
        kind="categorical",
        psi=psi_value,
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        significant=p_value < thresholds.p_value,
        status=status_for(psi_value, thresholds),
        unseen_categories=tuple(unseen[:MAX_UNSEEN_LISTED]),
    )


def compare_predictions(
    profile: PredictionProfile, current: Predictions, thresholds: Thresholds
) -> PredictionDrift:
    """Compare one model version's logged outputs with its reference, the task's way (see the
    module docstring). A ``ValueError`` when there is nothing to compare."""
    if profile["task"] == MULTICLASS:
        return _compare_class_mix(profile, current, thresholds)
    values = np.asarray(current.scores, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("compare_predictions: no scores to compare")
    if profile["task"] == REGRESSION:
        return _compare_values(profile, values, thresholds)
    psi_value = psi(profile["fractions"], bin_fractions(values, profile["edges"]))
    return BinaryPredictionDrift(
        psi=psi_value,
        reference_positive_rate=profile["positive_rate"],
        current_positive_rate=float((values >= profile["threshold"]).mean()),
        reference_mean_probability=profile["mean_probability"],
        current_mean_probability=float(values.mean()),
        rows=int(values.size),
        status=status_for(psi_value, thresholds),
    )


def _compare_class_mix(
    profile: MulticlassPredictionProfile, current: Predictions, thresholds: Thresholds
) -> MulticlassPredictionDrift:
    if not current.labels:
        raise ValueError("compare_predictions: no predicted classes to compare")
    reference = profile["fractions"]
    mix = compare_categorical(
        {"kind": "categorical", "fractions": reference}, current.labels, thresholds
    )
    counts = category_counts(current.labels, reference)
    total = len(current.labels)
    shares = {name: count / total for name, count in counts.items() if name != OTHER}
    if counts[OTHER]:
        shares[OTHER] = counts[OTHER] / total
    scores = np.asarray(current.scores, dtype=np.float64)
    scores = scores[~np.isnan(scores)]
    return MulticlassPredictionDrift(
        psi=mix.psi,
        test="chi2",
        statistic=mix.statistic,
        p_value=mix.p_value,
        significant=mix.significant,
        reference_shares=dict(reference),
        current_shares=shares,
        reference_mean_probability=profile["mean_probability"],
        current_mean_probability=float(scores.mean()) if scores.size else None,
        rows=total,
        status=mix.status,
    )


def _compare_values(
    profile: RegressionPredictionProfile, values: np.ndarray, thresholds: Thresholds
) -> RegressionPredictionDrift:
    spread = compare_numeric(
        {
            "kind": "numeric",
            "edges": profile["edges"],
            "fractions": profile["fractions"],
            "missing_fraction": 0.0,
            "sample": profile["sample"],
        },
        values,
        thresholds,
    )
    return RegressionPredictionDrift(
        psi=spread.psi,
        test="ks",
        statistic=spread.statistic,
        p_value=spread.p_value,
        significant=spread.significant,
        reference_mean=profile["mean"],
        current_mean=float(values.mean()),
        reference_median=profile["median"],
        current_median=float(np.median(values)),
        rows=int(values.size),
        status=spread.status,
    )
