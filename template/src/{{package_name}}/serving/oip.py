"""The Open Inference Protocol (KServe V2, HTTP/JSON) beside the service's own routes, shared
by every project type.

KServe, Seldon Core/MLServer and Triton clients speak it:

- ``GET /v2``: server metadata; ``GET /v2/health/live``; ``GET /v2/health/ready`` (200 once a
  model is loaded, 503 before: KServe's own answer, usable as a readiness probe);
- ``GET /v2/models/{name}[/versions/{version}]``: the model's input and output tensors, and
  ``.../ready``;
- ``POST /v2/models/{name}[/versions/{version}]/infer``: named input tensors, batch along the
  first dimension, one output tensor per answer of the task.

The model name is the package name and its one version is the served model's version. This
module is the protocol's plumbing: request parsing, the checks of tensor names, datatypes,
shapes and batch size, the protocol's error shape ``{"error": "..."}`` (400 for a bad request,
404 for an unknown model, version or path, 503 while no model is loaded; never a 500, never
FastAPI's 422) and the routes. What the tensors mean is the project type's: its ``app.py``
passes an ``InferenceModel`` that declares the tensors and scores decoded ones with the same
predictor ``/predict`` uses.

Not supported, and refused with a 400 that says so: the binary tensor data extension (send
JSON tensors; tritonclient: ``binary_data=False`` on inputs and requested outputs). A request
parameter asking for binary outputs (``binary_data_output``) is answered with JSON tensors,
which every client reads as well.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .core import ModelState, json_body, json_response, public_reason

PREFIX = "/v2"
MODEL_PATH = PREFIX + "/models/{name}"  # FastAPI's path template (not an f-string)
TAG = "open inference protocol"
PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by ONNX Runtime
BATCH = -1  # the batch dimension in the metadata's shapes

INTEGER_DATATYPES = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
NUMBER_DATATYPES = INTEGER_DATATYPES | FLOAT_DATATYPES
Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
# The JSON values a tensor of each datatype holds (BYTES: UTF-8 text); null (a missing value,
# an extension of this service) is accepted everywhere and judged by the project type.
_JSON_VALUES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{name: frozenset({int}) for name in INTEGER_DATATYPES},
    **{name: frozenset({int, float}) for name in FLOAT_DATATYPES},
}
_JSON_NAMES = {
    bool: "true/false",
    int: "integer",
    float: "floating-point number",
    str: "text",
    list: "array",
    dict: "object",
}
BINARY_UNSUPPORTED = (
    "binary tensor data is not supported: send JSON tensors "
    "(tritonclient: binary_data=False on inputs and requested outputs)"
)
MAX_LISTED_PROBLEMS = 5
# What each numeric datatype holds: a JSON integer outside it is refused (NumPy and pydantic
# raise OverflowError on integers beyond float range, which would be a 500).
_VALUE_RANGES: dict[str, tuple[float, float]] = {
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "FP64": (-1.7976931348623157e308, 1.7976931348623157e308),
}
# A body with more commas than this many times the values of a full batch cannot be valid:
# refused before parsing (parsing a few MB of numbers costs tens of MB of Python objects).
SCAN_SLACK = 2
SCAN_ALLOWANCE = 1024  # the commas of the request's own keys, shapes and parameters
NAME_ECHO_LIMIT = 80  # characters of a client's tensor name repeated in an error


class InferenceError(Exception):
    """A request the protocol refuses: its HTTP status and one readable message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    """The protocol's error answer."""
    return JSONResponse(status_code=status, content={"error": message})


# --- the protocol's JSON objects (request parsing and the OpenAPI document) ------------------

# Strict: a shape of "3" or an id of 7 is refused, not coerced. Unknown keys are ignored (the
# protocol lets clients and servers add their own).
_STRICT = ConfigDict(strict=True, protected_namespaces=())
Parameters = dict[str, Any]


