"""ONNX export of the fitted pipeline, and the parity check that guards it.

The service scores with ONNX Runtime (microseconds per row, no scikit-learn or pickle in the
serving process), so the exported graph must compute what the scikit-learn pipeline computes.
``check_parity`` scores the holdout rows both ways; training publishes nothing unless the
largest probability difference is within ``PARITY_TOLERANCE`` and no label flips at the tuned
threshold. skl2onnx is imported only here, on the training side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .config import FeaturesConfig
from .errors import ModelExportError
from .serving.runtime import OnnxScorer

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class ParityReport:
    """How the ONNX graph and the scikit-learn pipeline compare on the same rows."""

    rows: int
    max_abs_diff: float
    label_flips: int
    tolerance: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_pipeline(pipeline: Any, features: FeaturesConfig) -> bytes:
    """Convert the fitted pipeline; one ONNX input per feature, probabilities as an array."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    initial_types = [(f.name, FloatTensorType([None, 1])) for f in features.numeric]
    initial_types += [(c.name, StringTensorType([None, 1])) for c in features.categorical]
    estimator = pipeline.steps[-1][1]
    try:
        model = convert_sklearn(
            pipeline,
            initial_types=initial_types,
            options={id(estimator): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:  # skl2onnx raises many types; all mean "cannot export this"
        raise ModelExportError(
            f"the fitted pipeline could not be converted to ONNX: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    serialized: bytes = model.SerializeToString()
    return serialized


def check_parity(
    onnx_model: bytes,
    pipeline: Any,
    frame: pd.DataFrame,
    features: FeaturesConfig,
    threshold: float,
) -> ParityReport:
    """Score ``frame`` (model-ready rows) with both and compare; raise if they disagree."""
    native = pipeline.predict_proba(frame)[:, 1]
    exported = OnnxScorer(onnx_model, features).predict_columns(
        {name: frame[name].to_numpy() for name in features.names}
    )
    diff = np.abs(native - exported)
    flips = int(np.sum((native >= threshold) != (exported >= threshold)))
    report = ParityReport(
        rows=len(frame),
        max_abs_diff=float(diff.max()) if len(diff) else 0.0,
        label_flips=flips,
        tolerance=PARITY_TOLERANCE,
        passed=bool(len(diff)) and float(diff.max()) <= PARITY_TOLERANCE and flips == 0,
    )
    if not report.passed:
        worst = np.argsort(diff)[::-1][:3]
        rows = ", ".join(
            f"row {frame.index[i]}: sklearn {native[i]:.6f} vs onnx {exported[i]:.6f}"
            for i in worst
        )
        raise ModelExportError(
            f"the ONNX export does not match scikit-learn on {report.rows} holdout rows: "
            f"max |difference| {report.max_abs_diff:.2e} (tolerance {PARITY_TOLERANCE:.0e}), "
            f"{flips} label flip(s) at threshold {threshold:.3f}; worst {rows}. "
            "The model was not published; the previous one is still served."
        )
    return report
