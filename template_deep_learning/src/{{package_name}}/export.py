"""ONNX export of the trained network, and the parity check that makes it safe to serve.

The exported graph is the whole model the service needs: raw [0, 1] pixels ``[N, C, H, W]``
(input ``artifacts.ONNX_INPUT``, any batch size) -> normalisation -> CNN -> softmax
probabilities (output ``artifacts.ONNX_OUTPUT``). The service and batch prediction run it with
ONNX Runtime and never import torch. Before it is published, its probabilities on the test
images are compared with PyTorch's: any difference beyond ``export.parity_tolerance``, or any
changed predicted class, stops the run.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .artifacts import ONNX_INPUT, ONNX_OUTPUT
from .errors import ModelExportError
from .ortsession import create_session

if TYPE_CHECKING:  # the import itself goes through ortsession (telemetry off first)
    from onnxruntime import InferenceSession


class ProbabilityModel(nn.Module):
    """The trained network with softmax on top: what the exported graph computes."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(pixels), dim=1)


@dataclass(frozen=True)
class Parity:
    """How closely ONNX Runtime reproduces PyTorch on the checked images."""

    images: int
    max_abs_diff: float
    argmax_mismatches: int
    tolerance: float
    passed: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def export_onnx(network: nn.Module, *, image_size: int, channels: int, opset: int) -> bytes:
    """The network (a CPU copy, evaluation mode) as ONNX bytes with a dynamic batch axis."""
    model = _cpu_copy(network)
    example = torch.rand(1, channels, image_size, image_size)
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo=True, which needs the
            # onnxscript package and takes seconds; this one is fast and exact for plain CNNs.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                Path(tmp) / "model.onnx",
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
            return (Path(tmp) / "model.onnx").read_bytes()
    except Exception as exc:
        raise ModelExportError(f"ONNX export (opset {opset}) failed: {exc}") from exc


def onnx_session(model: bytes | str) -> InferenceSession:
    try:
        return create_session(model)
    except Exception as exc:
        raise ModelExportError(f"ONNX Runtime cannot load the exported model: {exc}") from exc


def onnx_probabilities(session: InferenceSession, pixels: np.ndarray) -> np.ndarray:
    (output,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: pixels.astype(np.float32, copy=False)})
    return np.asarray(output)


def check_parity(
    onnx_model: bytes, network: nn.Module, batches: Iterable[np.ndarray], tolerance: float
) -> Parity:
    """Compare ONNX Runtime with PyTorch (CPU, float32) image by image; raise
    ``ModelExportError`` with the numbers when they disagree."""
    session = onnx_session(onnx_model)
    model = _cpu_copy(network)
    images, mismatches, max_diff = 0, 0, 0.0
    with torch.inference_mode():
        for pixels in batches:
            if len(pixels) == 0:
                continue
            expected = model(torch.from_numpy(pixels)).numpy()
            actual = onnx_probabilities(session, pixels)
            max_diff = max(max_diff, float(np.max(np.abs(expected - actual))))
            mismatches += int(np.sum(expected.argmax(axis=1) != actual.argmax(axis=1)))
            images += len(pixels)
    if images == 0:
        raise ModelExportError("no images to check the ONNX export against")
    parity = Parity(images, max_diff, mismatches, tolerance, passed=True)
    if max_diff > tolerance or mismatches:
        raise ModelExportError(
            f"the ONNX export disagrees with PyTorch on {images} test images: max |diff| "
            f"{max_diff:.2e} (export.parity_tolerance {tolerance:.0e}), {mismatches} changed "
            "predicted class(es); the model was not published"
        )
    return parity


def _cpu_copy(network: nn.Module) -> ProbabilityModel:
    """A float32 CPU copy in evaluation mode; the caller's model is left where it is."""
    return ProbabilityModel(copy.deepcopy(network)).cpu().float().eval()
