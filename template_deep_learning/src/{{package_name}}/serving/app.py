"""FastAPI app factory for the image classifier.

``create_app(cfg)`` builds a fresh app (no module-level app, no global state) on the shared
plumbing in ``core`` (background model loading, ``/health``, ``/ready``, ``/metrics``,
observability) and adds ``GET /metadata``, ``POST /predict`` (pixels as JSON),
``POST /predict/image`` (an uploaded image file) and ``POST /predict/batch``, and the Open
Inference Protocol's ``/v2`` routes (``oip``; ``ImageInference`` maps its tensors). Bad input
gets a 4xx with a message that names the problem, never a 500.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import __version__, artifacts, model_store
from ..artifacts import ONNX_INPUT
from ..config import Config, ServingConfig
from ..config_base import PACKAGE
from ..errors import DataError, ProjectError
from ..imaging import FORMAT_NAMES, ImageTooLargeError, decode_image, encode_png, read_header
from .core import (
    create_service,
    current_model,
    json_body,
    json_response,
    problems_response,
    unsupported_media,
)
from .observability import ServiceMetrics
from .oip import Inference, InferenceError, Output, Tensor, TensorSpec, add_inference_protocol
from .runtime import Predictor, input_shape, load_predictor, rank
from .schemas import (
    BatchPrediction,
    ModelInfo,
    Prediction,
    ProblemResponse,
    build_batch_model,
    build_image_model,
    image_tensors,
    prediction_tensors,
)

PredictorFactory = Callable[[Path], Predictor]
# Bodies up to this size are validated and scored on the event loop (tens of microseconds for
# a small image); larger ones, and every uploaded file, go to the thread pool so that /health
# and small requests keep being answered meanwhile (ONNX Runtime releases the GIL).
INLINE_BODY_BYTES = 32_768
# An upload within serving.max_upload_bytes can still decompress to a huge bitmap (a 73 KB PNG
# can declare 5000x5000 pixels). Unless serving.max_upload_pixels says otherwise, an upload may
# decode to (UPLOAD_SCALE x the model's side)^2 pixels, at least MIN_UPLOAD_PIXELS (ordinary
# screenshots and scans pass for small models) and at most MAX_UPLOAD_PIXELS.
UPLOAD_SCALE = 64
MIN_UPLOAD_PIXELS = 1024 * 1024
MAX_UPLOAD_PIXELS = 25_000_000
# What an upload may declare: the accepted image types, a generic binary one or none (the
# bytes decide which format it is).
UPLOAD_TYPES = frozenset(
    {
        "image/png",
        "image/x-png",
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/bmp",
        "image/x-bmp",
        "image/x-ms-bmp",
        "image/gif",
        "image/webp",
        "application/octet-stream",
    }
)
UPLOAD_TYPE_NAMES = "image/png, image/jpeg, image/bmp, image/gif, image/webp"
RETRY_AFTER_S = 1
# A JSON body may hold up to this many times the commas, brackets and braces of the largest
# valid request before it is refused unparsed (the slack keeps near misses, such as one row or
# one record too many, on the path that explains them in detail).
SCAN_SLACK = 2
SHAPE_ERRORS = {"too_short", "too_long", "list_type", "float_type"}


def create_app(cfg: Config, predictor_factory: PredictorFactory | None = None) -> FastAPI:
    """Build the service for the model version ``cfg.serving.pinned_version`` (default: LATEST).

    The request schema comes from the model's metadata (image size and channels) when a model
    exists, so the API always matches the model it serves; without a model it falls back to
    the config's data section and ``/ready`` explains what to do.
    """
    model_dir: Path | None = None
    image_size: int = cfg.data.image_size
    channels: int = cfg.data.channels
    problem = "model is loading"
    try:
        model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, cfg.serving.pinned_version)
        model_metadata = artifacts.load_metadata(model_dir)
        image_size, channels = model_metadata.image_size, model_metadata.channels
    except ProjectError as exc:
        problem = str(exc)

    def load(directory: Path) -> Predictor:
        predictor = (predictor_factory or load_predictor)(directory)
        meta = predictor.metadata
        # One upload's path end to end before /ready says yes: Pillow's format plugins are
        # imported on first use, which would otherwise land on the first caller.
        blank = encode_png(np.zeros(input_shape(meta), np.float32))
        decode_image(blank, meta.image_size, meta.channels)
        return predictor

    app, state, metrics = create_service(
        title=f"{cfg.project} prediction service",
        version=__version__,
        max_body_bytes=cfg.serving.max_body_bytes,
        model_dir=model_dir,
        load=load,
        problem=problem,
    )
    max_batch = cfg.serving.max_batch_size
    image_model = build_image_model(image_size, channels)
    batch_model = build_batch_model(image_model, max_batch)
    layout = f"{image_size} rows of {image_size} " + (
        "numbers" if channels == 1 else "[r, g, b] triples"
    )
    shape_hint = f"expected {layout}, each value in [0, 1] (see input_example in /metadata)"
    one_image = _JsonLimits.for_request(image_size, records=None)
    full_batch = _JsonLimits.for_request(image_size, records=max_batch)
    scorer = _Scorer(metrics, cfg.serving.top_k, channels)
    max_upload = cfg.serving.max_upload_bytes
    max_pixels = upload_pixel_limit(cfg.serving, image_size)
    decodes = _DecodeBudget(cfg.serving.max_concurrent_decodes * max_pixels)

    @app.get(
        "/metadata",
        response_model=ModelInfo,
        tags=["model"],
        responses={503: _problem_doc("no model loaded (yet): the reason")},
    )
    async def metadata() -> ModelInfo:
        """Model version, classes, input shape, metrics and a body ``POST /predict`` accepts."""
        meta = current_model(state).metadata
        return ModelInfo(
            model_version=meta.version,
            created_at=meta.created_at,
            task=meta.task,
            classes=meta.classes,
            image_size=meta.image_size,
            channels=meta.channels,
            metrics=meta.metrics,
            input_example={"pixels": meta.input_example},
            data_fingerprint=meta.data_fingerprint,
            onnx_sha256=meta.onnx_sha256,
        )

    def score_one(body: bytes, predictor: Predictor) -> Response:
        if one_image.exceeded_by(body):
            return _problem(
                413,
                "pixels",
                f"the body holds more values than one image: {shape_hint}",
                "too_large",
            )
        try:
            request = image_model.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc, shape_hint)
        return json_response(scorer.score([request.pixels], predictor)[0])  # type: ignore[attr-defined]

    def score_batch(body: bytes, predictor: Predictor) -> Response:
        # Counted before parsing: a few MB of tiny records would otherwise become millions of
        # parsed values (hundreds of MB) before the length check refuses them.
        if full_batch.exceeded_by(body):
            return _problem(
                413,
                "records",
                f"the body holds more values than {max_batch} records of {layout} can: send at "
                f"most {max_batch} records per request (serving.max_batch_size)",
                "too_large",
            )
        try:
            request = batch_model.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc, shape_hint)
        images = [record.pixels for record in request.records]  # type: ignore[attr-defined]
        return json_response(
            {
                "predictions": scorer.score(images, predictor),
                "model_version": predictor.metadata.version,
            }
        )

    async def handle_json(
        request: Request, score: Callable[[bytes, Predictor], Response]
    ) -> Response:
        predictor = current_model(state)
        if (refused := unsupported_media(request)) is not None:
            return refused
        body = await request.body()
        if len(body) <= INLINE_BODY_BYTES:
            return score(body, predictor)
        return await run_in_threadpool(score, body, predictor)

    body_too_large = f"body over serving.max_body_bytes ({cfg.serving.max_body_bytes} bytes)"

    # The JSON routes parse and validate the body themselves (one pydantic call on the raw
    # bytes) instead of through FastAPI's dependency machinery, which costs more than scoring a
    # small image; the OpenAPI schema still documents the generated request model.
    @app.post(
        "/predict",
        response_model=Prediction,
        tags=["model"],
        openapi_extra=json_body(image_model),
        responses={
            413: _problem_doc(f"{body_too_large}, or more values than one image holds"),
            415: _problem_doc("body not sent as application/json"),
            422: _problem_doc("malformed JSON, or invalid pixels (each problem by position)"),
            503: _problem_doc("no model loaded (yet): the reason"),
        },
    )
    async def predict(request: Request) -> Response:
        """Classify one image sent as pixel values (the ``input_example`` of ``/metadata``)."""
        return await handle_json(request, score_one)

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["model"],
        openapi_extra=json_body(batch_model),
        responses={
            413: _problem_doc(f"{body_too_large}, or clearly more than max_batch_size records"),
            415: _problem_doc("body not sent as application/json"),
            422: _problem_doc("malformed JSON, invalid images, no records or too many"),
            503: _problem_doc("no model loaded (yet): the reason"),
        },
    )
    async def predict_batch(request: Request) -> Response:
        """Classify up to ``serving.max_batch_size`` images in one request, in order."""
        return await handle_json(request, score_batch)

    @app.post(
        "/predict/image",
        response_model=Prediction,
        tags=["model"],
        openapi_extra=_upload_body(max_upload, max_pixels),
        responses={
            413: _problem_doc(
                f"file over serving.max_upload_bytes, image over {max_pixels:,} pixels "
                f"(serving.max_upload_pixels), or {body_too_large}"
            ),
            415: _problem_doc(f"not multipart/form-data, or a file type other than {FORMAT_NAMES}"),
            422: _problem_doc("malformed multipart body, no 'file' field, or not a readable image"),
            503: {
                **_problem_doc(
                    "no model loaded (yet), or serving.max_concurrent_decodes uploads are being "
                    "decoded: retry after Retry-After seconds"
                ),
                "headers": {
                    "Retry-After": {
                        "description": "seconds to wait (when busy decoding other uploads)",
                        "schema": {"type": "integer"},
                    }
                },
            },
        },
    )
    async def predict_image(request: Request) -> Response:
        """Classify an uploaded image file (form field ``file``): PNG, JPEG, BMP, GIF or WebP.

        It is decoded, converted and resized exactly as the training images were."""
        predictor = current_model(state)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _problem(
                415,
                "body",
                "send the image as multipart/form-data in a field named 'file' "
                "(e.g. curl -F file=@digit.png)",
                "unsupported_media_type",
            )
        try:
            async with request.form(max_files=1) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    return _problem(
                        422, "file", "no image: upload it in a form field named 'file'", "missing"
                    )
                declared = (upload.content_type or "").lower().split(";")[0].strip()
                if declared and declared not in UPLOAD_TYPES:
                    return _problem(
                        415,
                        "file",
                        f"content type '{declared}' is not accepted: send {UPLOAD_TYPE_NAMES} "
                        "or application/octet-stream",
                        "unsupported_media_type",
                    )
                name = upload.filename or "upload"
                data = await upload.read(max_upload + 1)
        except HTTPException as exc:  # Starlette's answer to a malformed multipart body
            return _problem(
                422,
                "body",
                f"malformed multipart/form-data body: {exc.detail}",
                "multipart_invalid",
            )
        if len(data) > max_upload:
            return _problem(
                413,
                "file",
                f"image larger than {max_upload} bytes (serving.max_upload_bytes)",
                "too_large",
            )
        unreadable = f"'{name}' is not a readable image ({FORMAT_NAMES})"
        # The header alone says how large the decoded image will be: refuse a bomb before
        # decoding a single pixel, and count the rest against the decode budget.
        try:
            header = read_header(data, image_size)
        except ImageTooLargeError as exc:
            return _problem(413, "file", str(exc), "too_large")
        except DataError:
            return _problem(422, "file", unreadable, "invalid_image")
        pixels = header.decoded_pixels
        if pixels > max_pixels:
            return _problem(
                413,
                "file",
                f"image of {header.describe()} pixels is too large: at most {max_pixels:,} "
                f"pixels (serving.max_upload_pixels); the model reads {image_size}x{image_size}, "
                "so scale it down before sending",
                "too_large",
            )
        if not decodes.try_acquire(pixels):
            busy = _problem(
                503,
                "file",
                "too many uploads are being decoded right now (serving.max_concurrent_decodes): "
                f"retry in {RETRY_AFTER_S} s",
                "busy",
            )
            busy.headers["Retry-After"] = str(RETRY_AFTER_S)
            return busy
        try:
            # run_in_threadpool does not abandon a started thread when the request is
            # cancelled, so the budget is released only after the decode really ended.
            prediction = await run_in_threadpool(
                scorer.score_upload, data, image_size, max_pixels, predictor
            )
        except ImageTooLargeError as exc:
            return _problem(413, "file", str(exc), "too_large")
        except DataError:
            return _problem(422, "file", unreadable, "invalid_image")
        finally:
            decodes.release(pixels)
        return json_response(prediction)

    add_inference_protocol(
        app,
        state,
        model_name=PACKAGE,
        server_version=__version__,
        model=ImageInference(scorer),
        max_batch_size=max_batch,
    )
    return app


class ImageInference:
    """The Open Inference Protocol's tensors for the image classifier.

    Input: the ONNX graph's own ``pixels``, FP32 ``[N, C, H, W]`` with values in [0, 1] (pixel
    / 255), which is what Triton and KServe clients send to an image model and what Triton
    itself would take for ``model.onnx``: a client moves between this service and Triton
    unchanged. Encoded images (PNG, JPEG) as BYTES are not taken here: the JSON form of the
    protocol has no standard binary encoding for them (base64 is each server's own
    convention), and decoding untrusted files needs the size and decompression-bomb guards
    of ``POST /predict/image``, which stays the route for files.

    Outputs: ``prediction`` (the most probable class; ties to the first class, as
    ``/predict``) BYTES ``[N]`` and ``probabilities`` FP32 ``[N, n_classes]`` in the order of
    the model's classes (``parameters.classes`` of the model metadata).
    """

    inline_body_bytes = INLINE_BODY_BYTES

    def __init__(self, scorer: _Scorer) -> None:
        self._scorer = scorer

    def inputs(self, model: Predictor) -> Sequence[TensorSpec]:
        return image_tensors(model.metadata.image_size, model.metadata.channels)

    def outputs(self, model: Predictor) -> Sequence[TensorSpec]:
        return prediction_tensors(len(model.metadata.classes))

    def parameters(self, model: Predictor) -> dict[str, Any]:
        return {"task": model.metadata.task, "classes": model.metadata.classes}

    def infer(self, tensors: Mapping[str, Tensor], rows: int, model: Predictor) -> Inference:
        tensor = tensors[ONNX_INPUT]
        tensor.check_values()  # numbers only: NumPy would also read "0.5" or true
        pixels = np.asarray(tensor.data, dtype=np.float32).reshape(
            rows, *input_shape(model.metadata)
        )
        if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise InferenceError(
                400,
                f"input '{ONNX_INPUT}' must hold finite values in [0, 1] (pixel / 255) and no "
                "nulls",
            )
        probabilities, labels = self._scorer.classify(pixels, model)
        return Inference(
            {
                "prediction": Output("BYTES", (rows,), labels),
                "probabilities": Output(
                    "FP32", probabilities.shape, probabilities.ravel().tolist()
                ),
            }
        )


def upload_pixel_limit(serving: ServingConfig, image_size: int) -> int:
    """How many pixels an upload may decode to: ``serving.max_upload_pixels``, or else
    ``(UPLOAD_SCALE * image_size) ** 2`` within [``MIN_UPLOAD_PIXELS``, ``MAX_UPLOAD_PIXELS``]."""
    if serving.max_upload_pixels is not None:
        return serving.max_upload_pixels
    return min(MAX_UPLOAD_PIXELS, max(MIN_UPLOAD_PIXELS, (UPLOAD_SCALE * image_size) ** 2))


class _DecodeBudget:
    """A semaphore weighted by pixels: the uploads being decoded may hold at most ``capacity``
    pixels together (``max_concurrent_decodes`` of the largest allowed size, many more small
    ones), which bounds the memory decoding takes. Used from the event loop only, so it needs
    no lock; an upload that finds the budget spent is refused at once instead of queueing."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity

    def try_acquire(self, pixels: int) -> bool:
        if pixels > self._free:
            return False
        self._free -= pixels
        return True

    def release(self, pixels: int) -> None:
        self._free += pixels


