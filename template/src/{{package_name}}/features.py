"""Feature engineering: one ColumnTransformer built from the feature config.

What each estimator family gets:

- numeric columns: median imputation, then standard scaling for the linear model only (trees
  are scale-invariant, and skipping the scaler keeps their split comparisons exact in the ONNX
  export); gradient boosting takes missing values natively, so it gets no imputation at all;
- categorical columns: missing values become the category ``"missing"`` (in ``to_model_frame``),
  then one-hot encoding that ignores categories it has not seen, so a new plan name at scoring
  time does not stop a batch job;
- derived features: pairwise products of the configured numeric ``interactions`` (e.g.
  tenure x monthly charges, roughly the customer's lifetime spend).

Every step is one that skl2onnx converts, so the fitted pipeline exports to ONNX as a whole.
Keeping every transformation inside the fitted pipeline is what makes training and serving
agree: the service sends raw records through exactly the same computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

from .config import FeaturesConfig

MISSING_CATEGORY = "missing"


def build_preprocessor(
    features: FeaturesConfig, *, scale: bool = True, impute: bool = True
) -> ColumnTransformer:
    """The ColumnTransformer for ``features`` (unfitted).

    ``scale``: standardise numeric columns (linear models). ``impute``: replace missing
    numbers by the training median (estimators without native missing-value support).
    """
    transformers: list[tuple[str, Any, list[str]]] = []
    numeric = [f.name for f in features.numeric]
    categorical = [f.name for f in features.categorical]
    if numeric:
        transformers.append(("num", _numeric_steps(scale=scale, impute=impute), numeric))
    if categorical:
        transformers.append(("cat", OneHotEncoder(handle_unknown="ignore"), categorical))
    for left, right in features.interactions:
        product = PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)
        steps: list[Any] = [SimpleImputer(strategy="median"), product]
        if scale:
            steps.append(StandardScaler())
        transformers.append((f"{left}_x_{right}", make_pipeline(*steps), [left, right]))
    # Dense output: every estimator accepts it and the ONNX graph stays simple.
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0)


def _numeric_steps(*, scale: bool, impute: bool) -> Any:
    steps: list[Any] = []
    if impute:
        steps.append(SimpleImputer(strategy="median"))
    if scale:
        steps.append(StandardScaler())
    return make_pipeline(*steps) if steps else "passthrough"


def to_model_frame(frame: pd.DataFrame, features: FeaturesConfig) -> pd.DataFrame:
    """Select the feature columns in config order, with the values the pipeline expects.

    Numbers become float64 holding float32-representable values (missing -> NaN): the ONNX
    export computes in float32, and starting both from the same values keeps their tree splits
    identical. Categories become strings, with missing values as ``"missing"``. A frame from
    SQL, CSV, parquet or JSON records therefore reaches the model identically.
    """
    columns: dict[str, pd.Series] = {}
    for feature in features.numeric:
        values = pd.to_numeric(frame[feature.name], errors="raise")
        columns[feature.name] = values.astype("float32").astype("float64")
    for categorical in features.categorical:
        series = frame[categorical.name].astype(object)
        filled = series.where(series.notna(), MISSING_CATEGORY)
        columns[categorical.name] = filled.map(str).astype(object)
    return pd.DataFrame(columns, index=frame.index)


def numeric_array(values: Any) -> np.ndarray:
    """A (n, 1) float32 column for the ONNX graph (``None`` -> NaN)."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)
