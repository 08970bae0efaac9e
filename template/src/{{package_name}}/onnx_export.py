"""ONNX export of the fitted pipeline, and the parity check that guards it.

The service scores with ONNX Runtime (microseconds per row, no scikit-learn or pickle in the
serving process), so the exported graph must compute what the scikit-learn pipeline computes.
``check_parity`` scores the holdout rows both ways; training publishes nothing unless they
agree: class probabilities within ``PARITY_TOLERANCE`` and no label flips (at the tuned
threshold, or of the likeliest class; a row whose scikit-learn probabilities are themselves
within the tolerance of the threshold or of each other is a tie, which float32 may break
either way), or predicted values within ``PARITY_TOLERANCE`` x max(1, |value|) for
regression. skl2onnx is imported only here, on the training side.

LightGBM and XGBoost convert with onnxmltools' converters, registered with skl2onnx on the
first export of such a pipeline, so the graph is still one pipeline with one input per
feature. LightGBM's split thresholds are float64 numbers halfway between training values, and
ONNX stores float32 ones; the export rounds each *down* to a float32 (exact for the float32
inputs the model frame holds, see ``_with_float32_thresholds``); rounded to nearest, a new
value at such a midpoint goes the other way and moved probabilities by 2e-2 on the sample.
XGBoost learns float32 thresholds already. (For the same reason the pipeline computes
interaction products in float32, see ``features``.)

Classifiers of every kind meet the same gate (probabilities within 1e-5, no label flip). A
gradient-boosted *regressor* (LightGBM, XGBoost, scikit-learn's) gets
``BOOSTED_REGRESSION_TOLERANCE`` (1e-4 x max(1, |value|)): its prediction is a sum over every
tree, which the ONNX TreeEnsemble operator adds in float32, and the rounding grows with the
number of trees. Measured on the sample's regression target (scaled difference): 2e-6 for
LightGBM and XGBoost with the shipped 300 trees; with 2000 trees 5e-6 (LightGBM), 9e-6
(scikit-learn) and 3e-5 (XGBoost, which also sums in float32 itself, in another order). A
classifier's sigmoid/softmax flattens the same drift. 1e-4 of the value stays far below any
error a regression model makes. The tolerance used is stored in the ParityReport
(``tolerance``), hence in the model's metadata, so tests read it instead of assuming one.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_regressor
from sklearn.ensemble import HistGradientBoostingRegressor

from .config import FeaturesConfig
from .errors import ModelExportError
from .errortext import typed_first_line
from .features import Float32
from .inputs import model_inputs
from .model import is_boosted
from .scoring import OnnxScorer
from .tasks import Task

PARITY_TOLERANCE = 1e-5
BOOSTED_REGRESSION_TOLERANCE = 1e-4
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


def parity_tolerance(pipeline: Any) -> float:
    """The tolerance the export of ``pipeline`` is held to (see the module docstring)."""
    estimator = pipeline.steps[-1][1]
    boosted = is_boosted(estimator) or isinstance(estimator, HistGradientBoostingRegressor)
    if boosted and is_regressor(estimator):
        return BOOSTED_REGRESSION_TOLERANCE
    return PARITY_TOLERANCE


def export_pipeline(pipeline: Any, features: FeaturesConfig) -> bytes:
    """Convert the fitted pipeline; one ONNX input per feature, and for a classifier the
    class probabilities as one array (no per-row dictionaries)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    _register_float32()
    estimator = pipeline.steps[-1][1]
    if is_boosted(estimator):
        _register_converters(type(estimator).__module__.split(".")[0])
    initial_types = [
        (name, FloatTensorType([None, 1]) if kind == "float" else StringTensorType([None, 1]))
        for name, kind in model_inputs(features)
    ]
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
    tolerance = parity_tolerance(pipeline)
    parity = task.parity(native, exported, threshold, tolerance)
    report = ParityReport(
        rows=len(frame),
        max_abs_diff=parity.max_abs_diff,
        max_scaled_diff=parity.max_scaled_diff,
        label_flips=parity.label_flips,
        tolerance=tolerance,
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
            f"tolerance {tolerance:.0e}), "
            f"{report.label_flips} label flip(s); worst {rows}. "
            "The model was not published; the previous one is still served."
        )
    return report


