"""Serve the registry's champion and pick up a new one without downtime.

``RegistryReader`` answers two questions: which registry version an alias points at, and what
files that version's bundle holds. Against an MLflow tracking server (``http(s)://``) it uses
MLflow's REST API with the standard library, so the serving image needs no MLflow; with an
embedded store (``sqlite:///...``, local development) it imports the MLflow client, in the
loader thread only.

``Reloader`` swaps models: it downloads the new champion's bundle (metadata.json, model.onnx)
into ``registry.cache_dir/<version>/``, loads it, scores the model's own input example, and only
then replaces the served model. Requests in flight keep the model they started with; a version
that fails any step is refused and the old one keeps serving. A reload that fails for a reason
that is not the version's (registry down, cache not writable, anything unexpected) is logged,
counted and tried again on the next check: it never stops the periodic checks.

What reaches API clients (``/ready``'s 503, ``/admin/reload``'s ``detail``) names the problem
but no filesystem path or file content; the log line beside it has the full story.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from prometheus_client import Counter

from .. import artifacts, model_store
from ..config_base import PACKAGE
from ..errors import ModelNotFoundError, ProjectError
from ..errortext import first_line
from ..mlops_config import MlopsConfig
from .core import ModelState, public_reason
from .observability import ServiceMetrics

logger = logging.getLogger(__name__)

# What the service needs from a bundle; holdout.json and reference.json stay in the registry.
SERVING_FILES = (model_store.METADATA_FILE, artifacts.ONNX_FILE)
HTTP_TIMEOUT_S = 10.0


class RegistryError(ProjectError):
    """The registry could not be reached or does not hold what was asked for (retried)."""


class VersionRefusedError(ProjectError):
    """The version itself is unusable (damaged bundle, different inputs, fails its own input
    example): not retried until forced. The message is safe to show to API clients."""


@dataclass(frozen=True)
class RegistryVersion:
    """One registered model version: its number, where its bundle lives, its tags."""

    name: str
    version: str
    source: str
    tags: dict[str, str]

    @property
    def model_version(self) -> str:
        """The trained model's own version string (``metadata.json``), tagged at registration."""
        return self.tags.get("model_version", "")


class RegistryReader(Protocol):
    """Read-only registry access: what the service needs."""

    def by_alias(self, name: str, alias: str) -> RegistryVersion: ...

    def by_version(self, name: str, version: str) -> RegistryVersion: ...

    def download(self, source: str, filename: str, destination: Path) -> None: ...


