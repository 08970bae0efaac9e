"""Versioned model artifacts on disk: ``models/<version>/`` plus a ``models/LATEST`` pointer.

Each version directory holds ``model.onnx`` (the exported network with input normalisation and
softmax inside: raw [0, 1] pixels in, class probabilities out) and ``metadata.json``. A version
is written to a temporary directory and renamed into place, then ``LATEST`` is replaced
atomically, so a failed run never changes what is being served. No torch import here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ModelNotFoundError
from .versioning import (
    LATEST_FILE,
    METADATA_FILE,
    new_version,
    publish,
    read_json,
    resolve_model_dir,
    sha256_file,
    write_json,
)

__all__ = [
    "LATEST_FILE",
    "METADATA_FILE",
    "ONNX_FILE",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "ModelMetadata",
    "load_metadata",
    "new_version",
    "publish",
    "read_json",
    "resolve_model_dir",
    "sha256_file",
    "write_json",
    "write_metadata",
]

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


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> None:
    (model_dir / METADATA_FILE).write_text(
        json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
    )


def load_metadata(model_dir: Path) -> ModelMetadata:
    """Read and validate ``metadata.json``; a damaged file is reported, not half-used."""
    path = model_dir / METADATA_FILE
    try:
        return ModelMetadata.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path} is missing") from None
    except ValidationError as exc:
        raise ModelNotFoundError(f"{path} is not valid model metadata: {exc}") from None
