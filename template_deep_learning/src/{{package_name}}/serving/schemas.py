"""Request and response models. The image model is generated from the model's input shape.

Generating it (rather than writing one by hand) keeps the API and the model in step: a wrong
height, width or channel count, a value outside [0, 1], NaN/inf, a string or an unknown field
are rejected by pydantic with a 422 that names the position, before the model sees them.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..artifacts import ONNX_INPUT
from .oip import BATCH, FLOAT_DATATYPES, TensorSpec

STRICT_REQUEST = ConfigDict(extra="forbid", frozen=True)

# Strict: numbers only (no "0.5" strings, no booleans); finite and in [0, 1] like the decoded
# training images.
Pixel = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]


def _exactly(item: Any, length: int) -> Any:
    return Annotated[list[item], Field(min_length=length, max_length=length)]  # type: ignore[valid-type]


def build_image_model(image_size: int, channels: int) -> type[BaseModel]:
    """``{"pixels": [[...], ...]}``: ``image_size`` rows of ``image_size`` pixels, each a number
    in [0, 1] (grayscale) or a list of 3 such numbers (RGB)."""
    value: Any = Pixel if channels == 1 else _exactly(Pixel, 3)
    layout = "[H][W]" if channels == 1 else "[H][W][3]"
    pixels: Any = Annotated[
        _exactly(_exactly(value, image_size), image_size),
        Field(
            description=f"one {image_size}x{image_size} image as {layout} values in [0, 1] "
            "(pixel / 255); see input_example in GET /metadata"
        ),
    ]
    return create_model("ImageRequest", __config__=STRICT_REQUEST, pixels=(pixels, ...))


def build_batch_model(image: type[BaseModel], max_size: int) -> type[BaseModel]:
    """``{"records": [{"pixels": ...}, ...]}`` with at least one and at most ``max_size``."""
    # A runtime-built list type: typed as Any because it is not a static type to mypy.
    records: Any = Annotated[list[image], Field(min_length=1, max_length=max_size)]  # type: ignore[valid-type]
    return create_model("BatchRequest", __config__=STRICT_REQUEST, records=(records, ...))


class RankedClass(BaseModel):
    """One class and its probability."""

    label: str
    probability: float


class Prediction(BaseModel):
    """One classified image."""

    prediction: str = Field(description="the most probable class")
    probability: float = Field(description="its probability")
    top_k: list[RankedClass] = Field(description="the most probable classes, best first")
    model_version: str


class BatchPrediction(BaseModel):
    """Predictions in request order."""

    predictions: list[Prediction]
    model_version: str


class ModelInfo(BaseModel):
    """What ``GET /metadata`` returns."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    created_at: str
    task: str
    classes: list[str]
    image_size: int
    channels: int
    metrics: dict[str, float]
    input_example: dict[str, Any] = Field(
        description='a body that POST /predict accepts as is: {"pixels": ...}'
    )
    data_fingerprint: str
    onnx_sha256: str


class Problem(BaseModel):
    """One problem with a request."""

    field: str = Field(description="where: `body`, `file`, or a path such as `pixels.3.5`")
    message: str
    type: str


class ProblemResponse(BaseModel):
    """Every 4xx and 503 body: one readable line, and (for 4xx) the problems one by one."""

    detail: str = Field(description="what is wrong and what to do, in one line")
    errors: list[Problem] = Field(default_factory=list)


# --- Open Inference Protocol tensors (serving/oip.py) ---------------------------------------


def image_tensors(image_size: int, channels: int) -> list[TensorSpec]:
    """The model's input tensor: the ONNX graph's own, so a client written for Triton serving
    ``model.onnx`` works unchanged: ``pixels`` FP32 ``[N, C, H, W]``, values in [0, 1]
    (pixel / 255); FP16 and FP64 are taken too."""
    return [
        TensorSpec(ONNX_INPUT, "FP32", (BATCH, channels, image_size, image_size), FLOAT_DATATYPES)
    ]


def prediction_tensors(n_classes: int) -> list[TensorSpec]:
    """The output tensors: ``prediction`` (the most probable class) BYTES ``[N]`` and
    ``probabilities`` FP32 ``[N, n_classes]`` in the order of the model's classes."""
    return [
        TensorSpec("prediction", "BYTES", (BATCH,)),
        TensorSpec("probabilities", "FP32", (BATCH, n_classes)),
    ]