@functools.cache
def _register_float32() -> None:
    """``features.Float32`` is a Cast to float32 in the graph (skl2onnx's own cast converter;
    the graph's numbers are float32 already, so it changes nothing there)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.operator_converters.cast_op import convert_sklearn_cast
    from skl2onnx.shape_calculators.cast_op import calculate_sklearn_cast_transformer

    update_registered_converter(
        Float32, "ProjectFloat32", calculate_sklearn_cast_transformer, convert_sklearn_cast
    )


@functools.cache
def _register_converters(library: str) -> None:
    """Teach skl2onnx the LightGBM or XGBoost estimators (``library``), once per process:
    onnxmltools' converter for the trees, skl2onnx's shape functions, and the options our
    export passes (``zipmap``: probabilities as one array; ``nocl``)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    convert: Callable[..., None]
    if library == "lightgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor

        classifier, regressor, convert = LGBMClassifier, LGBMRegressor, _convert_lightgbm
    else:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        classifier, regressor, convert = XGBClassifier, XGBRegressor, convert_xgboost
    update_registered_converter(
        classifier,
        f"{library}_{classifier.__name__}",
        calculate_linear_classifier_output_shapes,
        convert,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        regressor,
        f"{library}_{regressor.__name__}",
        calculate_linear_regressor_output_shapes,
        convert,
    )


def _convert_lightgbm(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' LightGBM converter, given the model with float32 split thresholds."""
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    operator.raw_operator = _with_float32_thresholds(operator.raw_operator)
    convert_lightgbm(scope, operator, container)


def _with_float32_thresholds(estimator: Any) -> Any:
    """A copy of a fitted LightGBM estimator whose numeric split thresholds are float32 numbers:
    each rounded *down* to the nearest float32.

    LightGBM compares ``x <= threshold`` in float64, with thresholds halfway between two
    training values; ONNX stores thresholds in float32, rounded to the *nearest* one. A value
    first seen at scoring time can be exactly that float32 (29.96 between 29.95 and 29.97),
    and then the two disagree on the side it goes. For inputs that are float32 numbers (the
    model frame makes them so), ``x <= t`` holds exactly when ``x <= round_down(t)``: the copy
    predicts what the original predicts, and its graph does too. The published model is not
    changed."""
    import lightgbm

    lines = estimator.booster_.model_to_string().split("\n")
    tree_start = 0
    for index, line in enumerate(lines):
        if line.startswith("Tree="):
            tree_start = index
        elif line.startswith("decision_type="):
            kinds = [int(kind) for kind in line.split("=", 1)[1].split()]
            for at in range(tree_start, index):
                if lines[at].startswith("threshold="):
                    values = lines[at].split("=", 1)[1].split()
                    # Bit 0 of a decision type marks a categorical split (a category set).
                    lines[at] = "threshold=" + " ".join(
                        value if kind & 1 else repr(_round_down_float32(float(value)))
                        for value, kind in zip(values, kinds, strict=True)
                    )
    # The header's tree sizes (bytes, to parse trees in parallel) no longer hold: without
    # them LightGBM reads the trees one after another.
    lines = [line for line in lines if not line.startswith("tree_sizes=")]
    copied = copy.copy(estimator)
    copied._Booster = lightgbm.Booster(model_str="\n".join(lines))
    return copied


def _round_down_float32(value: float) -> float:
    """The largest float32 number not above ``value``."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _show(score: np.ndarray) -> str:
    return np.array2string(np.atleast_1d(score), precision=6, separator=" ")
