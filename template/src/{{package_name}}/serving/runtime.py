"""Model runtimes: turn validated records (or a DataFrame chunk) into probabilities.

The service and batch prediction share one runtime object per model version, which is what
makes their predictions identical for the same rows (see tests/test_parity.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .. import artifacts
from ..features import to_model_frame


class Predictor(Protocol):
    """What the service needs from a loaded model."""

    metadata: artifacts.ModelMetadata

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray: ...

    def label(self, probability: np.ndarray) -> np.ndarray: ...


class SklearnPredictor:
    """The fitted scikit-learn Pipeline loaded from its skops artifact."""

    def __init__(self, model_dir: Path) -> None:
        self.metadata = artifacts.load_metadata(model_dir)
        self._pipeline = artifacts.load_pipeline(model_dir, self.metadata)
        self._columns = self.metadata.features.names

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities for a frame holding (at least) the feature columns."""
        features = to_model_frame(frame, self.metadata.features)
        probability: np.ndarray = self._pipeline.predict_proba(features)[:, 1]
        return probability

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        frame = pd.DataFrame.from_records(list(records), columns=self._columns)
        return self.predict_frame(frame)

    def label(self, probability: np.ndarray) -> np.ndarray:
        """Class labels at the threshold tuned during training."""
        return (probability >= self.metadata.threshold).astype(int)
