"""Feature engineering: one ColumnTransformer built from the feature config.

What each feature type gets (derived values come from ``inputs``, shared with serving):

- numeric columns and datetime parts: median imputation, then standard scaling for the linear
  models only (trees are scale-invariant, and skipping the scaler keeps their split
  comparisons exact in the ONNX export); gradient boosting (scikit-learn's, LightGBM, XGBoost)
  takes missing values natively, so it gets no imputation at all;
- boolean columns: 0/1, missing values imputed with the most frequent one (gradient boosting:
  native);
- categorical columns: missing values become the category ``"missing"``, then one-hot encoding
  that ignores categories it has not seen (a new plan name at scoring time does not stop a
  batch job); with ``min_frequency``, values rarer than that in training are encoded like
  unknown ones;
- text columns: TF-IDF over words (lower-cased; ``ngrams: 2`` adds word pairs), the
  vocabulary capped at ``max_features``; the exported graph tokenises the same way;
- derived features: pairwise products of the configured numeric ``interactions`` (e.g.
  tenure x monthly charges, roughly the customer's lifetime spend), computed in float32 like
  the ONNX graph computes them (``Float32``), so a tree split between two nearly equal
  products means the same in both.

Every step is one that skl2onnx converts, so the fitted pipeline exports to ONNX as a whole.
Keeping every transformation inside the fitted pipeline (or in ``inputs``, which the service
runs too) is what makes training and serving agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import FeaturesConfig
from .data.coerce import parse_booleans, parse_datetimes
from .errors import DataError
from .inputs import datetime_inputs, model_columns

__all__ = [
    "Float32",
    "build_preprocessor",
    "check_trainable",
    "frequent_categories",
    "raw_columns",
    "to_model_frame",
]


def build_preprocessor(
    features: FeaturesConfig,
    *,
    scale: bool = True,
    impute: bool = True,
    frequent: Mapping[str, list[str]] | None = None,
) -> ColumnTransformer:
    """The ColumnTransformer for ``features`` (unfitted).

    ``scale``: standardise numeric columns (linear models). ``impute``: replace missing
    numbers by the training median (estimators without native missing-value support).
    ``frequent``: the categories kept by each ``min_frequency`` feature (from the training
    rows, see ``frequent_categories``).
    """
    transformers: list[tuple[str, Any, Any]] = []
    numeric = [f.name for f in features.numeric]
    numeric += [name for f in features.datetime for name in datetime_inputs(f)]
    if numeric:
        transformers.append(("num", _numeric_steps(scale=scale, impute=impute), numeric))
    boolean = [f.name for f in features.boolean]
    if boolean:
        steps = SimpleImputer(strategy="most_frequent") if impute else "passthrough"
        transformers.append(("bool", steps, boolean))
    grouped = [f.name for f in features.categorical if f.min_frequency is None]
    if grouped:
        transformers.append(("cat", OneHotEncoder(handle_unknown="ignore"), grouped))
    for feature in features.categorical:
        if feature.min_frequency is not None:
            kept = list((frequent or {}).get(feature.name, []))
            encoder = OneHotEncoder(categories=[kept], handle_unknown="ignore")
            transformers.append((f"cat_{feature.name}", encoder, [feature.name]))
    for text in features.text:
        vectorizer = TfidfVectorizer(
            max_features=text.max_features, ngram_range=(1, text.ngrams), min_df=text.min_df
        )
        # A scalar column name: the vectorizer gets 1-D text, as it expects.
        transformers.append((f"text_{text.name}", vectorizer, text.name))
    for left, right in features.interactions:
        product = PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)
        # In float32, as the ONNX graph multiplies: two products a float32 unit apart in
        # float64 (12 x 30.0 and 24 x 15.0 after float32 rounding) are one value in the graph,
        # and a split learned between them would send rows one way here, the other way there.
        steps_: list[Any] = [Float32(), SimpleImputer(strategy="median"), product]
        if scale:
            steps_.append(StandardScaler())
        transformers.append((f"{left}_x_{right}", make_pipeline(*steps_), [left, right]))
    # Dense output: every estimator accepts it and the ONNX graph stays simple.
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0)


class Float32(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Numbers as float32, the precision of the ONNX graph (exported as a Cast, see
    ``onnx_export``): what is computed from them (an interaction product) is then computed
    alike on both sides. Missing values stay NaN."""

    dtype = np.float32  # what the ONNX cast converter reads

    def fit(self, rows: Any, y: Any = None) -> Float32:
        validate_data(self, rows, dtype=np.float32, ensure_all_finite="allow-nan")
        return self

    def transform(self, rows: Any) -> np.ndarray:
        check_is_fitted(self)
        rounded: np.ndarray = validate_data(
            self, rows, dtype=np.float32, ensure_all_finite="allow-nan", reset=False
        )
        return rounded


