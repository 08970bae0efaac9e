"""ONNX export of the fitted pipeline, and the parity check that guards it.

The service scores with ONNX Runtime (microseconds per row, no scikit-learn or pickle in the
serving process), so the exported graph must compute what the scikit-learn pipeline computes.
``check_parity`` scores the holdout rows both ways; training publishes nothing unless they
agree: class probabilities within ``PARITY_TOLERANCE`` and no label flips (at the tuned
threshold, or of the likeliest class; a row whose scikit-learn probabilities are themselves
within the tolerance of the threshold or of each other is a tie, which float32 may break
either way), or predicted values within ``PARITY_TOLERANCE`` x max(1, |value|) for
regression. skl2onnx is imported only here, on the training side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .config import FeaturesConfig
from .errors import ModelExportError
from .errortext import typed_first_line
from .inputs import model_inputs
from .scoring import OnnxScorer
from .tasks import Task

PARITY_TOLERANCE = 1e-5
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# How the graph tokenises text like scikit-learn's default token pattern (letters and digits,
# Unicode included, two or more), lower-casing under a locale every image has. Keyed by class:
# the ColumnTransformer clones its vectorizers.
TEXT_OPTIONS = {"tokenexp": r"[\p{L}\p{N}_]{2,}", "locale": "C.UTF-8"}


@dataclass(frozen=True)
class ParityReport:
    """How the ONNX graph and the scikit-learn pipeline compare on the same rows."""

    rows: int
    max_abs_diff: float
    max_scaled_diff: float  # what the tolerance bounds (regression: |diff| / max(1, |value|))
    label_flips: int
    tolerance: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_pipeline(pipeline: Any, features: FeaturesConfig) -> bytes:
    """Convert the fitted pipeline; one ONNX input per feature, and for a classifier the
    class probabilities as one array (no per-row dictionaries)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    initial_types = [
        (name, FloatTensorType([None, 1]) if kind == "float" else StringTensorType([None, 1]))
        for name, kind in model_inputs(features)
    ]
    estimator = pipeline.steps[-1][1]
    options: dict[Any, Any] = {}
    if hasattr(estimator, "predict_proba"):
        options[id(estimator)] = {"zipmap": False}
    if features.text:
        options[TfidfVectorizer] = TEXT_OPTIONS
    try:
        model = convert_sklearn(
            pipeline,
            initial_types=initial_types,
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:  # skl2onnx raises many types; all mean "cannot export this"
        raise ModelExportError(
            f"the fitted pipeline could not be converted to ONNX: {typed_first_line(exc)}"
        ) from exc
    serialized: bytes = model.SerializeToString()
    return serialized


def check_parity(
    onnx_model: bytes,
    pipeline: Any,
    frame: pd.DataFrame,
    features: FeaturesConfig,
    *,
    task: Task,
    threshold: float | None,
) -> ParityReport:
    """Score ``frame`` (model-ready rows) with both and compare; raise if they disagree."""
    native = task.scores(pipeline, frame)
    exported = OnnxScorer(onnx_model, features).predict_model_columns(frame)
    if exported.shape != native.shape:
        raise ModelExportError(
            f"the ONNX export returns shape {exported.shape}, scikit-learn {native.shape}: "
            "the model was not published"
        )
    parity = task.parity(native, exported, threshold, PARITY_TOLERANCE)
    report = ParityReport(
        rows=len(frame),
        max_abs_diff=parity.max_abs_diff,
        max_scaled_diff=parity.max_scaled_diff,
        label_flips=parity.label_flips,
        tolerance=PARITY_TOLERANCE,
        passed=parity.passed,
    )
    if not report.passed:
        rows = ", ".join(
            f"row {frame.index[i]}: sklearn {_show(native[i])} vs onnx {_show(exported[i])}"
            for i in parity.worst
        )
        raise ModelExportError(
            f"the ONNX export does not match scikit-learn on {report.rows} holdout rows: "
            f"max |difference| {report.max_abs_diff:.2e} (scaled {report.max_scaled_diff:.2e}, "
            f"tolerance {PARITY_TOLERANCE:.0e}), "
            f"{report.label_flips} label flip(s); worst {rows}. "
            "The model was not published; the previous one is still served."
        )
    return report


def _show(score: np.ndarray) -> str:
    return np.array2string(np.atleast_1d(score), precision=6, separator=" ")
