"""Versioned model artifacts on disk: ``models/<version>/`` plus a ``models/LATEST`` pointer.

Each version directory holds:

- ``model.onnx``: the same pipeline exported to ONNX, what the service scores with (checked
  against scikit-learn on the holdout rows before publishing);
- ``model.skops``: the fitted scikit-learn Pipeline in skops format (no pickle: loading checks
  that every type in the file is a scikit-learn or NumPy type, or one of the few others
  ``TRUSTED_TYPES`` names (LightGBM, XGBoost, this project's float32 step), before anything
  is built);
- ``metadata.json``: version, data fingerprint, metrics, threshold, input schema, an input
  example, git commit, library versions and the artifact's SHA-256;
- ``holdout.json``: the ids of the test rows, so ``evaluate`` scores exactly the same rows.

A version is written to a temporary directory and renamed into place, and ``LATEST`` is replaced
atomically afterwards, so a failed or interrupted run never changes what is being served.
This module imports no scikit-learn at import time: the service reads metadata cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, model_validator

from .config import FeaturesConfig, Label, TaskName
from .errors import ModelIntegrityError, ModelNotFoundError
from .model_store import load_metadata as _load_metadata
from .model_store import sha256_file

MODEL_FILE = "model.skops"
ONNX_FILE = "model.onnx"
HOLDOUT_FILE = "holdout.json"
# The only types a model file may contain: checked before loading (see load_pipeline).
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.")
# Named one by one, anything else from these packages is refused like any unknown type:
# this project's float32 rounding step (features.Float32), and what a LightGBM or XGBoost
# estimator adds: the wrapper, its booster (which skops stores as the library's own text/JSON
# model, not a pickle) and LightGBM's parameter dictionary.
TRUSTED_TYPES = frozenset(
    {
        f"{__package__}.features.Float32",
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
    }
)


class ModelMetadata(BaseModel):
    """What a trained model says about itself; the service and batch predict read this."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    version: str
    created_at: str
    project: str
    task: TaskName = "binary_classification"
    model_name: str
    model_params: dict[str, Any]
    target: str
    id_column: str
    # Classification: the labels in the order of the model's class indices (binary: negative,
    # positive); None for regression.
    classes: list[Label] | None = None
    positive_class: Label | None = None
    threshold: float | None  # binary classification only
    metrics: dict[str, float]
    baseline_metrics: dict[str, float] = {}
    cv_metrics: dict[str, float]
    features: FeaturesConfig
    input_example: dict[str, Any]
    data_fingerprint: str
    n_train_rows: int
    n_test_rows: int
    git_commit: str | None
    library_versions: dict[str, str]
    artifact_sha256: str
    onnx_sha256: str
    onnx_parity: dict[str, float | int | bool]

    @model_validator(mode="before")
    @classmethod
    def _before_0_5(cls, data: Any) -> Any:
        # Models trained before 0.5.0 are binary with labels 0/1 and say `positive_label: 1`.
        if isinstance(data, dict) and "positive_label" in data:
            data = dict(data)
            positive = data.pop("positive_label")
            data.setdefault("classes", [1 - positive, positive])
            data.setdefault("positive_class", positive)
        return data


def load_metadata(model_dir: Path) -> ModelMetadata:
    """A version's ``metadata.json``, validated (``model_store.load_metadata`` with this
    project's metadata model)."""
    return cast(ModelMetadata, _load_metadata(model_dir, ModelMetadata))


def save_pipeline(pipeline: object, model_dir: Path) -> str:
    """Write the fitted pipeline with skops; return the file's SHA-256."""
    import skops.io as sio

    path = model_dir / MODEL_FILE
    sio.dump(pipeline, path)
    return sha256_file(path)


def load_pipeline(model_dir: Path, metadata: ModelMetadata) -> Any:
    """Load the fitted pipeline after checking its checksum and the types it contains."""
    import skops.io as sio

    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing")
    if sha256_file(path) != metadata.artifact_sha256:
        raise ModelIntegrityError(
            f"{path} does not match the checksum in its metadata: the file was changed or "
            "damaged after training; retrain or restore it"
        )
    untrusted = sio.get_untrusted_types(file=path)
    unexpected = [
        t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES) and t not in TRUSTED_TYPES
    ]
    if unexpected:
        raise ModelIntegrityError(
            f"{path} contains types outside scikit-learn, NumPy and the few trusted LightGBM "
            "and XGBoost ones and was not loaded: " + ", ".join(unexpected)
        )
    return sio.load(path, trusted=untrusted)
