"""Feature engineering: one ColumnTransformer built from the feature config.

- numeric columns: median imputation with missing-value indicators, then standard scaling;
- categorical columns: a constant "missing" category, then one-hot encoding that ignores
  categories it has not seen (so a new plan name at scoring time does not crash batch jobs);
- derived features: pairwise products of the configured numeric ``interactions`` (e.g.
  tenure x monthly charges, roughly the customer's lifetime spend).

Keeping every transformation inside the fitted Pipeline is what makes training and serving
agree: the service sends raw records through exactly the same object.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

from .config import FeaturesConfig

MISSING_CATEGORY = "missing"


def build_preprocessor(features: FeaturesConfig) -> ColumnTransformer:
    """The ColumnTransformer for ``features`` (unfitted)."""
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    numeric = [f.name for f in features.numeric]
    categorical = [f.name for f in features.categorical]
    if numeric:
        transformers.append(
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    for left, right in features.interactions:
        transformers.append(
            (
                f"{left}_x_{right}",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median")),
                        (
                            "product",
                            PolynomialFeatures(degree=2, interaction_only=True, include_bias=False),
                        ),
                        ("scale", StandardScaler()),
                    ]
                ),
                [left, right],
            )
        )
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def to_model_frame(frame: pd.DataFrame, features: FeaturesConfig) -> pd.DataFrame:
    """Select the feature columns in config order, with the dtypes the pipeline expects.

    Numbers become float64 (missing -> NaN) and categories become object columns (missing ->
    NaN), so a frame from SQL, CSV, parquet or JSON records reaches the model identically.
    """
    columns: dict[str, pd.Series] = {}
    for feature in features.numeric:
        columns[feature.name] = pd.to_numeric(frame[feature.name], errors="raise").astype("float64")
    for categorical in features.categorical:
        series = frame[categorical.name].astype(object)
        columns[categorical.name] = series.where(series.notna(), np.nan)
    return pd.DataFrame(columns, index=frame.index)
