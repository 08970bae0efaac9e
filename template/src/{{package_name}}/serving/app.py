"""FastAPI app factory for the tabular model.

``create_app(cfg)`` builds a fresh app (no module-level app, no global state) on the shared
plumbing in ``core`` (background model loading, ``/health``, ``/ready``, ``/metrics``,
observability) and adds ``GET /metadata``, ``POST /predict`` and ``POST /predict/batch`` with
request schemas generated from the model's input schema. Bad input gets a 4xx with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from .. import __version__, artifacts
from ..config import Config
from ..errors import ProjectError
from .core import create_service, current_model, json_body, json_response, problems_response
from .observability import ServiceMetrics
from .runtime import Predictor, labels, load_predictor
from .schemas import BatchPrediction, ModelInfo, Prediction, build_batch_model, build_record_model

PredictorFactory = Callable[[Path], Predictor]
# Batches up to this many rows are scored inline; larger ones in the thread pool.
INLINE_BATCH_ROWS = 64


def create_app(cfg: Config, predictor_factory: PredictorFactory | None = None) -> FastAPI:
    """Build the service for the model version ``cfg.serving.model_version`` (default: LATEST).

    The request schema comes from the model's metadata when a model exists, so the API always
    matches the model it serves; without a model it falls back to the config's features and
    ``/ready`` explains what to do.
    """
    model_dir: Path | None = None
    features = cfg.features
    problem = "model is loading"
    try:
        model_dir = artifacts.resolve_model_dir(cfg.paths.models_dir, cfg.serving.model_version)
        features = artifacts.load_metadata(model_dir).features
    except ProjectError as exc:
        problem = str(exc)

    def load(directory: Path) -> Predictor:
        if predictor_factory is not None:
            return predictor_factory(directory)
        return load_predictor(directory, cfg.serving.runtime)

    app, state, metrics = create_service(
        title=f"{cfg.project} prediction service",
        version=__version__,
        max_body_bytes=cfg.serving.max_body_bytes,
        model_dir=model_dir,
        load=load,
        problem=problem,
    )
    record_model = build_record_model(features)
    batch_model = build_batch_model(record_model, cfg.serving.max_batch_size)

    @app.get("/metadata", response_model=ModelInfo, tags=["model"])
    async def metadata() -> ModelInfo:
        """Model version, metrics, threshold, input schema and one valid example record."""
        meta = current_model(state).metadata
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
        openapi_extra=json_body(record_model),
        responses={422: {"description": "invalid record"}, 503: {"description": "no model"}},
    )
    async def predict(request: Request) -> Response:
        """Score one record (a flat object: feature name -> value).

        One row costs tens of microseconds in ONNX Runtime: cheaper to run inline than to hand
        to the thread pool."""
        predictor = current_model(state)
        try:
            record = record_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return problems_response(exc.errors())
        return json_response(_score([record], predictor, metrics)[0])

    @app.post(
        "/predict/batch",
        response_model=BatchPrediction,
        tags=["model"],
        openapi_extra=json_body(batch_model),
        responses={422: {"description": "invalid records"}, 503: {"description": "no model"}},
    )
    async def predict_batch(request: Request) -> Response:
        """Score up to ``serving.max_batch_size`` records in one request."""
        predictor = current_model(state)
        try:
            batch = batch_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return problems_response(exc.errors())
        records = batch.records  # type: ignore[attr-defined]
        if len(records) <= INLINE_BATCH_ROWS:
            predictions = _score(records, predictor, metrics)
        else:
            # Large batches run in the thread pool (ONNX Runtime releases the GIL), so /health
            # and small requests keep being answered meanwhile.
            predictions = await run_in_threadpool(_score, records, predictor, metrics)
        return json_response(
            {"predictions": predictions, "model_version": predictor.metadata.version}
        )

    return app


def _score(
    records: list[Any], predictor: Predictor, metrics: ServiceMetrics
) -> list[dict[str, Any]]:
    """Score validated records; plain dicts, in the shape of ``Prediction``."""
    probability = predictor.predict_records([r.model_dump() for r in records])
    predicted = labels(probability, predictor.metadata.threshold)
    metrics.count_predictions(positives=int(predicted.sum()), total=len(predicted))
    version = predictor.metadata.version
    return [
        {"prediction": label, "probability": p, "model_version": version}
        for p, label in zip(probability.tolist(), predicted.tolist(), strict=True)
    ]