def _integral(value: Any) -> Any:
    """``3.0`` is the integer 3 (JSON Schema's ``integer`` admits it); other values are left
    for strict validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Dimension = Annotated[int, BeforeValidator(_integral), Field(ge=0)]


class RequestInput(BaseModel):
    """One input tensor: ``data`` in row-major order, flat or nested to the shape."""

    model_config = _STRICT

    name: str
    shape: Annotated[list[Dimension], Field(min_length=1)] = Field(
        description="the batch size first, then the tensor's other dimensions"
    )
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    """One output the client asks for (all of them when the request lists none)."""

    model_config = _STRICT

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """An inference request (``POST .../infer``)."""

    model_config = _STRICT

    id: str | None = Field(default=None, description="echoed in the response")
    parameters: Parameters | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """One output tensor, ``data`` flat in row-major order."""

    name: str
    datatype: Datatype
    shape: list[int]
    data: list[Any]


class InferenceResponse(BaseModel):
    """An inference response."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = Field(default=None, description="the request's id, when it had one")
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    """A tensor a model takes or returns; -1 in ``shape`` is the batch size."""

    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(BaseModel):
    """What ``GET /v2/models/{name}`` answers."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters = Field(
        description="this service's extension: the task, classes and threshold of the model"
    )


class ServerMetadata(BaseModel):
    """What ``GET /v2`` answers."""

    name: str
    version: str
    extensions: list[str]


class LiveAnswer(BaseModel):
    live: bool


class ReadyAnswer(BaseModel):
    ready: bool
    error: str | None = Field(default=None, description="why not, while not ready")


class ModelReadyAnswer(BaseModel):
    name: str
    ready: bool
    error: str | None = Field(default=None, description="why not, while not ready")


class ErrorAnswer(BaseModel):
    """Every refused protocol request."""

    error: str


# --- tensors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the model metadata declares it. ``accepts``: other datatypes taken too."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    accepts: frozenset[str] = frozenset()

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def takes(self, datatype: str) -> bool:
        return datatype == self.datatype or datatype in self.accepts

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether a request's ``shape`` is this tensor's with any batch size; trailing
        dimensions of size 1 may be left out (``[N]`` for ``[-1, 1]``)."""
        return len(shape) >= 1 and _squeezed(shape[1:]) == _squeezed(self.shape[1:])


def _squeezed(dims: tuple[int, ...]) -> tuple[int, ...]:
    while dims and dims[-1] == 1:
        dims = dims[:-1]
    return dims


@dataclass(frozen=True)
class Tensor:
    """A decoded input tensor: its datatype and shape as sent, ``data`` flat (row-major)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]

    def check_values(self) -> None:
        """Refuse values of another JSON type than the datatype's (null passes: missing)."""
        allowed = _JSON_VALUES[self.datatype]
        kinds = {type(value) for value in self.data}
        found = kinds - allowed - {type(None)}
        if found:
            names = ", ".join(sorted(_JSON_NAMES.get(kind, kind.__name__) for kind in found))
            raise InferenceError(
                400, f"input '{self.name}' is {self.datatype} but its data holds {names} values"
            )
        if int in kinds and self.datatype in _VALUE_RANGES:
            low, high = _VALUE_RANGES[self.datatype]
            if any(type(value) is int and not low <= value <= high for value in self.data):
                raise InferenceError(
                    400, f"input '{self.name}' holds integers outside the range of {self.datatype}"
                )


@dataclass(frozen=True)
class Output:
    """An output tensor: ``data`` flat in row-major order."""

    datatype: str
    shape: tuple[int, ...]
    data: list[Any]


# Called on the event loop after a scored request: (request, start time).
AfterInference = Callable[[Request, float], None]


@dataclass(frozen=True)
class Inference:
    """What scoring a request gave: outputs by name, and what to do once it is answered."""

    outputs: dict[str, Output]
    after: AfterInference | None = None


class InferenceModel(Protocol):
    """What a project type tells the protocol routes about its model."""

    # Bodies up to this size are decoded and scored on the event loop; larger ones in the
    # thread pool, like the project type's /predict/batch.
    inline_body_bytes: int

    def inputs(self, model: Any) -> Sequence[TensorSpec]: ...

    def outputs(self, model: Any) -> Sequence[TensorSpec]: ...

    def parameters(self, model: Any) -> dict[str, Any]: ...

    def infer(self, tensors: Mapping[str, Tensor], rows: int, model: Any) -> Inference: ...


