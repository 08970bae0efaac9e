"""How the service gets its model: a loader from a model directory to a predictor, on the
configured runtime (``serving.runtime``: ONNX Runtime by default, see ``scoring``) or a factory
that replaces it (tests). Shared by the tabular and the MLOps app factories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..scoring import Predictor, load_predictor

PredictorFactory = Callable[[Path], Predictor]


def predictor_loader(
    cfg: Config, predictor_factory: PredictorFactory | None = None
) -> PredictorFactory:
    """How the service loads a model directory: ``predictor_factory`` or the configured
    runtime."""
    if predictor_factory is not None:
        return predictor_factory

    def load(directory: Path) -> Predictor:
        return load_predictor(directory, cfg.serving.runtime)

    return load