def _numeric_steps(*, scale: bool, impute: bool) -> Any:
    steps: list[Any] = []
    if impute:
        steps.append(SimpleImputer(strategy="median"))
    if scale:
        steps.append(StandardScaler())
    return make_pipeline(*steps) if steps else "passthrough"


def frequent_categories(frame: pd.DataFrame, features: FeaturesConfig) -> dict[str, list[str]]:
    """For each categorical feature with ``min_frequency``: the values (as the model sees them)
    that occur at least that often in ``frame`` (model-ready training rows)."""
    kept: dict[str, list[str]] = {}
    for feature in features.categorical:
        if feature.min_frequency is not None:
            counts = frame[feature.name].value_counts()
            frequent = counts[counts >= feature.min_frequency].index
            kept[feature.name] = sorted(str(value) for value in frequent)
    return kept


def check_trainable(frame: pd.DataFrame, features: FeaturesConfig, source: str) -> None:
    """Refuse training rows a feature cannot learn from: a text column that is empty in every
    row (or has no term in ``min_df`` rows), a ``min_frequency`` column without one value that
    frequent. ``frame`` holds model-ready training rows."""
    for text in features.text:
        values = frame[text.name]
        if not values.str.strip().astype(bool).any():
            raise DataError(
                f"{source}: text feature {text.name} is empty in every training row: "
                "select the column that holds the text, or remove the feature"
            )
        try:
            TfidfVectorizer(min_df=text.min_df, ngram_range=(1, text.ngrams)).fit(values)
        except ValueError:
            raise DataError(
                f"{source}: no word of text feature {text.name} appears in {text.min_df} or "
                "more training rows: lower its min_df, or remove the feature"
            ) from None
    for feature in features.categorical:
        if feature.min_frequency is not None:
            counts = frame[feature.name].value_counts()
            if not (counts >= feature.min_frequency).any():
                raise DataError(
                    f"{source}: no value of {feature.name} occurs {feature.min_frequency} or "
                    "more times in the training rows: lower its min_frequency"
                )


def raw_columns(frame: pd.DataFrame, features: FeaturesConfig) -> dict[str, np.ndarray]:
    """The raw feature columns of ``frame`` as plain arrays, read as their configured types:
    numbers and booleans as float64 (NaN missing), timestamps as UTC ``datetime64[s]`` (NaT),
    categories and text as objects (None missing). What ``inputs`` and the runtimes take."""
    columns: dict[str, np.ndarray] = {}
    try:
        for feature in features.numeric:
            values = pd.to_numeric(frame[feature.name], errors="raise")
            columns[feature.name] = values.astype("float64").to_numpy(na_value=np.nan)
        for boolean in features.boolean:
            columns[boolean.name] = parse_booleans(frame[boolean.name])
        for stamp in features.datetime:
            columns[stamp.name] = parse_datetimes(frame[stamp.name])
    except (ValueError, TypeError) as exc:
        raise DataError(f"a feature column cannot be read as its configured type: {exc}") from None
    for name in [f.name for f in features.categorical] + [f.name for f in features.text]:
        series = frame[name].astype(object)
        columns[name] = series.where(series.notna(), None).to_numpy(dtype=object)
    return columns


def to_model_frame(frame: pd.DataFrame, features: FeaturesConfig) -> pd.DataFrame:
    """The model's inputs for ``frame``'s rows, with the values the pipeline expects.

    Numbers hold float32-representable values (missing -> NaN): the ONNX export computes in
    float32, and starting both from the same values keeps their tree splits identical.
    Categories are strings (missing -> ``"missing"``), text is text (missing -> empty),
    timestamps become their derived parts. A frame from SQL, CSV, parquet or JSON records
    therefore reaches the model identically.
    """
    columns = model_columns(features, raw_columns(frame, features))
    # dtype as computed: text stays object (pandas would otherwise infer its string dtype).
    return pd.DataFrame(
        {
            name: pd.Series(values, index=frame.index, dtype=values.dtype)
            for name, values in columns.items()
        },
        index=frame.index,
    )
