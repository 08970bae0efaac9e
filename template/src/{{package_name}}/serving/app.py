"""FastAPI app factories for the tabular model.

``create_app(cfg)`` builds a fresh app (no module-level app, no global state) for this project:
the model version ``serving.pinned_version`` from ``paths.models_dir`` (``create_model_dir_app``),
or in an MLOps project the registry's champion (``mlops.create_champion_app``, found here; that
module exists only in MLOps projects). Both stand on the shared plumbing in ``core``
(background model loading, ``/health``, ``/ready``, ``/metrics``, observability) and get
``GET /metadata``, ``POST /predict`` and ``POST /predict/batch`` from ``add_model_routes``, with
request schemas generated from the model's input schema, and the Open Inference Protocol's
``/v2`` routes (``oip``: one ``[N, 1]`` tensor per feature, outputs per task) scored by the same
predictor, counted in the same metrics and seen by the same ``on_scored`` hook. Bad input gets
a 4xx with a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from .. import __version__, artifacts, model_store
from ..config import Config, FeaturesConfig, project_module
from ..config_base import PACKAGE
from ..errors import ProjectError
from ..scoring import Predictor
from .core import (
    JSON_ROUTE_RESPONSES,
    ModelState,
    create_service,
    current_model,
    inline_schema,
    json_body,
    json_response,
    problems_response,
    unsupported_media,
)
from .observability import ServiceMetrics
from .oip import (
    FLOAT_DATATYPES,
    MAX_LISTED_PROBLEMS,
    Inference,
    InferenceError,
    Output,
    Tensor,
    TensorSpec,
    add_inference_protocol,
)
from .runtime import PredictorFactory, predictor_loader
from .schemas import (
    PREDICTION_MODELS,
    ModelInfo,
    build_batch_model,
    build_batch_prediction_model,
    build_record_model,
    feature_tensors,
    prediction_tensors,
)

# Called after a scoring request: (request, validated rows, predictions, start time).
ScoredHook = Callable[[Request, list[dict[str, Any]], list[dict[str, Any]], float], None]
# Batches up to this many rows are scored inline; larger ones in the thread pool.
INLINE_BATCH_ROWS = 64
# The same for Open Inference Protocol bodies (columnar JSON: ~64 rows of a dozen features).
INLINE_OIP_BYTES = 8_192
# The MLOps service's factory, in the module only MLOps projects have.
CHAMPION_APP_MODULE = "serving.mlops"


def create_app(cfg: Config, predictor_factory: PredictorFactory | None = None) -> FastAPI:
    """The service of this project: the registry's champion in an MLOps project, else the
    model version ``cfg.serving.pinned_version``. ``predictor_factory`` replaces loading a
    model directory (tests)."""
    champion = project_module(CHAMPION_APP_MODULE)
    if champion is None:
        return create_model_dir_app(cfg, predictor_factory)
    app: FastAPI = champion.create_champion_app(cfg, predictor_factory)
    return app


def create_model_dir_app(cfg: Config, predictor_factory: PredictorFactory | None = None) -> FastAPI:
    """The service for the model version ``cfg.serving.pinned_version`` (default: LATEST).

    The request and response schemas come from the model's metadata when a model exists, so
    the API always matches the model it serves; without a model they follow the config's
    features and task, and ``/ready`` explains what to do.
    """
    model_dir: Path | None = None
    features = cfg.features
    task: str = cfg.task
    problem = "model is loading"
    try:
        model_dir = model_store.resolve_model_dir(cfg.paths.models_dir, cfg.serving.pinned_version)
        served = artifacts.load_metadata(model_dir)
        features, task = served.features, served.task
    except ProjectError as exc:
        problem = str(exc)
    app, state, metrics = create_service(
        title=service_title(cfg),
        version=__version__,
        max_body_bytes=cfg.serving.max_body_bytes,
        model_dir=model_dir,
        load=predictor_loader(cfg, predictor_factory),
        problem=problem,
    )
    add_model_routes(app, state, metrics, cfg, features, task)
    return app


def service_title(cfg: Config) -> str:
    """The title in the OpenAPI document."""
    return f"{cfg.project} prediction service"


def add_model_routes(
    app: FastAPI,
    state: ModelState,
    metrics: ServiceMetrics,
    cfg: Config,
    features: FeaturesConfig,
    task: str,
    on_scored: ScoredHook | None = None,
) -> None:
    """Add ``GET /metadata``, ``POST /predict``, ``POST /predict/batch`` and the Open Inference
    Protocol's routes: request schemas for ``features``, responses for ``task``; ``on_scored``
    sees every scored request (of either protocol)."""
    record_model = build_record_model(features)
    batch_model = build_batch_model(record_model, cfg.serving.max_batch_size)
    prediction_model = PREDICTION_MODELS[task]
    batch_prediction_model = build_batch_prediction_model(prediction_model)

    @app.get("/metadata", response_model=ModelInfo, tags=["model"])
    async def metadata() -> ModelInfo:
        """Model version, task, classes, metrics against the baseline, threshold, input and
        output schemas and one valid example record."""
        meta = current_model(state).metadata
        return ModelInfo(
            model_version=meta.version,
            model_name=meta.model_name,
            created_at=meta.created_at,
            task=meta.task,
            classes=meta.classes,
            positive_class=meta.positive_class,
            threshold=meta.threshold,
            metrics=meta.metrics,
            baseline_metrics=meta.baseline_metrics,
            features=meta.features,
            input_example=meta.input_example,
            output_schema=inline_schema(PREDICTION_MODELS[meta.task]),
            data_fingerprint=meta.data_fingerprint,
        )

    # The two scoring routes parse and validate the body themselves (one pydantic call on the
    # raw bytes) instead of through FastAPI's dependency machinery, which costs several times
    # more than scoring a row; the OpenAPI schema still documents the generated request model.
    @app.post(
        "/predict",
        response_model=prediction_model,
        tags=["model"],
        openapi_extra=json_body(record_model),
        responses=JSON_ROUTE_RESPONSES,
    )
    async def predict(request: Request) -> Response:
        """Score one record (a flat object: feature name -> value).

        One row costs tens of microseconds in ONNX Runtime: cheaper to run inline than to hand
        to the thread pool."""
        started = time.perf_counter()
        predictor = current_model(state)
        if (refused := unsupported_media(request)) is not None:
            return refused
        try:
            record = record_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return problems_response(exc.errors())
        rows = [record.model_dump(mode="json")]
        predictions = _score(rows, predictor, metrics)
        if on_scored is not None:
            on_scored(request, rows, predictions, started)
        return json_response(predictions[0])

    @app.post(
        "/predict/batch",
        response_model=batch_prediction_model,
        tags=["model"],
        openapi_extra=json_body(batch_model),
        responses=JSON_ROUTE_RESPONSES,
    )
    async def predict_batch(request: Request) -> Response:
        """Score up to ``serving.max_batch_size`` records in one request."""
        started = time.perf_counter()
        predictor = current_model(state)
        if (refused := unsupported_media(request)) is not None:
            return refused
        try:
            batch = batch_model.model_validate_json(await request.body())
        except ValidationError as exc:
            return problems_response(exc.errors())
        rows = [record.model_dump(mode="json") for record in batch.records]  # type: ignore[attr-defined]
        if len(rows) <= INLINE_BATCH_ROWS:
            predictions = _score(rows, predictor, metrics)
        else:
            # Large batches run in the thread pool (ONNX Runtime releases the GIL), so /health
            # and small requests keep being answered meanwhile.
            predictions = await run_in_threadpool(_score, rows, predictor, metrics)
        if on_scored is not None:
            on_scored(request, rows, predictions, started)
        return json_response(
            {"predictions": predictions, "model_version": predictor.metadata.version}
        )

    add_inference_protocol(
        app,
        state,
        model_name=PACKAGE,
        server_version=__version__,
        model=TabularInference(features, record_model, metrics, on_scored),
        max_batch_size=cfg.serving.max_batch_size,
    )


def _score(
    rows: list[dict[str, Any]], predictor: Predictor, metrics: ServiceMetrics
) -> list[dict[str, Any]]:
    """Score validated rows; plain dicts, in the shape of the task's prediction model."""
    scores = _scores(rows, predictor, metrics)
    return predictor.outputs.records(scores, predictor.metadata.version)


