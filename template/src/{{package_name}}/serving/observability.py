"""Request observability as one pure ASGI middleware: request ids, the served model version
(``X-Model-Version``), a body-size limit, Prometheus metrics and one structured (JSON) log line
per request with its latency.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) adds microseconds, not a task per request.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Prometheus collectors in a registry owned by one app (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "predictions_total",
            "Predictions served, by predicted class",
            ["prediction"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "model_info",
            "The model version being served (value 1)",
            ["version"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # One child per predicted class (a model has at most config's MAX_CLASSES of them).
        self._by_class: dict[str, Any] = {}
        # Made by the first regression answer: a classifier's service exports no empty series.
        self._values: Summary | None = None

    def count_predictions(self, counts: Mapping[str, int]) -> None:
        """Add one scored request's predicted classes to ``predictions_total`` (a classifier;
        a regression model's answers go to ``observe_values``)."""
        for label, n in counts.items():
            child = self._by_class.get(label)
            if child is None:
                child = self._by_class[label] = self.predictions.labels(label)
            child.inc(n)

    def observe_values(self, values: Iterable[float]) -> None:
        """Add one scored request's predicted values (a regression model) to the summary
        ``predicted_value``: its ``_count`` and ``_sum`` give the rate and the mean prediction
        over any window, which is what drifts when the inputs do."""
        if self._values is None:
            self._values = Summary(
                "predicted_value",
                "Values predicted by the regression model",
                registry=self.registry,
            )
        observe = self._values.observe
        for value in values:
            observe(value)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one request (label children cached: ``labels()`` is not free)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _BodyTooLargeError(Exception):
    pass


class ObservabilityMiddleware:
    """Times every HTTP request, counts it, logs it, and refuses oversized bodies with 413."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        model_version: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.model_version = model_version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        # Handlers read it as request.state.request_id (e.g. to log it with a prediction).
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message.setdefault("headers", [])
                headers = [*message["headers"], (b"x-request-id", request_id.encode())]
                # The model serving when the answer starts (a scoring response's body also
                # names the exact version that scored it, even across a reload).
                version = self.model_version()
                if version is not None:
                    headers.append((b"x-model-version", version.encode("latin-1", "replace")))
                message["headers"] = headers
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLargeError
            return message

        declared = headers.get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _BodyTooLargeError
            await self.app(scope, receive_wrapper, send_wrapper)
        except ClientDisconnect:
            if not started:
                # nginx's convention: the client went away (or timed out, see server.py)
                # before its request was read. Not a server error: not counted as a 5xx.
                status = CLIENT_CLOSED_REQUEST
            raise
        except _BodyTooLargeError:
            if started:
                raise
            message = (
                f"request body larger than {self.max_body_bytes} bytes; "
                "send fewer records per request"
            )
            # Open Inference Protocol routes answer in that protocol's error shape.
            key = "error" if scope["path"].startswith("/v2/") else "detail"
            await _send_json(send_wrapper, 413, {key: message})
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(scope["method"], _route_template(scope), status, elapsed)
            logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )


def _route_template(scope: Scope) -> str:
    # The matched route's template (/predict), never the raw path: bounded label values.
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