class RestRegistry:
    """MLflow's REST API over ``urllib``: aliases, model versions, proxied artifacts.

    ``authorization``: the ``Authorization`` header for a server behind authentication (see
    ``tracking_authorization``: MLflow's own credential variables)."""

    def __init__(
        self, base_url: str, timeout_s: float = HTTP_TIMEOUT_S, authorization: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Authorization": authorization} if authorization else {}

    def _open(self, url: str) -> Any:
        request = urllib.request.Request(url, headers=self.headers)
        return urllib.request.urlopen(request, timeout=self.timeout_s)

    def by_alias(self, name: str, alias: str) -> RegistryVersion:
        query = urllib.parse.urlencode({"name": name, "alias": alias})
        payload = self._get_json(f"/api/2.0/mlflow/registered-models/alias?{query}")
        return _rest_version(payload)

    def by_version(self, name: str, version: str) -> RegistryVersion:
        query = urllib.parse.urlencode({"name": name, "version": version})
        return _rest_version(self._get_json(f"/api/2.0/mlflow/model-versions/get?{query}"))

    def download(self, source: str, filename: str, destination: Path) -> None:
        scheme = "mlflow-artifacts:"
        if not source.startswith(scheme):
            raise RegistryError(
                f"model source {source} is not served by the tracking server: run it with "
                "--serve-artifacts (the default) so the service can download bundles"
            )
        path = urllib.parse.quote(f"{source[len(scheme) :].lstrip('/')}/{filename}")
        url = f"{self.base_url}/api/2.0/mlflow-artifacts/artifacts/{path}"
        try:
            with (
                self._open(url) as response,
                destination.open("wb") as handle,
            ):
                shutil.copyfileobj(response, handle)
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"could not download {filename} from {url}: {exc}") from exc

    def _get_json(self, path: str) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            with self._open(url) as response:
                payload: dict[str, Any] = json.load(response)
                return payload
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code in (400, 404):
                raise ModelNotFoundError(f"registry at {self.base_url}: {message}") from None
            raise RegistryError(
                f"registry at {self.base_url} answered {exc.code}: {message}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"registry at {self.base_url} unreachable: {exc}") from exc


def _rest_version(payload: dict[str, Any]) -> RegistryVersion:
    found = payload.get("model_version") or {}
    try:
        return RegistryVersion(
            name=str(found["name"]),
            version=str(found["version"]),
            source=str(found["source"]),
            tags={str(t["key"]): str(t["value"]) for t in found.get("tags", [])},
        )
    except (KeyError, TypeError) as exc:
        raise RegistryError(f"unexpected registry answer (no {exc}): {payload}") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        return str(exc.reason)
    return str(body.get("message") or exc.reason)


class MlflowRegistry:
    """The MLflow client, for embedded stores (``sqlite:///``) in local development."""

    def __init__(self, tracking_uri: str) -> None:
        try:
            from mlflow import MlflowClient  # seconds to import: only for embedded stores
        except ImportError:
            raise RegistryError(
                f"tracking.uri {tracking_uri} is an embedded store, which needs MLflow installed; "
                "the serving image reads the registry from a tracking server: set "
                "MLFLOW_TRACKING_URI=http://<server>:5000"
            ) from None

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)

    def by_alias(self, name: str, alias: str) -> RegistryVersion:
        return self._call(lambda: self.client.get_model_version_by_alias(name, alias))

    def by_version(self, name: str, version: str) -> RegistryVersion:
        return self._call(lambda: self.client.get_model_version(name, version))

    def download(self, source: str, filename: str, destination: Path) -> None:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source}/{filename}",
                    dst_path=scratch,
                    tracking_uri=self.tracking_uri,
                )
            except Exception as exc:
                raise RegistryError(f"could not download {filename} from {source}: {exc}") from exc
            shutil.move(local, destination)

    def _call(self, get: Callable[[], Any]) -> RegistryVersion:
        try:
            found = get()
        except Exception as exc:
            message = first_line(exc)
            if "not found" in message.lower() or "does not exist" in message.lower():
                raise ModelNotFoundError(f"registry at {self.tracking_uri}: {message}") from None
            raise RegistryError(f"registry at {self.tracking_uri}: {message}") from exc
        return RegistryVersion(
            name=found.name, version=str(found.version), source=found.source, tags=found.tags
        )


def registry_reader(tracking_uri: str) -> RegistryReader:
    """REST for a tracking server, the MLflow client for an embedded store."""
    if tracking_uri.startswith(("http://", "https://")):
        return RestRegistry(tracking_uri, authorization=tracking_authorization(os.environ))
    return MlflowRegistry(tracking_uri)


