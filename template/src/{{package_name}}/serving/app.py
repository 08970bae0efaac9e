"""FastAPI app factory.

``create_app(cfg)`` builds a fresh app (no module-level app, no global state): routes, schemas
generated from the model's input schema, and a lifespan that loads the model in a background
thread so ``/health`` answers at once and ``/ready`` says 503 until the model is loaded.

Endpoints: ``GET /health``, ``GET /ready``, ``GET /metadata``, ``POST /predict``,
``POST /predict/batch``, ``GET /metrics`` (Prometheus). Bad input gets a 4xx with a message.
"""
# No ``from __future__ import annotations`` here: FastAPI must see the generated request
# classes as real objects in the endpoint signatures.

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from .. import __version__, artifacts
from ..config import Config
from ..errors import ProjectError
from .observability import ObservabilityMiddleware, ServiceMetrics
from .runtime import Predictor, labels, load_predictor
from .schemas import (
    BatchPrediction,
    ModelInfo,
    Prediction,
    Status,
    build_batch_model,
    build_record_model,
)

logger = logging.getLogger(__name__)

PredictorFactory = Callable[[Path], Predictor]
# Batches up to this many rows are scored inline; larger ones in the thread pool.
INLINE_BATCH_ROWS = 64


class ModelState:
    """The loaded model, or why there is none yet."""

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.problem: str = "model is loading"


async def require_model(request: Request) -> Predictor:
    """Dependency: the loaded model, or 503 with the reason there is none.

    ``async`` on purpose: FastAPI runs plain ``def`` dependencies in the thread pool, a thread
    hop per request that costs more than scoring the row."""
    state: ModelState = request.app.state.model
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=f"not ready: {state.problem}")
    return state.predictor


ModelDep = Annotated[Predictor, Depends(require_model)]


