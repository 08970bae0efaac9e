"""Service plumbing shared by every project type: the app skeleton with background model
loading, ``/health``, ``/ready``, ``/metrics``, request observability and 4xx problem bodies.

A project type's ``app.py`` calls ``create_service`` with a loader for its model and adds its own
``/metadata`` and ``/predict...`` routes. Nothing here knows what the model scores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from ..errors import ProjectError
from .observability import ObservabilityMiddleware, ServiceMetrics

logger = logging.getLogger(__name__)


class Versioned(Protocol):
    """The least a loaded model offers the plumbing: its version."""

    @property
    def version(self) -> str: ...


class LoadedModel(Protocol):
    """A loaded model: the plumbing only reads ``metadata.version``."""

    @property
    def metadata(self) -> Versioned: ...


class ModelState:
    """The loaded model, or why there is none yet."""

    def __init__(self, problem: str = "model is loading") -> None:
        self.model: Any = None
        self.problem = problem


class Status(BaseModel):
    """Liveness / readiness answer."""

    status: Literal["ok", "ready"]
    model_version: str | None = None


def create_service(
    *,
    title: str,
    version: str,
    max_body_bytes: int,
    model_dir: Path | None,
    load: Callable[[Path], LoadedModel],
    problem: str = "model is loading",
    lifespan_extra: Callable[[], AbstractAsyncContextManager[None]] | None = None,
) -> tuple[FastAPI, ModelState, ServiceMetrics]:
    """The app with its plumbing routes; ``load(model_dir)`` runs in a worker thread at startup.

    Without ``model_dir`` the service still starts (liveness answers) and ``/ready`` returns
    503 with ``problem``, so an orchestrator shows why it is not ready. ``lifespan_extra`` is
    entered after startup begins and exited at shutdown (background workers of a project type,
    which may also load the model themselves).
    """
    state = ModelState(problem)
    metrics = ServiceMetrics()

    def load_model(directory: Path) -> None:
        try:
            model = load(directory)
        except ProjectError as exc:
            state.problem = str(exc)
            logger.error("model not loaded: %s", exc)
            return
        state.model = model
        metrics.model_info.labels(model.metadata.version).set(1)
        logger.info("model %s loaded from %s", model.metadata.version, directory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = None
        if model_dir is not None:
            # Loading is CPU and disk work: keep it off the event loop so /health answers.
            loading = asyncio.create_task(asyncio.to_thread(load_model, model_dir))
        elif lifespan_extra is None:
            logger.warning("starting without a model: %s", state.problem)
        async with lifespan_extra() if lifespan_extra is not None else nullcontext():
            yield
        if loading is not None:
            loading.cancel()

    app = FastAPI(title=title, version=version, lifespan=lifespan)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        model_version=lambda: None if state.model is None else state.model.metadata.version,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.model = state

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
    async def ready() -> Status:
        """Readiness: 200 once the model is loaded, 503 (with the reason) before."""
        return Status(status="ready", model_version=current_model(state).metadata.version)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app, state, metrics


def current_model(state: ModelState) -> Any:
    """The loaded model, or a 503 with the reason there is none (without filesystem paths:
    the full reason is in the service's log)."""
    if state.model is None:
        raise HTTPException(status_code=503, detail=f"not ready: {public_reason(state.problem)}")
    return state.model


# The URI of a file-based store, and an absolute path after a space, quote or line start.
_FILE_URI = re.compile(r"\b(?:file|sqlite):/{2,}[^\s'\"]*")
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\",;)]+")
PUBLIC_REASON_LIMIT = 300


def public_reason(problem: str) -> str:
    """``problem`` fit for API clients: its first line (validation errors put the offending
    input on the next ones), file URIs and absolute paths cut to their last component, and at
    most ``PUBLIC_REASON_LIMIT`` characters. The full text belongs in the log."""
    lines = problem.strip().splitlines()
    first = lines[0] if lines else "unknown"
    first = _FILE_URI.sub(lambda m: m.group(0).split(":", 1)[0] + ":…/" + _last(m.group(0)), first)
    first = _ABSOLUTE_PATH.sub(lambda m: "…/" + _last(m.group(0)), first)
    if len(first) > PUBLIC_REASON_LIMIT:
        first = first[: PUBLIC_REASON_LIMIT - 1] + "…"
    return first


def _last(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def json_response(payload: object) -> Response:
    """A JSON response without pydantic's response-model pass (hot paths)."""
    return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that validates its JSON body itself."""
    schema = {"application/json": {"schema": inline_schema(model)}}
    return {"requestBody": {"content": schema, "required": True}}


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` with every ``$ref`` replaced by its definition.

    ``model_json_schema()`` puts nested models under a local ``$defs`` and refers to them as
    ``#/$defs/...``; pasted into an OpenAPI operation those references point at the document
    root, where nothing is. The request models are small and not recursive, so inlining is the
    simplest valid form.
    """
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                siblings = {k: resolve(v) for k, v in node.items() if k != "$ref"}
                return {**resolve(definitions[reference.removeprefix("#/$defs/")]), **siblings}
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


JSON_TYPES = ("application/json",)


def unsupported_media(request: Request) -> Response | None:
    """A 415 unless the request says its body is JSON (``application/json`` or ``+json``)."""
    declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared in JSON_TYPES or declared.endswith("+json"):
        return None
    return JSONResponse(
        status_code=415,
        content={
            "detail": "send the body as JSON with the header Content-Type: application/json",
            "errors": [],
        },
    )


# The OpenAPI responses every JSON scoring route can give besides 200.
JSON_ROUTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"description": "request body larger than serving.max_body_bytes"},
    415: {"description": "body not sent as application/json"},
    422: {"description": "invalid body: one message per problem (at most 20 listed)"},
    503: {"description": "no model loaded yet (the reason is in the detail)"},
}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 for requests FastAPI validates (query, path, forms)."""
    return problems_response(exc.errors() if isinstance(exc, RequestValidationError) else [])


# A response lists at most this many problems: a small request with many bad records must not
# get a response a hundred times its size.
MAX_LISTED_PROBLEMS = 20


def problems_response(errors: Sequence[Any], status_code: int = 422) -> JSONResponse:
    """A 4xx with one readable line per problem (the first ``MAX_LISTED_PROBLEMS``). The
    offending input is not echoed back: it may be NaN/inf (not JSON) or large."""
    problems = []
    for error in errors[:MAX_LISTED_PROBLEMS]:
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
    if len(errors) > MAX_LISTED_PROBLEMS:
        summary += f" (and {len(errors) - MAX_LISTED_PROBLEMS} more problems not listed)"
    return JSONResponse(
        status_code=status_code,
        content={"detail": summary or "invalid request", "errors": problems},
    )