def tracking_authorization(env: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header MLflow's own client sends for these variables:
    ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` (basic); None without them. On Kubernetes they come from the
    project's Secret (deploy/k8s), like the tracking URI."""
    token = env.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def fetch_bundle(reader: RegistryReader, found: RegistryVersion, cache_dir: Path) -> Path:
    """The version's serving files in ``cache_dir/<version>/``, downloaded once and checked.

    Files are downloaded into a temporary directory and renamed into place when complete and
    matching the checksum in ``metadata.json``: a failed download never leaves a half bundle.
    A cached bundle is checked again before use; a damaged one (disk error, someone editing
    the cache) is discarded and downloaded again, so it cannot keep the service unready.
    """
    target = cache_dir / found.version
    if target.exists():
        problem = bundle_problem(target)
        if problem is None:
            return target
        logger.warning(
            "cached bundle of registry version %s in %s is damaged (%s): downloading it again",
            found.version,
            target,
            problem,
        )
        _discard(target, cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{found.version}.", dir=cache_dir))
    try:
        for name in SERVING_FILES:
            reader.download(found.source, name, scratch / name)
        problem = bundle_problem(scratch)
        if problem is not None:
            raise VersionRefusedError(
                f"registry version {found.version}: {problem}; bundle refused"
            )
        try:
            scratch.rename(target)
        except OSError:
            # Another process (a replica sharing the cache) renamed its copy first: use it.
            if bundle_problem(target) is not None:
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def bundle_problem(directory: Path) -> str | None:
    """What is wrong with a bundle directory (None: complete, and model.onnx matches the
    checksum in metadata.json). Names files, never paths or contents: it reaches clients."""
    missing = [name for name in SERVING_FILES if not (directory / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        metadata = artifacts.load_metadata(directory)
    except ProjectError as exc:
        logger.warning("unreadable model metadata: %s", exc)
        return f"{model_store.METADATA_FILE} is not valid model metadata"
    onnx_sha = model_store.sha256_file(directory / artifacts.ONNX_FILE)
    if onnx_sha != metadata.onnx_sha256:
        return (
            f"{artifacts.ONNX_FILE} (sha256 {onnx_sha[:12]}) does not match the checksum in "
            f"its {model_store.METADATA_FILE} ({metadata.onnx_sha256[:12]})"
        )
    return None


def _discard(target: Path, cache_dir: Path) -> None:
    """Remove a cache entry: renamed aside first (one atomic step), so nothing ever finds a
    half-deleted bundle under the version's name."""
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.discarded.", dir=cache_dir))
    target.rename(trash / target.name)
    shutil.rmtree(trash, ignore_errors=True)


# loaded: a new model serves; unchanged: nothing new; refused: the new version failed a check
# (the old one serves; not retried until forced); unavailable: the registry could not be asked
# or the download failed; error: anything else went wrong (e.g. the cache is not writable).
# The last two are retried on the next check.
Outcome = Literal["loaded", "unchanged", "refused", "unavailable", "error"]
OUTCOMES: tuple[Outcome, ...] = ("loaded", "unchanged", "refused", "unavailable", "error")


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did."""

    outcome: Outcome
    model_version: str | None
    registry_version: str | None
    previous_version: str | None
    detail: str

    def as_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome,
            "model_version": self.model_version,
            "registry_version": self.registry_version,
            "previous_version": self.previous_version,
            "detail": self.detail,
        }


class Reloader:
    """Loads the champion (or the pinned version) and swaps it in when it changes."""

    def __init__(
        self,
        cfg: MlopsConfig,
        state: ModelState,
        metrics: ServiceMetrics,
        load: Callable[[Path], Any],
        reader: RegistryReader | None = None,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.metrics = metrics
        self.load = load
        self._reader = reader
        self._lock = threading.Lock()
        self.registry_version: str | None = None
        self._refused: dict[str, str] = {}  # registry version -> why (not retried until forced)
        self.reloads = Counter(
            "model_reloads_total",
            "Model reload attempts by outcome",
            ["outcome"],
            registry=metrics.registry,
        )
        self.failures = Counter(
            "model_reload_failures_total",
            "New model versions refused (the previous model kept serving)",
            registry=metrics.registry,
        )
        for outcome in OUTCOMES:  # every outcome exported (as 0) from the start
            self.reloads.labels(outcome)

    @property
    def reader(self) -> RegistryReader:
        if self._reader is None:
            self._reader = registry_reader(self.cfg.tracking.uri)
        return self._reader

    def locate(self) -> RegistryVersion:
        """The version to serve: ``serving.pinned_version`` if pinned, else the champion."""
        name = self.cfg.registry.model_name
        pinned = self.cfg.serving.pinned_version
        wanted = f"version {pinned}" if pinned is not None else self.cfg.registry.champion_alias
        try:
            if pinned is not None:
                return self.reader.by_version(name, pinned)
            return self.reader.by_alias(name, self.cfg.registry.champion_alias)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"no trained model registered as {wanted} of '{name}' at "
                f"{self.cfg.tracking.uri}: run `python -m {PACKAGE} train` ({exc})"
            ) from None

    def reload(self, force: bool = False) -> ReloadResult:
        """Check the registry and swap in a new version if there is one (blocking; a thread).

        Never raises: every failure is logged, counted in ``model_reloads_total{outcome}`` and
        answered as a result, so the periodic check keeps running. ``force`` retries a
        version refused before (e.g. after fixing the registry)."""
        with self._lock:
            try:
                result = self._reload(force)
            except Exception as exc:  # a bug or an OSError must not end the periodic checks
                result = self._failed(exc)
        self.reloads.labels(result.outcome).inc()
        return result

    def _reload(self, force: bool) -> ReloadResult:
        current = self.state.model
        previous = current.metadata.version if current is not None else None
        try:
            found = self.locate()
        except ProjectError as exc:
            detail = public_reason(str(exc))
            if current is None:
                self.state.problem = detail
            logger.warning("registry not available, still serving %s: %s", previous, exc)
            return ReloadResult("unavailable", previous, self.registry_version, previous, detail)
        if found.version == self.registry_version and current is not None:
            return ReloadResult("unchanged", previous, found.version, previous, "no new version")
        if found.version in self._refused and not force:
            detail = f"version {found.version} was refused: {self._refused[found.version]}"
            return ReloadResult("refused", previous, self.registry_version, previous, detail)
        try:
            model = self._load_checked(found)
        except VersionRefusedError as exc:
            detail = public_reason(str(exc))
            self._refused[found.version] = detail
            self.failures.inc()
            if current is None:
                self.state.problem = f"registry version {found.version} refused: {detail}"
            logger.error(
                "registry version %s refused, still serving %s: %s", found.version, previous, exc
            )
            return ReloadResult("refused", previous, self.registry_version, previous, detail)
        except RegistryError as exc:
            detail = public_reason(str(exc))
            if current is None:
                self.state.problem = f"registry version {found.version} not fetched: {detail}"
            logger.warning(
                "registry version %s not fetched (retried on the next check), still serving %s: %s",
                found.version,
                previous,
                exc,
            )
            return ReloadResult("unavailable", previous, self.registry_version, previous, detail)
        self.state.model = model  # one attribute swap: requests in flight keep the old model
        self.registry_version = found.version
        version = model.metadata.version
        if previous is not None and previous != version:
            self.metrics.model_info.remove(previous)
        self.metrics.model_info.labels(version).set(1)
        logger.info("serving registry version %s (model %s)", found.version, version)
        return ReloadResult("loaded", version, found.version, previous, "new model serving")

    def _failed(self, exc: Exception) -> ReloadResult:
        """The result of a reload that failed unexpectedly; the traceback goes to the log."""
        current = self.state.model
        previous = current.metadata.version if current is not None else None
        logger.error(
            "model reload failed (retried on the next check), still serving %s",
            previous,
            exc_info=exc,
        )
        detail = (
            f"reload failed: {type(exc).__name__}: {public_reason(str(exc))} "
            "(retried on the next check; details in the service log)"
        )
        if current is None:
            self.state.problem = detail
        return ReloadResult("error", previous, self.registry_version, previous, detail)

    def _load_checked(self, found: RegistryVersion) -> Any:
        """Download, load and smoke-test a version. ``VersionRefusedError`` when the version is
        at fault, ``RegistryError`` when the download failed, anything else when this process
        is (e.g. an ``OSError`` from a cache directory that is not writable)."""
        directory = fetch_bundle(self.reader, found, self.cfg.registry.cache_dir)
        # Checked before loading: other inputs would also fail the load, less clearly.
        expected = artifacts.load_metadata(directory)
        if expected.task != self.cfg.task:
            raise VersionRefusedError(
                f"model {expected.version} does {expected.task}, but this API answers "
                f"{self.cfg.task} (config task): serve it with a config whose task is "
                f"{expected.task}"
            )
        if expected.features != self.cfg.features:
            raise VersionRefusedError(
                f"model {expected.version} expects different inputs than this API serves "
                "(config features): deploy the new config to change the API contract"
            )
        try:
            model = self.load(directory)
        except Exception as exc:  # a corrupt graph fails inside ONNX Runtime
            logger.error(
                "model of registry version %s in %s does not load: %s",
                found.version,
                directory,
                exc,
            )
            reason = public_reason(str(exc))
            raise VersionRefusedError(
                f"model of registry version {found.version} does not load: {reason}"
            ) from exc
        metadata = model.metadata
        try:
            scores = model.predict_records([metadata.input_example])
            problem = model.outputs.problem(np.asarray(scores, dtype=np.float64), 1)
        except Exception as exc:
            reason = public_reason(str(exc))
            raise VersionRefusedError(
                f"model {metadata.version} fails on its own input example: {reason}"
            ) from exc
        if problem is not None:
            raise VersionRefusedError(
                f"model {metadata.version} does not score its input example as a "
                f"{metadata.task} model: {problem}"
            )
        return model
