"""The drift reference: what the training data and the model's outputs looked like.

Built once per model version (at registration) and stored in the version's bundle as
``reference.json``; ``monitor`` compares logged traffic with it (see ``drift.py``). Per feature:

- numeric: inner bin edges at the training quantiles, the fraction of values per bin, the
  fraction missing, and a seeded sample of up to ``SAMPLE_SIZE`` values for the KS test;
- categorical: the fraction of rows per category, missing values under ``"missing"``.

The prediction profile comes from the model's holdout rows, scored with the ONNX graph the
service uses (on its own training rows a model is over-confident, so those outputs would not
look like the ones it gives to new rows), in the task's form (``drift.PredictionProfile``):

- binary classification: binned positive-class probabilities, the positive rate at the
  model's threshold and the mean probability;
- multiclass classification: the share of rows predicted as each class (every class listed,
  by its label as text) and the mean probability of the predicted class;
- regression: the predicted values binned at their quantiles, a KS sample, mean and median.

References written before 0.5.0 have no ``task`` in their prediction profile: they are binary.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, model_store
from ..atomic import replace_text
from ..config import FeaturesConfig
from ..config_base import PACKAGE
from ..errors import DataError, ModelIntegrityError, ModelNotFoundError
from ..features import raw_columns, to_model_frame
from ..inputs import MISSING_CATEGORY
from ..mlops_config import MlopsConfig
from ..outputs import Outputs
from ..scoring import load_predictor
from .drift import (
    BINARY,
    MULTICLASS,
    OTHER,
    REGRESSION,
    CategoricalProfile,
    NumericProfile,
    PredictionProfile,
    bin_fractions,
    label_text,
    quantile_edges,
)

REFERENCE_FILE = "reference.json"
SAMPLE_SIZE = 5000  # values kept per numeric column for the KS test
OPEN_TOP = 20  # values profiled one by one in a categorical column without a list


def build_reference(cfg: MlopsConfig, frame: pd.DataFrame, model_dir: Path) -> dict[str, Any]:
    """Profile the validated training table ``frame`` and the model in ``model_dir``.

    The features profiled are the model's own (from its metadata), so the reference matches
    the inputs the service logs for this version even if the config has changed since.
    """
    predictor = load_predictor(model_dir)
    metadata = predictor.metadata
    columns = to_model_frame(frame, metadata.features)
    rng = np.random.default_rng(cfg.training.seed)
    features: dict[str, NumericProfile | CategoricalProfile] = {}
    for numeric in metadata.features.numeric:
        values = columns[numeric.name].to_numpy(dtype=np.float64)
        features[numeric.name] = numeric_profile(values, cfg.monitoring.bins, rng)
    for categorical in metadata.features.categorical:
        features[categorical.name] = categorical_profile(
            columns[categorical.name], categorical.categories
        )
    holdout = _holdout_rows(frame, model_dir, cfg.data.id_column)
    scores = predictor.predict_columns(_model_columns(holdout, metadata.features))
    return {
        "model_version": metadata.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(frame),
        "bins": cfg.monitoring.bins,
        "features": features,
        "prediction": prediction_profile(predictor.outputs, scores, cfg.monitoring.bins, rng),
    }


def numeric_profile(values: np.ndarray, bins: int, rng: np.random.Generator) -> NumericProfile:
    """Quantile bins, fractions, missing fraction and a KS sample of one numeric column."""
    present = values[~np.isnan(values)]
    edges = quantile_edges(values, bins)
    return {
        "kind": "numeric",
        "edges": edges,
        "fractions": bin_fractions(values, edges).tolist(),
        "missing_fraction": float(np.isnan(values).mean()) if values.size else 0.0,
        "sample": _sample(present, rng),
    }


def categorical_profile(values: pd.Series, categories: list[str]) -> CategoricalProfile:
    """Fraction of rows per category; every configured category and ``"missing"`` appear.

    A column without a list (``unknown: other``) keeps its ``OPEN_TOP`` most frequent values
    and pools the long tail under ``OTHER`` (as the comparison pools values the reference never
    saw): hundreds of rare values would make PSI measure sampling noise, not drift."""
    shares = values.value_counts(normalize=True)
    fractions = dict.fromkeys([*categories, MISSING_CATEGORY], 0.0)
    if not categories and len(shares) > OPEN_TOP:
        kept = shares.drop(MISSING_CATEGORY, errors="ignore").head(OPEN_TOP)
        fractions[OTHER] = float(
            shares.drop(kept.index).drop(MISSING_CATEGORY, errors="ignore").sum()
        )
        shares = shares[shares.index.isin([*kept.index, MISSING_CATEGORY])]
    fractions.update({str(name): float(share) for name, share in shares.items()})
    return {"kind": "categorical", "fractions": fractions}


def prediction_profile(
    outputs: Outputs, scores: np.ndarray, bins: int, rng: np.random.Generator
) -> PredictionProfile:
    """The profile of a model's raw ``scores`` (a runtime's output) on its holdout rows."""
    rows = int(scores.shape[0])
    if outputs.task == REGRESSION:
        values = np.asarray(scores, dtype=np.float64)
        edges = quantile_edges(values, bins)
        return {
            "task": REGRESSION,
            "edges": edges,
            "fractions": bin_fractions(values, edges).tolist(),
            "sample": _sample(values, rng),
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "rows": rows,
        }
    if outputs.task == MULTICLASS:
        counts = Counter(label_text(label) for label in outputs.predicted(scores))
        return {
            "task": MULTICLASS,
            "fractions": {name: counts[name] / rows for name in map(label_text, outputs.classes)},
            "mean_probability": float(scores.max(axis=1).mean()),
            "rows": rows,
        }
    probabilities = scores[:, 1]  # the positive class
    edges = quantile_edges(probabilities, bins)
    return {
        "task": BINARY,
        "edges": edges,
        "fractions": bin_fractions(probabilities, edges).tolist(),
        "sample": _sample(probabilities, rng),
        "threshold": float(outputs.threshold),
        "positive_rate": float((probabilities >= outputs.threshold).mean()),
        "mean_probability": float(probabilities.mean()),
        "rows": rows,
    }


def write_reference(reference: dict[str, Any], path: Path) -> Path:
    """Write ``reference`` as JSON, atomically (a reader never sees half a file)."""
    text = json.dumps(reference, indent=1, sort_keys=True, allow_nan=False) + "\n"
    replace_text(path, text)
    return path


def read_reference(path: Path) -> dict[str, Any]:
    """Read a reference written by ``write_reference``; a missing or damaged file is an error
    that says how to get a new one."""
    rebuild = f"it is written when a model version is registered (`python -m {PACKAGE} train`)"
    try:
        reference = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelNotFoundError(f"drift reference {path} is missing: {rebuild}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(
            f"drift reference {path} cannot be read ({exc}): {rebuild}"
        ) from None
    missing = [
        key
        for key in ("model_version", "rows", "features", "prediction")
        if not isinstance(reference, dict) or key not in reference
    ]
    if missing:
        raise ModelIntegrityError(
            f"drift reference {path} is not a reference (no {', '.join(missing)}): {rebuild}"
        )
    result: dict[str, Any] = reference
    if isinstance(result["prediction"], dict):
        result["prediction"].setdefault("task", BINARY)  # written before 0.5.0
    return result


def _holdout_rows(frame: pd.DataFrame, model_dir: Path, id_column: str) -> pd.DataFrame:
    holdout_ids = set(model_store.read_json(model_dir / artifacts.HOLDOUT_FILE))
    rows = frame[frame[id_column].isin(holdout_ids)]
    if rows.empty:
        raise DataError(
            f"none of the holdout rows of {model_dir.name} are in the training table: build "
            "the reference from the data the model was trained on"
        )
    return rows


def _model_columns(frame: pd.DataFrame, features: FeaturesConfig) -> dict[str, Any]:
    """The raw feature columns, read as their types (what the runtimes take)."""
    return dict(raw_columns(frame, features))


def _sample(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    if values.size > SAMPLE_SIZE:
        values = rng.choice(values, size=SAMPLE_SIZE, replace=False)
    # The shortest text that reads back as the same float32 (the model's precision): the file
    # stays small, and the KS test compares at float32 precision (see drift.compare_numeric).
    return [float(str(v)) for v in np.sort(values).astype(np.float32)]