@dataclass(frozen=True)
class _JsonLimits:
    """Upper bounds on the commas, ``[`` and ``{`` of a JSON request body.

    A valid body holds no strings but its keys, so these characters count exactly its values
    and arrays: ``bytes.count`` (C speed, no parsing) tells a body that cannot be valid, such
    as a million empty records in 4 MB, from one worth parsing.
    """

    commas: int
    brackets: int
    braces: int

    @classmethod
    def for_request(cls, size: int, records: int | None) -> _JsonLimits:
        """``SCAN_SLACK`` times the largest valid body: ``{"pixels": ...}`` when ``records`` is
        None, else ``{"records": [{"pixels": ...}, ...]}`` with ``records`` records. Counted
        for RGB images even for a grayscale model, so that RGB sent to a gray model is parsed
        and explained rather than refused unread."""
        # One RGB image: commas between the pixels of a row, between rows and inside each
        # [r, g, b]; brackets around the image, each row and each triple.
        commas = size * (size - 1) + (size - 1) + 2 * size * size
        brackets = 1 + size + size * size
        if records is None:
            return cls(SCAN_SLACK * commas, SCAN_SLACK * brackets, SCAN_SLACK)
        return cls(
            SCAN_SLACK * (records * (commas + 1)),
            SCAN_SLACK * (records * brackets + 1),
            SCAN_SLACK * (records + 1),
        )

    def exceeded_by(self, body: bytes) -> bool:
        return (
            body.count(b",") > self.commas
            or body.count(b"[") > self.brackets
            or body.count(b"{") > self.braces
        )


