"""Versioned model artifacts on disk: ``models/<version>/`` plus a ``models/LATEST`` pointer.

Each version directory holds ``model.onnx`` (the exported network with input normalisation and
softmax inside: raw [0, 1] pixels in, class probabilities out) and ``metadata.json``. A version
is written to a temporary directory and renamed into place, then ``LATEST`` is replaced
atomically, so a failed run never changes what is being served. No torch import here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict

from .model_store import load_metadata as _load_metadata

ONNX_FILE = "model.onnx"
ONNX_INPUT = "pixels"  # float32 [N, C, H, W], values in [0, 1]
ONNX_OUTPUT = "probabilities"  # float32 [N, n_classes]


class ModelMetadata(BaseModel):
    """What a trained model says about itself; the service and batch predict read this."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    version: str
    created_at: str
    project: str
    task: str = "image_classification"
    classes: list[str]
    image_size: int
    channels: int
    metrics: dict[str, float]
    parameter_count: int
    epochs_trained: int
    input_example: list[Any]  # one image as nested lists: [H][W] (gray) or [H][W][3] (RGB)
    data_fingerprint: str
    git_commit: str | None
    library_versions: dict[str, str]
    onnx_sha256: str
    onnx_parity: dict[str, float | int | bool]
    mlflow_run_id: str | None = None


def load_metadata(model_dir: Path) -> ModelMetadata:
    """A version's ``metadata.json``, validated (``model_store.load_metadata`` with this
    project's metadata model)."""
    return cast(ModelMetadata, _load_metadata(model_dir, ModelMetadata))
