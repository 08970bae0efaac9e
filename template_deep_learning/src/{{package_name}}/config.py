"""Typed configuration: ``configs/config.yaml`` validated into frozen pydantic models.

Nothing here runs at import time. ``load_config(path)`` reads the YAML, applies environment
overrides for deployment settings (``<PACKAGE>_<SECTION>__<KEY>`` for data, tracking, serving
and paths; see ``config_base.py``) and returns a ``Config``; every function that needs settings
takes it as an argument. Relative paths resolve against the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from .config_base import (
    Frozen,
    ServerSettings,
    TrackingConfig,
    apply_env_overrides,
    config_error,
    read_yaml,
)

SAMPLE_ROOT = Path("data/sample/digits")


class SampleDataConfig(Frozen):
    """The embedded sample: scikit-learn's bundled 8x8 digits (no download).

    ``root`` is the sample's own folder: ``data`` writes images only there, and only into a
    folder that is missing or empty, so it can never add to or overwrite your images.
    """

    root: Path = SAMPLE_ROOT
    seed: int = 42


class DataConfig(Frozen):
    """An image-folder dataset: ``root/<class name>/<image>.png`` plus a split manifest.

    ``root`` is read, never written. The manifest is the project's own file (``data`` writes
    it when missing), so it must lie outside ``root`` unless ``root`` is the sample.
    """

    root: Path = SAMPLE_ROOT
    manifest: Path = Path("data/splits/manifest.csv")  # columns: path, label, split
    image_size: Annotated[int, Field(ge=4, le=512)] = 8  # images are resized to size x size
    channels: Literal[1, 3] = 1
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.15
    min_images_per_class: Annotated[int, Field(ge=2)] = 10
    max_image_bytes: Annotated[int, Field(ge=1024)] = 5_000_000
    sample: SampleDataConfig = SampleDataConfig()

    @property
    def uses_sample(self) -> bool:
        """True when training reads the sample images (``root`` is ``sample.root``)."""
        return self.root.resolve() == self.sample.root.resolve()


class ModelConfig(Frozen):
    """The CNN: one conv block per entry of ``channels``, then a dropout + linear head."""

    channels: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: [16, 32]
    )
    hidden: Annotated[int, Field(ge=1)] = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2


class TrainingConfig(Frozen):
    """Optimisation, schedule, early stopping, reproducibility and devices."""

    epochs: Annotated[int, Field(ge=1)] = 15
    batch_size: Annotated[int, Field(ge=1)] = 64
    learning_rate: Annotated[float, Field(gt=0)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    scheduler: Literal["cosine", "none"] = "cosine"
    early_stopping_patience: Annotated[int, Field(ge=1)] = 4
    grad_clip_norm: Annotated[float, Field(gt=0)] | None = 1.0
    seed: int = 42
    deterministic: bool = True
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    mixed_precision: bool = True  # used on CUDA only
    num_workers: Annotated[int, Field(ge=0)] = 0
    min_val_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.8  # quality gate


class EvaluationConfig(Frozen):
    """Reports: how many most-confused examples to show."""

    most_confused: Annotated[int, Field(ge=1, le=100)] = 16


class ExportConfig(Frozen):
    """ONNX export and its parity check against PyTorch."""

    opset: Annotated[int, Field(ge=13)] = 17
    parity_tolerance: Annotated[float, Field(gt=0)] = 1e-4


class ServingConfig(ServerSettings):
    """HTTP service settings (the connection limits and timeouts are ``ServerSettings``)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_batch_size: Annotated[int, Field(ge=1)] = 256
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4_194_304
    max_upload_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # An upload may decode to at most this many pixels (JPEGs after decoding at 1/2 to 1/8
    # scale); null: derived from the model's input (see serving/app.py, upload_pixel_limit).
    max_upload_pixels: Annotated[int, Field(ge=1)] | None = None
    # Uploads decoded at the same time, at the largest allowed size; past it: 503, Retry-After.
    max_concurrent_decodes: Annotated[int, Field(ge=1, le=64)] = 4
    top_k: Annotated[int, Field(ge=1)] = 3
    pinned_version: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class PathsConfig(Frozen):
    """Where artifacts go."""

    models_dir: Path = Path("models")
    reports_dir: Path = Path("reports")
    checkpoints_dir: Path = Path("checkpoints")


class Config(Frozen):
    """The whole project configuration."""

    project: str = "project"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    paths: PathsConfig = PathsConfig()

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> Config:
        if self.data.val_fraction + self.data.test_fraction >= 0.8:
            raise ValueError("data.val_fraction + data.test_fraction must leave >20% to train on")
        return self


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate; raise ``ConfigError`` on any problem."""
    return config_from_dict(read_yaml(path), os.environ if environ is None else environ, path)


def config_from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: object = "<dict>"
) -> Config:
    """Validate a mapping (after environment overrides) into a ``Config``."""
    try:
        return Config.model_validate(apply_env_overrides(raw, environ or {}))
    except ValidationError as exc:
        raise config_error(exc, source) from None