class _Scorer:
    """Scores images and counts predictions per class in ``predictions_total``."""

    def __init__(self, metrics: ServiceMetrics, top_k: int, channels: int) -> None:
        # The shared metrics pre-create the binary classifier's "0"/"1" children; here the
        # label values are this model's class names, created as they are first predicted.
        metrics.predictions.clear()
        self._counter = metrics.predictions
        self._children: dict[str, Any] = {}
        self._top_k = top_k
        self._channels = channels

    def score(self, images: Sequence[Any], predictor: Predictor) -> list[dict[str, Any]]:
        """Predictions for validated JSON images (``[H][W]`` or ``[H][W][3]`` each)."""
        batch = np.asarray(images, dtype=np.float32)
        gray = self._channels == 1
        return self.score_pixels(
            batch[:, np.newaxis, :, :] if gray else batch.transpose(0, 3, 1, 2), predictor
        )

    def score_pixels(self, pixels: np.ndarray, predictor: Predictor) -> list[dict[str, Any]]:
        """Predictions for ``[N, C, H, W]`` pixels, in the shape of ``Prediction``."""
        rows = rank(predictor.predict(pixels), predictor.metadata.classes, self._top_k)
        version = predictor.metadata.version
        for row in rows:
            row["model_version"] = version
        self._count(row["prediction"] for row in rows)
        return rows

    def classify(self, pixels: np.ndarray, predictor: Predictor) -> tuple[np.ndarray, list[str]]:
        """Class probabilities ``[N, n_classes]`` for ``[N, C, H, W]`` pixels and each row's
        most probable class (the first on ties, as ``rank``), counted like ``score_pixels``."""
        probabilities = predictor.predict(pixels)
        classes = predictor.metadata.classes
        labels = [classes[i] for i in probabilities.argmax(axis=1).tolist()]
        self._count(labels)
        return probabilities, labels

    def score_upload(
        self, data: bytes, size: int, max_pixels: int, predictor: Predictor
    ) -> dict[str, Any]:
        """Decode an uploaded file as in training, then score it (runs in the thread pool)."""
        pixels = decode_image(data, size, self._channels, max_pixels)
        return self.score_pixels(pixels[np.newaxis], predictor)[0]

    def _count(self, labels: Any) -> None:
        for label, count in Counter(labels).items():
            child = self._children.get(label)
            if child is None:
                child = self._children[label] = self._counter.labels(label)
            child.inc(count)


