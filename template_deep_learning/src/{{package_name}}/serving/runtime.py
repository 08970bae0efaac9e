"""The model runtime: a published ONNX model scored by ONNX Runtime, and the ranking of its
class probabilities into predictions.

NumPy and ONNX Runtime only: torch is never imported in the serving process (the exported graph
already contains the input normalisation and the softmax). The service and batch prediction
use the same predictor and the same ``rank`` function, so they return identical predictions
for the same pixels (see tests/test_parity.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import artifacts
from ..errors import ModelIntegrityError, ModelNotFoundError
from ..ortsession import create_session


class Predictor(Protocol):
    """What the service and batch prediction need from a loaded model."""

    metadata: artifacts.ModelMetadata

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...


def load_predictor(model_dir: Path) -> OnnxPredictor:
    """The predictor for the model version in ``model_dir``."""
    return OnnxPredictor(model_dir)


class OnnxPredictor:
    """A published model version scored by ONNX Runtime on one thread."""

    def __init__(self, model_dir: Path) -> None:
        self.metadata = artifacts.load_metadata(model_dir)
        path = model_dir / artifacts.ONNX_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"{path} is missing: retrain to export the model to ONNX")
        model = path.read_bytes()
        # Hash the bytes that are loaded, not the file a second time: no window for a swap.
        if hashlib.sha256(model).hexdigest() != self.metadata.onnx_sha256:
            raise ModelIntegrityError(
                f"{path} does not match the checksum in its metadata: the file was changed or "
                "damaged after training; retrain or restore it"
            )
        try:
            self._session = create_session(model)
        except Exception as exc:  # ONNX Runtime raises its own error types for bad graphs
            raise ModelIntegrityError(f"the ONNX model {path} cannot be loaded: {exc}") from None
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if artifacts.ONNX_INPUT not in inputs or artifacts.ONNX_OUTPUT not in outputs:
            raise ModelIntegrityError(
                f"{path} has inputs {inputs} and outputs {outputs}; expected an input "
                f"'{artifacts.ONNX_INPUT}' and an output '{artifacts.ONNX_OUTPUT}'"
            )
        self.input_shape = input_shape(self.metadata)
        self._self_check(path)

    def _self_check(self, path: Path) -> None:
        """Score one blank image: a graph that disagrees with its metadata (input shape, number
        of classes) is refused at load time instead of failing requests later."""
        n_classes = len(self.metadata.classes)
        try:
            probabilities = self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))
        except Exception as exc:  # ONNX Runtime's own error types
            raise ModelIntegrityError(
                f"{path} cannot score a {'x'.join(map(str, self.input_shape))} image as its "
                f"metadata describes: {exc}"
            ) from None
        if probabilities.shape != (1, n_classes):
            raise ModelIntegrityError(
                f"{path} returns {probabilities.shape[-1]} scores per image but its metadata "
                f"lists {n_classes} classes"
            )

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, n_classes]`` for images ``[N, C, H, W]`` in [0, 1]."""
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(
                f"expected images of shape [N, {', '.join(map(str, self.input_shape))}], "
                f"got {list(batch.shape)}"
            )
        probabilities: np.ndarray = self._session.run(
            [artifacts.ONNX_OUTPUT], {artifacts.ONNX_INPUT: batch}
        )[0]
        return probabilities


def input_shape(metadata: artifacts.ModelMetadata) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of one image the model takes."""
    return (metadata.channels, metadata.image_size, metadata.image_size)


def to_chw(image: Any, channels: int) -> np.ndarray:
    """One image as sent in JSON (``[H][W]`` gray, ``[H][W][3]`` RGB) as float32 ``[C, H, W]``."""
    array = np.asarray(image, dtype=np.float32)
    if channels == 1:
        return array[np.newaxis, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_json_image(pixels: np.ndarray) -> list[Any]:
    """The inverse of ``to_chw``: ``[C, H, W]`` as nested lists, ``[H][W]`` or ``[H][W][3]``."""
    image = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    nested: list[Any] = image.tolist()
    return nested


def rank(probabilities: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """Per row: the most probable class, its probability and the ``top_k`` classes, best first.

    Ties go to the class listed first (as ``argmax`` does), so the prediction is always the
    first entry of ``top_k``.
    """
    k = max(1, min(top_k, len(classes)))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(probabilities, order, axis=1).astype(np.float64).tolist()
    rows = []
    for indices, scores in zip(order.tolist(), best, strict=True):
        ranked = [
            {"label": classes[i], "probability": p} for i, p in zip(indices, scores, strict=True)
        ]
        rows.append({"prediction": ranked[0]["label"], "probability": scores[0], "top_k": ranked})
    return rows
