"""FastAPI app factory for the image classifier.

``create_app(cfg)`` builds a fresh app (no module-level app, no global state) on the shared
plumbing in ``core`` (background model loading, ``/health``, ``/ready``, ``/metrics``,
observability) and adds ``GET /metadata``, ``POST /predict`` (pixels as JSON),
``POST /predict/image`` (an uploaded image file) and ``POST /predict/batch``. Bad input gets a
4xx with a message that names the problem, never a 500.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from .. import __version__, artifacts
from ..config import Config
from ..errors import DataError, ProjectError
from ..imaging import decode_image, encode_png
from .core import create_service, current_model, json_body, json_response, problems_response
from .observability import ServiceMetrics
from .runtime import Predictor, input_shape, load_predictor, rank
from .schemas import BatchPrediction, ModelInfo, Prediction, build_batch_model, build_image_model

PredictorFactory = Callable[[Path], Predictor]
# Bodies up to this size are validated and scored on the event loop (tens of microseconds for
# a small image); larger ones, and every uploaded file, go to the thread pool so that /health
# and small requests keep being answered meanwhile (ONNX Runtime releases the GIL).
INLINE_BODY_BYTES = 32_768
# An uploaded file within serving.max_upload_bytes can still decompress to a huge bitmap
# (a "decompression bomb"); refuse anything above this before decoding it.
MAX_UPLOAD_PIXELS = 25_000_000
# What an upload may declare: an image type, a generic binary one or none (the bytes decide).
UPLOAD_TYPES = ("image/", "application/octet-stream")
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
        model_dir = artifacts.resolve_model_dir(cfg.paths.models_dir, cfg.serving.pinned_version)
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
    image_model = build_image_model(image_size, channels)
    batch_model = build_batch_model(image_model, cfg.serving.max_batch_size)
    layout = f"{image_size} rows of {image_size} " + (
        "numbers" if channels == 1 else "[r, g, b] triples"
    )
    shape_hint = f"expected {layout}, each value in [0, 1] (see input_example in /metadata)"
    scorer = _Scorer(metrics, cfg.serving.top_k, channels)
    max_upload = cfg.serving.max_upload_bytes

    @app.get("/metadata", response_model=ModelInfo, tags=["model"])
    async def metadata() -> ModelInfo:
        """Model version, classes, input shape, metrics and one valid ``pixels`` example."""
        meta = current_model(state).metadata
        return ModelInfo(
            model_version=meta.version,
            created_at=meta.created_at,
            task=meta.task,
            classes=meta.classes,
            image_size=meta.image_size,
            channels=meta.channels,
            metrics=meta.metrics,
            input_example=meta.input_example,
            data_fingerprint=meta.data_fingerprint,
            onnx_sha256=meta.onnx_sha256,
        )

    def score_one(body: bytes, predictor: Predictor) -> Response:
        try:
            request = image_model.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc, shape_hint)
        return json_response(scorer.score([request.pixels], predictor)[0])  # type: ignore[attr-defined]

    def score_batch(body: bytes, predictor: Predictor) -> Response:
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
        body = await request.body()
        if len(body) <= INLINE_BODY_BYTES:
            return score(body, predictor)
        return await run_in_threadpool(score, body, predictor)

    # The JSON routes parse and validate the body themselves (one pydantic call on the raw
    # bytes) instead of through FastAPI's dependency machinery, which costs more than scoring a
    # small image; the OpenAPI schema still documents the generated request model.
    @app.post(
        "/predict",
        response_model=Prediction,
        tags=["model"],
        openapi_extra=json_body(image_model),
        responses={422: {"description": "invalid pixels"}, 503: {"description": "no model"}},
    )
    async def predict(request: Request) -> Response:
        """Classify one image sent as pixel values (the shape of ``input_example``)."""
        return await handle_json(request, score_one)

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["model"],
        openapi_extra=json_body(batch_model),
        responses={422: {"description": "invalid images"}, 503: {"description": "no model"}},
    )
    async def predict_batch(request: Request) -> Response:
        """Classify up to ``serving.max_batch_size`` images in one request, in order."""
        return await handle_json(request, score_batch)

    @app.post(
        "/predict/image",
        response_model=Prediction,
        tags=["model"],
        openapi_extra=_upload_body(max_upload),
        responses={
            413: {"description": "file too large"},
            415: {"description": "not multipart/form-data, or not an image type"},
            422: {"description": "no file, or not a readable image"},
            503: {"description": "no model"},
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
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _problem(
                    422, "file", "no image: upload it in a form field named 'file'", "missing"
                )
            declared = (upload.content_type or "").lower()
            if declared and not declared.startswith(UPLOAD_TYPES):
                return _problem(
                    415,
                    "file",
                    f"content type '{declared}' is not an image: send image/png, image/jpeg, "
                    "image/bmp, image/gif or image/webp",
                    "unsupported_media_type",
                )
            data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            return _problem(
                413,
                "file",
                f"image larger than {max_upload} bytes (serving.max_upload_bytes)",
                "too_large",
            )
        try:
            prediction = await run_in_threadpool(scorer.score_upload, data, image_size, predictor)
        except _TooManyPixelsError as exc:
            return _problem(413, "file", str(exc), "too_large")
        except DataError:
            return _problem(
                422,
                "file",
                f"'{upload.filename or 'upload'}' is not a readable image "
                "(PNG, JPEG, BMP, GIF or WebP)",
                "invalid_image",
            )
        return json_response(prediction)

    return app


class _TooManyPixelsError(Exception):
    pass


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

    def score_upload(self, data: bytes, size: int, predictor: Predictor) -> dict[str, Any]:
        """Decode an uploaded file as in training, then score it (runs in the thread pool)."""
        _check_pixel_count(data)
        pixels = decode_image(data, size, self._channels)
        return self.score_pixels(pixels[np.newaxis], predictor)[0]

    def _count(self, labels: Any) -> None:
        for label, count in Counter(labels).items():
            child = self._children.get(label)
            if child is None:
                child = self._children[label] = self._counter.labels(label)
            child.inc(count)


def _check_pixel_count(data: bytes) -> None:
    """Refuse images whose header announces more than ``MAX_UPLOAD_PIXELS`` (cheap: the header
    only). Unreadable files pass here and are reported by ``decode_image``."""
    limit = f"at most {MAX_UPLOAD_PIXELS:,} pixels"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:  # Pillow's own, higher limit
        raise _TooManyPixelsError(f"image is too large to decode ({limit})") from None
    except (UnidentifiedImageError, OSError, ValueError):
        return
    if width * height > MAX_UPLOAD_PIXELS:
        raise _TooManyPixelsError(f"image of {width}x{height} pixels is too large ({limit})")


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


def _upload_body(max_bytes: int) -> dict[str, Any]:
    """OpenAPI request body for the file upload route (parsed by the route itself)."""
    schema = {
        "type": "object",
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": f"an image file of at most {max_bytes} bytes",
            }
        },
        "required": ["file"],
    }
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}}}
