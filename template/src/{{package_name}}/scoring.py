"""Model runtimes, shared by training (the export's parity check), batch prediction, the
service and the lifecycle: they turn records (or columns) into scores: class probabilities
``(n, k)`` for classification, values ``(n,)`` for regression (``outputs`` turns them into
predictions).

``OnnxPredictor`` (the default, ``serving.runtime: onnx``) needs only NumPy and ONNX Runtime:
nothing from scikit-learn or pandas, and no pickle, is imported in the serving process. The
scikit-learn runtime (``serving.runtime: sklearn``) lives in ``sklearn_scoring`` and is
imported only when selected. The service and batch prediction use the same runtime object, so
they return identical predictions for the same rows (see tests/test_parity.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from . import artifacts, model_store
from .config import FeaturesConfig
from .errors import ConfigError, ModelIntegrityError, ModelNotFoundError
from .errortext import first_line
from .inputs import model_columns, model_inputs, onnx_feeds
from .ortsession import create_session
from .outputs import Outputs

Runtime = Literal["onnx", "sklearn"]


class Predictor(Protocol):
    """What the service and batch prediction need from a loaded model."""

    metadata: artifacts.ModelMetadata

    outputs: Outputs

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray: ...

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


def load_predictor(model_dir: Path, runtime: Runtime = "onnx") -> Predictor:
    """The predictor for ``model_dir`` with the chosen runtime."""
    if runtime == "onnx":
        return OnnxPredictor(model_dir)
    try:
        from .sklearn_scoring import SklearnPredictor
    except ImportError as exc:
        raise ConfigError(
            f"serving.runtime 'sklearn' needs the pipeline dependencies ({exc.name} is missing): "
            "install the project with its [pipeline] extra, or use serving.runtime: onnx"
        ) from None
    predictor = SklearnPredictor(model_dir)
    smoke_test(predictor)
    return predictor


class OnnxScorer:
    """One ONNX Runtime session over an exported graph with one input per model input."""

    def __init__(self, model: bytes, features: FeaturesConfig) -> None:
        try:
            self._session = create_session(model)
        except Exception as exc:  # ONNX Runtime raises its own error types for bad graphs
            raise ModelIntegrityError(f"the ONNX model cannot be loaded: {exc}") from None
        self._features = features
        self._inputs = model_inputs(features)
        self.names = features.names
        outputs = [output.name for output in self._session.get_outputs()]
        # A classifier's graph has "probabilities" (no zipmap); a regressor's one output.
        self._classifier = "probabilities" in outputs
        self._output = "probabilities" if self._classifier else outputs[0]

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities ``(n, k)`` or values ``(n,)`` for equally long raw feature
        columns (None/NaN for missing values: the graph imputes them, or routes them for
        gradient boosting, exactly as the pipeline did in training)."""
        return self.predict_model_columns(model_columns(self._features, columns))

    def predict_model_columns(self, columns: Mapping[str, Any] | Any) -> np.ndarray:
        """The same for the model's inputs (``inputs.model_columns`` / a model frame)."""
        feeds = onnx_feeds(columns, self._inputs)
        result = np.asarray(self._session.run([self._output], feeds)[0], dtype=np.float64)
        return result if self._classifier else result.reshape(-1)


class OnnxPredictor:
    """A published model version scored by ONNX Runtime."""

    def __init__(self, model_dir: Path) -> None:
        self.metadata = artifacts.load_metadata(model_dir)
        path = model_dir / artifacts.ONNX_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"{path} is missing: retrain to export the model to ONNX")
        if model_store.sha256_file(path) != self.metadata.onnx_sha256:
            raise ModelIntegrityError(
                f"{path} does not match the checksum in its metadata: the file was changed or "
                "damaged after training; retrain or restore it"
            )
        self._scorer = OnnxScorer(path.read_bytes(), self.metadata.features)
        self.outputs = Outputs(self.metadata)
        smoke_test(self)

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        return self._scorer.predict_columns(columns)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self._scorer.predict_columns(
            {name: [record[name] for record in records] for name in self._scorer.names}
        )


def smoke_test(predictor: Predictor) -> None:
    """Score the model's own input example once, so a graph that loads but cannot score (other
    inputs or outputs than its metadata says) is refused at load time, not on every request."""
    try:
        scores = predictor.predict_records([predictor.metadata.input_example])
    except Exception as exc:  # ONNX Runtime and NumPy raise many types for a mismatched graph
        reason = first_line(exc)[:200]
        raise ModelIntegrityError(
            f"the model does not score its own input example ({reason}): retrain or restore it"
        ) from None
    problem = predictor.outputs.problem(scores, 1)
    if problem is not None:
        raise ModelIntegrityError(
            f"the model does not score its own input example ({problem} for a "
            f"{predictor.metadata.task} model): retrain or restore it"
        )
