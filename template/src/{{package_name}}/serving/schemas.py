"""Request and response models. The record model is generated from the model's input schema;
the response model is the task's (binary, multiclass or regression).

Generating it (rather than writing it by hand) is what keeps the API, the data checks and the
model in step: wrong types, missing or unknown fields, NaN/inf, out-of-range numbers and unknown
categories are rejected by pydantic with a 422 before the model sees them.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model

from ..config import (
    MAX_CATEGORY_LENGTH,
    CategoricalFeature,
    FeaturesConfig,
    Label,
    NumericFeature,
)
from .oip import BATCH, NUMBER_DATATYPES, TensorSpec

STRICT_RECORD = ConfigDict(extra="forbid", frozen=True)


def _integral(value: Any) -> Any:
    """``6.0`` is the integer 6 (JSON has one number type and JSON Schema's ``integer`` admits
    it); ``6.5``, strings and booleans are left for strict validation to refuse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Python integers are unbounded: beyond float range pydantic's finite-number check raises
# OverflowError (a 500) instead of refusing the value, and ONNX Runtime could not take it.
MAX_ABS_INTEGER = 2**63 - 1


def _bounded_integer(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ABS_INTEGER:
        raise ValueError("Input should be within the 64-bit integer range")
    return value


def _numeric_field(feature: NumericFeature) -> tuple[Any, Any]:
    base: Any = int if feature.dtype == "int" else float
    constraints = Field(
        ge=feature.min,
        le=feature.max,
        strict=True,
        allow_inf_nan=False,
        description=feature.description or None,
    )
    field: Any = (
        Annotated[base | None, constraints] if feature.nullable else Annotated[base, constraints]
    )
    if feature.dtype == "int":
        field = Annotated[field, BeforeValidator(_bounded_integer)]
        field = Annotated[field, BeforeValidator(_integral)]
    return field, ...


def _categorical_field(feature: CategoricalFeature) -> tuple[Any, Any]:
    if feature.unknown == "other":  # any text: values outside the known ones are "other"
        allowed: Any = Annotated[str, Field(max_length=MAX_CATEGORY_LENGTH)]
    else:
        allowed = Literal[tuple(feature.categories)]
    return _field(allowed, feature.nullable, feature.description)


# A date (and time) as ISO 8601 text: pydantic alone would also take a number as Unix time,
# which batch predict (reading ISO 8601 only) would refuse.
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, str) or not ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date/time text, e.g. 2024-03-05T10:30:00Z")
    return value


def _field(kind: Any, nullable: bool, description: str) -> tuple[Any, Any]:
    described = Field(description=description or None)
    return (Annotated[kind | None, described] if nullable else Annotated[kind, described]), ...


def build_record_model(features: FeaturesConfig) -> type[BaseModel]:
    """A pydantic model with one required field per feature (nullable ones accept null):
    numbers within their bounds, listed categories, true/false, ISO 8601 date-times (naive
    ones are UTC) and text up to its ``max_length``."""
    fields: dict[str, Any] = {f.name: _numeric_field(f) for f in features.numeric}
    fields.update({f.name: _categorical_field(f) for f in features.categorical})
    fields.update({f.name: _field(StrictBool, f.nullable, f.description) for f in features.boolean})
    stamp = Annotated[datetime, BeforeValidator(_iso_text)]
    fields.update({f.name: _field(stamp, f.nullable, f.description) for f in features.datetime})
    for text in features.text:
        kind = Annotated[str, Field(max_length=text.max_length)]
        fields[text.name] = _field(kind, text.nullable, text.description)
    return create_model("Record", __config__=STRICT_RECORD, **fields)


def build_batch_model(record: type[BaseModel], max_size: int) -> type[BaseModel]:
    """``{"records": [...]}`` with at least one and at most ``max_size`` records."""
    # A runtime-built list type: typed as Any because it is not a static type to mypy.
    records: Any = Annotated[list[record], Field(min_length=1, max_length=max_size)]  # type: ignore[valid-type]
    return create_model(
        "BatchRequest", __config__=ConfigDict(extra="forbid"), records=(records, ...)
    )


