"""Training with registration, and the retraining loop: extract fresh data -> validate ->
train a challenger -> register it -> promote it through the gate."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..data.extract import extract_training_frame
from ..data.validate import validate_frame
from ..mlops_config import MlopsConfig
from ..train import TrainResult, train_validated
from .promotion import Decision, promote
from .registry import Registered, register_training


@dataclass(frozen=True)
class RetrainResult:
    """The new model, its registry version and the gate's decision (None for a first model,
    which becomes the champion directly)."""

    trained: TrainResult
    registered: Registered
    decision: Decision | None


def train_and_register(cfg: MlopsConfig) -> tuple[TrainResult, Registered]:
    """Train on the current data and register the model as the challenger (or first champion)."""
    _, trained, registered = _train_registered(cfg)
    return trained, registered


def retrain(cfg: MlopsConfig) -> RetrainResult:
    """The whole loop; the champion changes only if the gate says so."""
    frame, trained, registered = _train_registered(cfg)
    decision = None if registered.champion else promote(cfg, frame)
    return RetrainResult(trained, registered, decision)


def _train_registered(cfg: MlopsConfig) -> tuple[pd.DataFrame, TrainResult, Registered]:
    # Extracted and validated once: the same rows train the model and build its drift
    # reference, and the gate scores both models on them.
    source = str(cfg.data.query)
    frame = validate_frame(extract_training_frame(cfg), cfg, source=source)
    trained = train_validated(cfg, frame, source)
    return frame, trained, register_training(cfg, trained, frame)