def parse_request(body: bytes) -> InferenceRequest:
    """The request object, or a 400 naming what is malformed."""
    try:
        return InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise InferenceError(400, describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Pydantic's problems with a request body as one line (the first few)."""
    problems = []
    errors = exc.errors()
    for error in errors[:MAX_LISTED_PROBLEMS]:
        if error.get("type") == "json_invalid":
            problems.append(f"malformed JSON: {error.get('ctx', {}).get('error', 'invalid')}")
            continue
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        problems.append(f"{where or 'body'}: {error['msg']}")
    more = len(errors) - MAX_LISTED_PROBLEMS
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def _name(name: str) -> str:
    """A client's name as an error repeats it: quoted, and cut short if long."""
    if len(name) > NAME_ECHO_LIMIT:
        name = name[: NAME_ECHO_LIMIT - 1] + "…"
    return repr(name)


def decode_inputs(
    request: InferenceRequest, specs: Sequence[TensorSpec], max_batch_size: int
) -> tuple[dict[str, Tensor], int]:
    """The request's tensors by name and the batch size, after checking names (every input
    once, no other), datatypes, shapes, one batch size within ``max_batch_size``, and that
    each tensor's data has as many values as its shape."""
    by_name = {spec.name: spec for spec in specs}
    expected = ", ".join(by_name)
    seen: set[str] = set()
    for given in request.inputs:
        if given.name not in by_name:
            raise InferenceError(
                400, f"unknown input {_name(given.name)}: this model takes {expected}"
            )
        if given.name in seen:
            raise InferenceError(400, f"input {_name(given.name)} is given more than once")
        seen.add(given.name)
    missing = [name for name in by_name if name not in seen]
    if missing:
        raise InferenceError(
            400,
            f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}: send one "
            "tensor per input of the model metadata",
        )
    rows: int | None = None
    for given in request.inputs:
        spec = by_name[given.name]
        if given.parameters and "binary_data_size" in given.parameters:
            raise InferenceError(400, BINARY_UNSUPPORTED)
        if not spec.takes(given.datatype):
            others = spec.accepts - {spec.datatype}
            also = (
                " (or another integer or floating datatype)"
                if others >= NUMBER_DATATYPES - {spec.datatype}
                else f" (or {', '.join(sorted(others))})"
                if others
                else ""
            )
            raise InferenceError(
                400,
                f"input '{given.name}' has datatype {given.datatype}; it takes "
                f"{spec.datatype}{also}",
            )
        shape = tuple(given.shape)
        if not spec.fits(shape):
            raise InferenceError(
                400,
                f"input '{given.name}' has shape {list(shape)}; it takes {list(spec.shape)} "
                "(-1: the batch size)",
            )
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InferenceError(
                400,
                f"inputs disagree on the batch size: '{given.name}' has {shape[0]} rows, "
                f"'{request.inputs[0].name}' has {rows}",
            )
    assert rows is not None  # inputs has at least one tensor
    if rows < 1:
        raise InferenceError(400, "the batch is empty: send at least one row")
    if rows > max_batch_size:
        raise InferenceError(
            400,
            f"a batch of {rows} rows is over serving.max_batch_size ({max_batch_size}): "
            "split it into smaller requests",
        )
    tensors: dict[str, Tensor] = {}
    for given in request.inputs:
        shape = tuple(given.shape)
        data = _flat(given.name, given.data, len(shape))
        count = math.prod(shape)
        if len(data) != count:
            raise InferenceError(
                400,
                f"input '{given.name}' has shape {list(shape)} ({count} values) but its data "
                f"holds {len(data)} values",
            )
        tensors[given.name] = Tensor(given.name, given.datatype, shape, data)
    return tensors, rows


def _flat(name: str, data: list[Any], dims: int) -> list[Any]:
    """``data`` flat: the protocol allows nesting it to the tensor's shape (row-major)."""
    for _ in range(dims - 1):
        if not data or not isinstance(data[0], list):
            break
        try:
            data = list(chain.from_iterable(data))
        except TypeError:  # a number beside a nested list
            raise InferenceError(
                400, f"input '{name}': nested data must follow the tensor's shape"
            ) from None
    return data


