"""The scikit-learn runtime (``serving.runtime: sklearn``): the fitted Pipeline from its skops
artifact. Slower than ONNX Runtime (milliseconds per request, not microseconds) and it needs
the [pipeline] dependencies; kept selectable for debugging an export and for estimators that
do not convert. Imported only when selected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts
from .inputs import model_columns
from .outputs import Outputs


class SklearnPredictor:
    """A published model version scored by its scikit-learn Pipeline."""

    def __init__(self, model_dir: Path) -> None:
        self.metadata = artifacts.load_metadata(model_dir)
        self._pipeline = artifacts.load_pipeline(model_dir, self.metadata)
        self.outputs = Outputs(self.metadata)

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        frame = pd.DataFrame(model_columns(self.metadata.features, columns))
        if self.outputs.is_classifier:
            return np.asarray(self._pipeline.predict_proba(frame), dtype=np.float64)
        return np.asarray(self._pipeline.predict(frame), dtype=np.float64).reshape(-1)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        names = self.metadata.features.names
        return self.predict_columns({name: [record[name] for record in records] for name in names})
