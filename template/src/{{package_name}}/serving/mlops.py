"""The MLOps service: the tabular one plus the champion from the registry with reload,
prediction logging, and drift gauges from the latest ``monitor`` run.

``create_champion_app`` (which ``app.create_app`` finds in MLOps projects) builds a
``ChampionService`` before the app (its ``running`` context is the app's extra lifespan) and
attaches it once the app exists (routes, metrics).

``POST /admin/reload`` needs ``Authorization: Bearer <serving.admin_token>`` when a token is
set. Without one it is open only while the service listens on a loopback address
(``serving.host`` 127.0.0.1, ::1 or localhost, as on a development machine); listening on
any other address without a token, it answers 403 and says how to set one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import __version__
from ..config_base import PACKAGE
from ..mlops_config import MlopsConfig
from ..prediction_store import answer_score
from .app import add_model_routes, service_title
from .champion import RegistryReader, Reloader
from .core import ModelState, create_service
from .drift_gauges import DriftGauges
from .observability import ServiceMetrics
from .prediction_log import PredictionLog
from .runtime import PredictorFactory, predictor_loader

logger = logging.getLogger(__name__)

UNREADY_RETRY_S = 5.0
DRIFT_REFRESH_S = 30.0  # drift gauges refresh this often when periodic reloads are off
RELOAD_STATUS = {
    "loaded": 200,
    "unchanged": 200,
    "refused": 409,
    "unavailable": 503,
    "error": 503,
}
TOKEN_VARIABLE = f"{PACKAGE.upper()}_SERVING__ADMIN_TOKEN"


class ReloadAnswer(BaseModel):
    """What one reload attempt did (200, 409 and 503 answers of ``/admin/reload``)."""

    outcome: str
    model_version: str | None
    registry_version: str | None
    previous_version: str | None
    detail: str


class ErrorDetail(BaseModel):
    """A refused request: what is wrong and what to do."""

    detail: str


class Problem(BaseModel):
    """One invalid request parameter."""

    field: str
    message: str
    type: str


class Problems(BaseModel):
    """A 422 answer: one summary line and one entry per invalid parameter."""

    detail: str
    errors: list[Problem]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def create_champion_app(
    cfg: MlopsConfig,
    predictor_factory: PredictorFactory | None = None,
    registry: RegistryReader | None = None,
) -> FastAPI:
    """Build the service for the registry's champion (or the pinned ``serving.pinned_version``).

    Its request schema is the config's features, the contract a new champion must keep.
    ``registry`` replaces the reader chosen from ``tracking.uri`` (tests).
    """
    service = ChampionService(cfg, registry)
    load = predictor_loader(cfg, predictor_factory)
    app, state, metrics = create_service(
        title=service_title(cfg),
        version=__version__,
        max_body_bytes=cfg.serving.max_body_bytes,
        model_dir=None,  # the service locates and loads the champion
        load=load,
        problem="model is loading from the registry",
        lifespan_extra=service.running,
    )
    service.attach(app, state, metrics, load)
    add_model_routes(app, state, metrics, cfg, cfg.features, cfg.task, on_scored=service.record)
    return app


class ChampionService:
    """What serving the registry's champion needs beside the routes, for one app (no global
    state): the reloader, the prediction log and the drift gauges."""

    def __init__(self, cfg: MlopsConfig, reader: RegistryReader | None = None) -> None:
        self.cfg = cfg
        self.reader = reader
        self.reloader: Reloader | None = None
        self.log: PredictionLog | None = None
        self.drift: DriftGauges | None = None

    def attach(
        self, app: FastAPI, state: ModelState, metrics: ServiceMetrics, load: Callable[[Path], Any]
    ) -> None:
        """Create the workers on the app's metrics registry and add ``POST /admin/reload``."""
        self.reloader = Reloader(self.cfg, state, metrics, load, self.reader)
        if self.cfg.prediction_log.enabled:
            self.log = PredictionLog(self.cfg.prediction_log, metrics.registry)
        self.drift = DriftGauges(self.cfg.prediction_log, metrics.registry)
        reloader, drift = self.reloader, self.drift
        token = self.cfg.serving.admin_token
        host = self.cfg.serving.host
        # Without a token the endpoint is open only to this machine (a development setup).
        closed = token is None and not is_loopback(host)
        if closed:
            logger.warning(
                "POST /admin/reload is disabled: the service listens on %s and "
                "serving.admin_token is not set (set %s); periodic reloads still run",
                host,
                TOKEN_VARIABLE,
            )

        @app.post(
            "/admin/reload",
            tags=["ops"],
            response_model=ReloadAnswer,
            responses={
                401: {"model": ErrorDetail, "description": "missing or wrong admin token"},
                403: {
                    "model": ErrorDetail,
                    "description": "no admin token configured and the service listens beyond "
                    "loopback",
                },
                409: {
                    "model": ReloadAnswer,
                    "description": "new version refused; the old one keeps serving",
                },
                422: {"model": Problems, "description": "invalid query parameter"},
                503: {
                    "model": ReloadAnswer,
                    "description": "registry unreachable or the reload failed; retried on the "
                    "next periodic check",
                },
            },
        )
        async def reload(
            force: bool = False, authorization: Annotated[str | None, Header()] = None
        ) -> JSONResponse:
            """Ask the registry for the champion now and swap it in if it changed (the drift
            gauges are refreshed too).

            The old model serves until the new one is downloaded, loaded and checked; a version
            that fails is refused (409) and not retried by the periodic check unless ``force``.
            """
            if closed:
                raise HTTPException(
                    status_code=403,
                    detail=f"admin endpoint disabled: the service listens beyond loopback and "
                    f"no admin token is set; set {TOKEN_VARIABLE} and send "
                    "'Authorization: Bearer <token>'",
                )
            if token is not None and not hmac.compare_digest(
                authorization or "", f"Bearer {token}"
            ):
                raise HTTPException(status_code=401, detail="admin token required")
            result = await asyncio.to_thread(reloader.reload, force)
            await asyncio.to_thread(drift.refresh)
            return JSONResponse(status_code=RELOAD_STATUS[result.outcome], content=result.as_dict())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the workers, load the first model, check periodically; stop at shutdown."""
        if self.log is not None:
            self.log.start()
        checking = asyncio.create_task(self._check_periodically())
        try:
            yield
        finally:
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
            if self.log is not None:
                await asyncio.to_thread(self.log.close)

    async def _check_periodically(self) -> None:
        """Reload (if due) and refresh the drift gauges, forever. Until a model is loaded the
        registry is asked every few seconds, so the service becomes ready on its own."""
        assert self.reloader is not None, "attach() first"
        assert self.drift is not None, "attach() first"
        interval = self.cfg.serving.reload_interval_s
        while True:
            try:
                loaded = self.reloader.state.model is not None
                if not loaded or interval > 0:
                    await asyncio.to_thread(self.reloader.reload)  # never raises
                await asyncio.to_thread(self.drift.refresh)  # never raises
            except Exception:  # a bug here must not end the checks for the process's life
                logger.exception("periodic model check failed; retried on the next check")
                self.reloader.reloads.labels("error").inc()
            if self.reloader.state.model is None:
                await asyncio.sleep(UNREADY_RETRY_S)
            else:
                await asyncio.sleep(interval if interval > 0 else DRIFT_REFRESH_S)

    def record(
        self,
        request: Request,
        rows: list[dict[str, Any]],
        predictions: list[dict[str, Any]],
        started: float,
    ) -> None:
        """Queue one scored request's rows for the prediction log (never blocks, never raises):
        the served label or value, and the score monitoring compares (``answer_score``)."""
        if self.log is None:
            return
        latency_ms = (time.perf_counter() - started) * 1000.0
        request_id = getattr(request.state, "request_id", "")
        try:
            scored = [
                {
                    "request_id": request_id,
                    "model_version": answer["model_version"],
                    "features": row,
                    "prediction": answer["prediction"],
                    "score": answer_score(answer),
                    "latency_ms": latency_ms,
                }
                for row, answer in zip(rows, predictions, strict=True)
            ]
        except (KeyError, TypeError, ValueError):  # logging must never fail a prediction
            self.log.dropped.labels("invalid_row").inc(len(rows))
            return
        self.log.submit(scored)