def _invalid(exc: ValidationError, shape_hint: str) -> JSONResponse:
    """422 naming each problem; a wrong shape also says which shape is expected."""
    errors: list[Any] = exc.errors()
    shape_errors = [e for e in errors if e.get("type") in SHAPE_ERRORS and "pixels" in e["loc"]]
    if shape_errors:
        location = shape_errors[0]["loc"]
        pixels_at = tuple(location[: location.index("pixels") + 1])
        errors = [{"loc": pixels_at, "msg": shape_hint, "type": "shape"}, *errors]
    return problems_response(errors)


def _problem(status: int, field: str, message: str, kind: str) -> JSONResponse:
    return problems_response([{"loc": (field,), "msg": message, "type": kind}], status)


def _problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for an error answered with ``ProblemResponse``."""
    return {"model": ProblemResponse, "description": description}


def _upload_body(max_bytes: int, max_pixels: int) -> dict[str, Any]:
    """OpenAPI request body for the file upload route (parsed by the route itself)."""
    schema = {
        "type": "object",
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": f"a {FORMAT_NAMES} image of at most {max_bytes} bytes and "
                f"{max_pixels:,} pixels",
            }
        },
        "required": ["file"],
    }
    encoding = {"file": {"contentType": f"{UPLOAD_TYPE_NAMES}, application/octet-stream"}}
    content = {"multipart/form-data": {"schema": schema, "encoding": encoding}}
    return {"requestBody": {"content": content, "required": True}}