def _requested(request: InferenceRequest, outputs: Sequence[TensorSpec]) -> list[str]:
    """The names of the outputs to return, in the order asked for (all when none is asked)."""
    names = [spec.name for spec in outputs]
    if request.outputs is None:
        return names
    asked = [output.name for output in request.outputs]
    unknown = [name for name in asked if name not in names]
    if unknown:
        raise InferenceError(
            400, f"unknown output {_name(unknown[0])}: this model returns {', '.join(names)}"
        )
    if len(set(asked)) != len(asked):
        raise InferenceError(400, "an output is asked for more than once")
    return asked


# --- routes ----------------------------------------------------------------------------------

_ERROR_DOCS: dict[int, str] = {
    400: "bad request: malformed JSON, unknown or missing input names, a wrong datatype or "
    "shape, a batch over serving.max_batch_size",
    404: "unknown model name or version",
    503: "no model loaded yet (the reason is in error)",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorAnswer, "description": _ERROR_DOCS[status]} for status in statuses
    }


def add_inference_protocol(
    app: FastAPI,
    state: ModelState,
    *,
    model_name: str,
    server_version: str,
    model: InferenceModel,
    max_batch_size: int,
) -> None:
    """Add the protocol's routes to ``app``, serving ``state``'s model as ``model_name``."""
    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [model_name]},
        "description": "the model's name: the project's package name",
    }
    version_parameter = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the served model version (listed by GET /v2/models/{name})",
    }
    by_name: dict[str, Any] = {"parameters": [name_parameter]}
    by_version: dict[str, Any] = {"parameters": [name_parameter, version_parameter]}

    def served(request: Request) -> Any:
        """The loaded model this request names (with its version, if given), else a 404/503."""
        name = request.path_params.get("name")
        if name != model_name:
            raise InferenceError(
                404, f"unknown model {_name(str(name))}: this server serves '{model_name}'"
            )
        loaded = state.model
        if loaded is None:
            raise InferenceError(
                503, f"model '{model_name}' is not ready: {public_reason(state.problem)}"
            )
        version = request.path_params.get("version")
        if version is not None and version != loaded.metadata.version:
            raise InferenceError(
                404,
                f"model '{model_name}' has no version {_name(version)}: "
                f"{loaded.metadata.version} is served",
            )
        return loaded

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InferenceError)
        return error_response(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404 (no such path) and 405 on the protocol's paths come in the
        # protocol's error shape; every other path keeps FastAPI's.
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
            return JSONResponse(
                status_code=exc.status_code,
                content={"error": str(exc.detail)},
                headers=exc.headers,
            )
        return await http_exception_handler(request, exc)

    app.add_exception_handler(InferenceError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)

    @app.get(PREFIX, response_model=ServerMetadata, tags=[TAG])
    async def server_metadata() -> Response:
        """Server metadata: name, version and the protocol extensions supported (none)."""
        return json_response({"name": model_name, "version": server_version, "extensions": []})

    @app.get(f"{PREFIX}/health/live", response_model=LiveAnswer, tags=[TAG])
    async def server_live() -> Response:
        """Liveness: the process answers (whether or not a model is loaded)."""
        return json_response({"live": True})

    @app.get(
        f"{PREFIX}/health/ready",
        response_model=ReadyAnswer,
        tags=[TAG],
        responses={503: {"model": ReadyAnswer, "description": _ERROR_DOCS[503]}},
    )
    async def server_ready() -> Response:
        """Readiness: 200 once the model is loaded, 503 with the reason before."""
        if state.model is None:
            reason = f"not ready: {public_reason(state.problem)}"
            return JSONResponse(status_code=503, content={"ready": False, "error": reason})
        return json_response({"ready": True})

    async def model_ready(request: Request) -> Response:
        try:
            served(request)
        except InferenceError as exc:
            if exc.status != 503:
                raise
            return JSONResponse(
                status_code=503, content={"name": model_name, "ready": False, "error": exc.message}
            )
        return json_response({"name": model_name, "ready": True})

    async def model_metadata(request: Request) -> Response:
        loaded = served(request)
        return json_response(
            {
                "name": model_name,
                "versions": [loaded.metadata.version],
                "platform": PLATFORM,
                "inputs": [spec.metadata() for spec in model.inputs(loaded)],
                "outputs": [spec.metadata() for spec in model.outputs(loaded)],
                "parameters": model.parameters(loaded),
            }
        )

    def _too_many_values(body: bytes, specs: Sequence[TensorSpec]) -> bool:
        """Whether ``body`` has more commas than a full batch of these inputs could (numbers
        only: text tensors may hold commas in their values)."""
        if any(spec.datatype == "BYTES" for spec in specs):
            return False
        values = max_batch_size * sum(math.prod(spec.shape[1:]) for spec in specs)
        return body.count(b",") > SCAN_SLACK * values + SCAN_ALLOWANCE

    def run(body: bytes, loaded: Any) -> tuple[dict[str, Any], AfterInference | None]:
        request = parse_request(body)
        names = _requested(request, model.outputs(loaded))
        tensors, rows = decode_inputs(request, model.inputs(loaded), max_batch_size)
        inference = model.infer(tensors, rows, loaded)
        answer: dict[str, Any] = {
            "model_name": model_name,
            "model_version": loaded.metadata.version,
        }
        if request.id is not None:
            answer["id"] = request.id
        answer["outputs"] = [
            {
                "name": name,
                "datatype": inference.outputs[name].datatype,
                "shape": list(inference.outputs[name].shape),
                "data": inference.outputs[name].data,
            }
            for name in names
        ]
        return answer, inference.after

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        loaded = served(request)
        if "inference-header-content-length" in request.headers:
            raise InferenceError(400, BINARY_UNSUPPORTED)
        body = await request.body()
        if len(body) > model.inline_body_bytes and _too_many_values(body, model.inputs(loaded)):
            raise InferenceError(
                413,
                f"the body holds more values than {max_batch_size} rows "
                "(serving.max_batch_size) of the model's inputs can: send fewer rows per request",
            )
        if len(body) <= model.inline_body_bytes:
            answer, after = run(body, loaded)
        else:
            # Large bodies: parsing and scoring in the thread pool (ONNX Runtime releases the
            # GIL), so /health and small requests keep being answered meanwhile.
            answer, after = await run_in_threadpool(run, body, loaded)
        if after is not None:
            after(request, started)
        return json_response(answer)

    ready_responses: dict[int | str, dict[str, Any]] = {
        **_errors(404),
        503: {"model": ModelReadyAnswer, "description": _ERROR_DOCS[503]},
    }
    infer_responses: dict[int | str, dict[str, Any]] = {
        **_errors(400, 404, 503),
        413: {"description": "request body larger than serving.max_body_bytes"},
    }
    # Each model route twice: by name, and by name and version.
    for path, parameters, suffix in (
        (MODEL_PATH, by_name, ""),
        (MODEL_PATH + "/versions/{version}", by_version, "_version"),
    ):
        app.add_api_route(
            f"{path}/ready",
            model_ready,
            methods=["GET"],
            response_model=ModelReadyAnswer,
            responses=ready_responses,
            tags=[TAG],
            summary="Model ready",
            description="200 once the model is loaded, 503 with the reason before.",
            operation_id=f"model_ready{suffix}",
            openapi_extra=parameters,
        )
        app.add_api_route(
            path,
            model_metadata,
            methods=["GET"],
            response_model=ModelMetadata,
            responses=_errors(404, 503),
            tags=[TAG],
            summary="Model metadata",
            description="The model's input and output tensors (-1: the batch size).",
            operation_id=f"model_metadata{suffix}",
            openapi_extra=parameters,
        )
        app.add_api_route(
            f"{path}/infer",
            infer,
            methods=["POST"],
            response_model=InferenceResponse,
            responses=infer_responses,
            tags=[TAG],
            summary="Model infer",
            description="Score a batch of named input tensors (JSON tensor data).",
            operation_id=f"model_infer{suffix}",
            openapi_extra={**parameters, **json_body(InferenceRequest)},
        )