def create_app(cfg: Config, predictor_factory: PredictorFactory | None = None) -> FastAPI:
    """Build the service for the model version ``cfg.serving.model_version`` (default: LATEST).

    The request schema comes from the model's metadata when a model exists, so the API always
    matches the model it serves; without a model it falls back to the config's features and
    ``/ready`` explains what to do.
    """
    state = ModelState()
    metrics = ServiceMetrics()
    model_dir: Path | None = None
    features = cfg.features
    try:
        model_dir = artifacts.resolve_model_dir(cfg.paths.models_dir, cfg.serving.model_version)
        features = artifacts.load_metadata(model_dir).features
    except ProjectError as exc:
        state.problem = str(exc)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if model_dir is not None:
            # Loading is CPU and disk work: keep it off the event loop so /health answers.
            loading = asyncio.create_task(asyncio.to_thread(_load, model_dir))
            yield
            loading.cancel()
        else:
            logger.warning("starting without a model: %s", state.problem)
            yield

    def _load(directory: Path) -> None:
        try:
            if predictor_factory is not None:
                predictor = predictor_factory(directory)
            else:
                predictor = load_predictor(directory, cfg.serving.runtime)
        except ProjectError as exc:
            state.problem = str(exc)
            logger.error("model not loaded: %s", exc)
            return
        state.predictor = predictor
        metrics.model_info.labels(predictor.metadata.version).set(1)
        logger.info("model %s loaded from %s", predictor.metadata.version, directory)

    app = FastAPI(
        title=f"{cfg.project} prediction service",
        description="Scores records with the trained model. See /docs for the request schema.",
        version=__version__,
        lifespan=lifespan,
    )
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, max_body_bytes=cfg.serving.max_body_bytes
    )
    app.add_exception_handler(RequestValidationError, _validation_error)

    app.state.model = state
    record_model = build_record_model(features)
    batch_model = build_batch_model(record_model, cfg.serving.max_batch_size)

    @app.get("/health", response_model=Status, tags=["ops"])
    async def health() -> Status:
        """Liveness: the process answers. Does not depend on the model."""
        return Status(status="ok")

    @app.get(
        "/ready",
        response_model=Status,
        tags=["ops"],
        responses={503: {"description": "no model yet"}},
    )
    async def ready(predictor: ModelDep) -> Status:
        """Readiness: 200 once the model is loaded, 503 (with the reason) before."""
        return Status(status="ready", model_version=predictor.metadata.version)

    @app.get("/metadata", response_model=ModelInfo, tags=["model"])
    async def metadata(predictor: ModelDep) -> ModelInfo:
        """Model version, metrics, threshold, input schema and one valid example record."""
        meta = predictor.metadata
        return ModelInfo(
            model_version=meta.version,
            model_name=meta.model_name,
            created_at=meta.created_at,
            task=meta.task,
            threshold=meta.threshold,
            metrics=meta.metrics,
            features=meta.features,
            input_example=meta.input_example,
            data_fingerprint=meta.data_fingerprint,
        )

    # The two scoring routes parse and validate the body themselves (one pydantic call on the
    # raw bytes) instead of through FastAPI's dependency machinery, which costs several times
    # more than scoring a row; the OpenAPI schema still documents the generated request model.
    @app.post(
        "/predict",
        response_model=Prediction,
        tags=["model"],
        openapi_extra=_json_body(record_model),
        responses={422: {"description": "invalid record"}, 503: {"description": "no model"}},
    )
    async def predict(request: Request) -> Response:
        """Score one record (a flat object: feature name -> value).

        One row costs tens of microseconds in ONNX Runtime: cheaper to run inline than to hand
        to the thread pool."""
        predictor = _predictor(state)
        try:
            record = record_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return _problems_response(exc.errors())
        return _json(_score([record], predictor, metrics)[0])

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["model"],
        openapi_extra=_json_body(batch_model),
        responses={422: {"description": "invalid records"}, 503: {"description": "no model"}},
    )
    async def predict_batch(request: Request) -> Response:
        """Score up to ``serving.max_batch_size`` records in one request."""
        predictor = _predictor(state)
        try:
            batch = batch_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return _problems_response(exc.errors())
        records = batch.records  # type: ignore[attr-defined]
        if len(records) <= INLINE_BATCH_ROWS:
            predictions = _score(records, predictor, metrics)
        else:
            # Large batches run in the thread pool (ONNX Runtime releases the GIL), so /health
            # and small requests keep being answered meanwhile.
            predictions = await run_in_threadpool(_score, records, predictor, metrics)
        return _json({"predictions": predictions, "model_version": predictor.metadata.version})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _score(
    records: list[Any], predictor: Predictor, metrics: ServiceMetrics
) -> list[dict[str, Any]]:
    """Score validated records; plain dicts, in the shape of ``Prediction``."""
    probability = predictor.predict_records([r.model_dump() for r in records])
    predicted = labels(probability, predictor.metadata.threshold)
    version = predictor.metadata.version
    metrics.count_predictions(positives=int(predicted.sum()), total=len(predicted))
    return [
        {"prediction": label, "probability": p, "model_version": version}
        for p, label in zip(probability.tolist(), predicted.tolist(), strict=True)
    ]


def _predictor(state: ModelState) -> Predictor:
    if state.predictor is None:
        raise HTTPException(status_code=503, detail=f"not ready: {state.problem}")
    return state.predictor


def _json(payload: object) -> Response:
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that validates its body itself."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"content": schema, "required": True}}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 for requests FastAPI validates (query, path, other routes)."""
    return _problems_response(exc.errors() if isinstance(exc, RequestValidationError) else [])


def _problems_response(errors: Sequence[Any]) -> JSONResponse:
    """422 with one readable line per problem. The offending input is not echoed back: it may
    be NaN/inf (not JSON) or large."""
    problems = []
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "invalid syntax")
            problems.append(
                {"field": "body", "message": f"malformed JSON: {reason}", "type": "json_invalid"}
            )
            continue
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(
            {
                "field": location or "body",
                "message": error.get("msg", "invalid"),
                "type": error.get("type", ""),
            }
        )
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return JSONResponse(
        status_code=422, content={"detail": summary or "invalid request", "errors": problems}
    )
