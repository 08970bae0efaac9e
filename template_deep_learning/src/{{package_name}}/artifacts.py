"""Versioned model artifacts on disk: ``models/<version>/`` plus a ``models/LATEST`` pointer.

Each version directory holds ``model.onnx`` (the exported network with input normalisation and
softmax inside: raw [0, 1] pixels in, class probabilities out) and ``metadata.json``. A version
is written to a temporary directory and renamed into place, then ``LATEST`` is replaced
atomically, so a failed run never changes what is being served. No torch import here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ModelNotFoundError
from .settings import PACKAGE

ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"
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


def new_version(data_fingerprint: str, now: datetime | None = None) -> str:
    """A sortable, unique-enough version id: UTC timestamp + data fingerprint prefix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{data_fingerprint[:8]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(models_dir: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a fresh directory, then move it to ``models_dir/version`` and point
    ``LATEST`` at it. Nothing visible changes unless ``write`` succeeds."""
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=models_dir))
    try:
        # mkdtemp makes the directory private (0700); a published model must stay readable by
        # the service's user (a mounted volume, a container running as another uid).
        staging.chmod(0o755)
        write(staging)
        final = models_dir / version
        staging.replace(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _atomic_write_text(models_dir / LATEST_FILE, version + "\n")
    return final


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).chmod(0o644)  # mkstemp files are private; the pointer must be readable too
    Path(tmp).replace(path)


def resolve_model_dir(models_dir: Path, version: str | None = None) -> Path:
    """The directory of ``version``, or of the version ``LATEST`` points at."""
    if version is None:
        try:
            version = (models_dir / LATEST_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"no trained model in {models_dir}/ (no {LATEST_FILE} file): "
                f"run `python -m {PACKAGE} train` first"
            ) from None
    model_dir = models_dir / version
    if not (model_dir / METADATA_FILE).is_file():
        raise ModelNotFoundError(f"model version '{version}' not found in {models_dir}/")
    return model_dir


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


def write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