class BinaryPrediction(BaseModel):
    """One scored record (binary classification)."""

    prediction: Label = Field(
        description="the positive class if probability >= the model's threshold, else the other"
    )
    probability: float = Field(description="probability of the positive class")
    model_version: str


class MulticlassPrediction(BaseModel):
    """One scored record (multiclass classification)."""

    prediction: Label = Field(description="the likeliest class")
    probabilities: dict[str, float] = Field(description="probability of each class (by label)")
    model_version: str


class RegressionPrediction(BaseModel):
    """One scored record (regression)."""

    prediction: float = Field(description="the predicted value")
    model_version: str


PREDICTION_MODELS: dict[str, type[BaseModel]] = {
    "binary_classification": BinaryPrediction,
    "multiclass_classification": MulticlassPrediction,
    "regression": RegressionPrediction,
}


def build_batch_prediction_model(prediction: type[BaseModel]) -> type[BaseModel]:
    """``{"predictions": [...], "model_version": ...}`` for the task's prediction model."""
    predictions: Any = list[prediction]  # type: ignore[valid-type]
    return create_model(
        f"Batch{prediction.__name__}",
        __doc__="Scores in request order.",
        predictions=(predictions, ...),
        model_version=(str, ...),
    )


class ModelInfo(BaseModel):
    """What ``GET /metadata`` returns."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    model_name: str
    created_at: str
    task: str
    classes: list[Label] | None = Field(description="class labels (classification)")
    positive_class: Label | None = Field(description="binary classification: the positive class")
    threshold: float | None = Field(description="binary classification: the decision threshold")
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    features: FeaturesConfig
    input_example: dict[str, Any]
    output_schema: dict[str, Any] = Field(description="JSON schema of one prediction")
    data_fingerprint: str


# --- Open Inference Protocol tensors (serving/oip.py) ---------------------------------------

# One [N, 1] tensor per raw feature: the shape of the ONNX graph's own inputs (what Triton
# shows for model.onnx) and of MLServer's pandas codec. ``[N]`` is accepted too.
FEATURE_SHAPE = (BATCH, 1)


def feature_tensors(features: FeaturesConfig) -> list[TensorSpec]:
    """The model's input tensors, one per raw feature in config order: numbers as INT64 (int
    features) or FP64 (any integer or floating datatype is taken; values are checked as in
    ``/predict``), categories, timestamps (ISO 8601) and text as BYTES, booleans as BOOL."""
    specs = [
        TensorSpec(f.name, "INT64" if f.dtype == "int" else "FP64", FEATURE_SHAPE, NUMBER_DATATYPES)
        for f in features.numeric
    ]
    specs += [TensorSpec(f.name, "BYTES", FEATURE_SHAPE) for f in features.categorical]
    specs += [TensorSpec(f.name, "BOOL", FEATURE_SHAPE) for f in features.boolean]
    specs += [TensorSpec(f.name, "BYTES", FEATURE_SHAPE) for f in features.datetime]
    specs += [TensorSpec(f.name, "BYTES", FEATURE_SHAPE) for f in features.text]
    order = {name: i for i, name in enumerate(features.names)}
    return sorted(specs, key=lambda spec: order[spec.name])


def label_datatype(classes: list[Any]) -> str:
    """The tensor datatype of a model's class labels: BOOL, INT64, or BYTES (text)."""
    if classes and all(isinstance(label, bool) for label in classes):
        return "BOOL"
    if classes and all(isinstance(label, int) and not isinstance(label, bool) for label in classes):
        return "INT64"
    return "BYTES"


def prediction_tensors(task: str, classes: list[Any]) -> list[TensorSpec]:
    """The output tensors of a task (as ``/predict`` answers): ``prediction`` (the label, or
    the value for regression) [N]; binary: ``probability`` (of the positive class) [N];
    classifiers: ``probabilities`` [N, n_classes] in the order of the model's classes."""
    if task == "regression":
        return [TensorSpec("prediction", "FP64", (BATCH,))]
    specs = [TensorSpec("prediction", label_datatype(classes), (BATCH,))]
    if task == "binary_classification":
        specs.append(TensorSpec("probability", "FP64", (BATCH,)))
    specs.append(TensorSpec("probabilities", "FP64", (BATCH, len(classes))))
    return specs