def _scores(
    rows: list[dict[str, Any]], predictor: Predictor, metrics: ServiceMetrics
) -> np.ndarray:
    """The model's scores for validated rows, counted in the service's metrics."""
    scores = predictor.predict_records(rows)
    outputs = predictor.outputs
    if outputs.is_classifier:
        metrics.count_predictions(outputs.counts(scores))
    else:
        metrics.observe_values(scores.tolist())
    return scores


class TabularInference:
    """The Open Inference Protocol's tensors for the tabular model: one ``[N, 1]`` input tensor
    per raw feature (``schemas.feature_tensors``), validated row by row with the same record
    model as ``/predict`` (bounds, categories, nulls), and the task's output tensors
    (``schemas.prediction_tensors``).

    Missing values: JSON null in any tensor, or NaN in a floating one, for a nullable feature.
    """

    inline_body_bytes = INLINE_OIP_BYTES

    def __init__(
        self,
        features: FeaturesConfig,
        record_model: type[BaseModel],
        metrics: ServiceMetrics,
        on_scored: ScoredHook | None,
    ) -> None:
        self._inputs = feature_tensors(features)
        self._names = [spec.name for spec in self._inputs]
        self._records: TypeAdapter[list[Any]] = TypeAdapter(list[record_model])  # type: ignore[valid-type]
        self._metrics = metrics
        self._on_scored = on_scored

    def inputs(self, model: Predictor) -> Sequence[TensorSpec]:
        return self._inputs

    def outputs(self, model: Predictor) -> Sequence[TensorSpec]:
        return prediction_tensors(model.metadata.task, model.outputs.classes)

    def parameters(self, model: Predictor) -> dict[str, Any]:
        meta = model.metadata
        parameters: dict[str, Any] = {"task": meta.task}
        if meta.task != "regression":
            parameters["classes"] = model.outputs.classes
        if meta.task == "binary_classification":
            parameters["positive_class"] = meta.positive_class
            parameters["threshold"] = model.outputs.threshold
        return parameters

    def infer(self, tensors: Mapping[str, Tensor], rows: int, model: Predictor) -> Inference:
        columns = []
        for name in self._names:
            tensor = tensors[name]
            tensor.check_values()
            data = tensor.data
            if tensor.datatype in FLOAT_DATATYPES:  # NaN is a missing value, as null is
                data = [None if value != value else value for value in data]
            columns.append(data)
        try:
            records = self._records.validate_python(
                [
                    dict(zip(self._names, values, strict=True))
                    for values in zip(*columns, strict=True)
                ]
            )
        except ValidationError as exc:
            raise InferenceError(400, _row_problems(exc)) from None
        validated = [record.model_dump(mode="json") for record in records]
        scores = _scores(validated, model, self._metrics)
        answers = model.outputs
        version = model.metadata.version
        predicted = answers.predicted(scores)
        if answers.is_classifier:
            datatype = prediction_tensors(model.metadata.task, answers.classes)[0].datatype
            if datatype == "BYTES":
                predicted = [str(label) for label in predicted]
        else:
            datatype = "FP64"
        outputs = {"prediction": Output(datatype, (rows,), predicted)}
        if model.metadata.task == "binary_classification":
            outputs["probability"] = Output("FP64", (rows,), scores[:, 1].tolist())
        if answers.is_classifier:
            outputs["probabilities"] = Output("FP64", scores.shape, scores.ravel().tolist())
        hook = self._on_scored
        if hook is None:
            return Inference(outputs)

        def after(request: Request, started: float) -> None:
            hook(request, validated, answers.records(scores, version), started)

        return Inference(outputs, after)


def _row_problems(exc: ValidationError) -> str:
    """The record model's problems as one line: input name, row, message (the first few)."""
    errors = exc.errors()
    problems = [
        f"input '{error['loc'][1]}' row {error['loc'][0]}: {error['msg']}"
        if len(error["loc"]) >= 2
        else f"row {error['loc'][0] if error['loc'] else '?'}: {error['msg']}"
        for error in errors[:MAX_LISTED_PROBLEMS]
    ]
    more = len(errors) - MAX_LISTED_PROBLEMS
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
