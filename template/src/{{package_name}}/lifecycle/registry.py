"""MLflow Model Registry: register every trained model, move aliases, fetch bundles.

A registered version's source is a *bundle* logged to its training run under ``serving/``:
metadata.json, model.onnx, holdout.json and reference.json (the drift reference). The service
downloads the first two; promotion and monitoring use all four. Versions carry their metrics,
data fingerprint, git commit, parity check and input-schema hash as tags.

The champion history (for ``rollback``) is a registered-model tag: comma-separated versions,
oldest first, the last one being the current champion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import artifacts, model_store
from ..config import FeaturesConfig
from ..errors import ModelError, ModelNotFoundError, TrackingError
from ..errortext import first_line
from ..mlops_config import MlopsConfig
from .reference import REFERENCE_FILE, build_reference, write_reference

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ..train import TrainResult

logger = logging.getLogger(__name__)

BUNDLE_PATH = "serving"  # artifact path of the bundle inside the training run
BUNDLE_FILES = (
    model_store.METADATA_FILE,
    artifacts.ONNX_FILE,
    artifacts.HOLDOUT_FILE,
    REFERENCE_FILE,
)
HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class Registered:
    """The registry version a training run became."""

    registry_version: str
    model_version: str
    champion: bool


def features_hash(features: FeaturesConfig) -> str:
    """A short hash of the input schema: equal hashes mean the same API contract."""
    canonical = json.dumps(features.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def client(cfg: MlopsConfig) -> MlflowClient:
    """An MLflow client on ``tracking.uri``."""
    from mlflow import MlflowClient

    return MlflowClient(cfg.tracking.uri)


@contextmanager
def registry_errors(cfg: MlopsConfig, doing: str) -> Iterator[None]:
    """Turn an MLflow failure into one ``TrackingError`` line naming the registry."""
    try:
        yield
    except (ModelError, TrackingError):
        raise
    except Exception as exc:
        raise TrackingError(
            f"could not {doing} in the registry at {cfg.tracking.uri}: {first_line(exc)}"
        ) from exc


def register_training(cfg: MlopsConfig, result: TrainResult, frame: pd.DataFrame) -> Registered:
    """Register a trained model: bundle logged to its run, a new version, the challenger alias
    on it; the very first version also becomes the champion.

    ``frame`` is the validated training table the model was trained on (drift reference).
    """
    if result.run_id is None:
        raise TrackingError(
            f"model {result.version} was published but not registered: its run was not logged "
            "to MLflow (tracking.enabled is false); the registry needs tracking.enabled: true"
        )
    metadata = artifacts.load_metadata(result.model_dir)
    name = cfg.registry.model_name
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch)
        for file in (model_store.METADATA_FILE, artifacts.ONNX_FILE, artifacts.HOLDOUT_FILE):
            shutil.copy2(result.model_dir / file, bundle / file)
        write_reference(build_reference(cfg, frame, result.model_dir), bundle / REFERENCE_FILE)
        with registry_errors(cfg, f"register model {metadata.version}"):
            mlflow = client(cfg)
            mlflow.log_artifacts(result.run_id, str(bundle), BUNDLE_PATH)
            run = mlflow.get_run(result.run_id)
            if not _exists(mlflow, name):
                mlflow.create_registered_model(
                    name, description=f"{cfg.project}: {metadata.model_name} ({metadata.task})"
                )
            version = mlflow.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{BUNDLE_PATH}",
                run_id=result.run_id,
                tags=version_tags(metadata),
                description=f"trained {metadata.created_at} on {metadata.n_train_rows} rows",
            )
            mlflow.set_registered_model_alias(name, cfg.registry.challenger_alias, version.version)
            champion = alias_version(cfg, cfg.registry.champion_alias, mlflow) is None
            if champion:
                mlflow.set_registered_model_alias(
                    name, cfg.registry.champion_alias, version.version
                )
                set_history(cfg, [str(version.version)], mlflow)
    logger.info(
        "registered %s version %s (model %s)%s",
        name,
        version.version,
        metadata.version,
        " as the first champion" if champion else f" as {cfg.registry.challenger_alias}",
    )
    return Registered(str(version.version), metadata.version, champion)


def version_tags(metadata: artifacts.ModelMetadata) -> dict[str, str]:
    """What a version says about itself in the registry UI and API."""
    parity = metadata.onnx_parity
    return {
        "model_version": metadata.version,
        "model_name": metadata.model_name,
        "data_fingerprint": metadata.data_fingerprint,
        "git_commit": metadata.git_commit or "unknown",
        "features_hash": features_hash(metadata.features),
        "task": metadata.task,
        "threshold": "" if metadata.threshold is None else f"{metadata.threshold:.6f}",
        "onnx_parity": "passed",
        "onnx_max_abs_diff": f"{float(parity.get('max_abs_diff', 0.0)):.3e}",
        "onnx_max_scaled_diff": f"{float(parity.get('max_scaled_diff', 0.0)):.3e}",
        "onnx_label_flips": str(parity.get("label_flips", 0)),
        **{f"test_{key}": f"{value:.6f}" for key, value in metadata.metrics.items()},
    }


def _exists(mlflow: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
    return True


def alias_version(
    cfg: MlopsConfig, alias: str, mlflow: MlflowClient | None = None
) -> ModelVersion | None:
    """The version ``alias`` points at, or None (no such alias / model yet)."""
    from mlflow.exceptions import MlflowException

    mlflow = mlflow or client(cfg)
    with registry_errors(cfg, f"look up alias '{alias}'"):
        try:
            return mlflow.get_model_version_by_alias(cfg.registry.model_name, alias)
        except MlflowException as exc:
            if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise


def require_alias(cfg: MlopsConfig, alias: str, mlflow: MlflowClient | None = None) -> ModelVersion:
    """Like ``alias_version``, but a missing alias is a clear error."""
    found = alias_version(cfg, alias, mlflow)
    if found is None:
        raise ModelNotFoundError(
            f"no '{alias}' version of model '{cfg.registry.model_name}' in the registry at "
            f"{cfg.tracking.uri}: run `train` (or `retrain`) first"
        )
    return found


def history(cfg: MlopsConfig, mlflow: MlflowClient | None = None) -> list[str]:
    """Champion versions, oldest first; the last one is the current champion."""
    mlflow = mlflow or client(cfg)
    with registry_errors(cfg, "read the champion history"):
        tags = mlflow.get_registered_model(cfg.registry.model_name).tags
    return [v for v in tags.get(HISTORY_TAG, "").split(",") if v]


def set_history(cfg: MlopsConfig, versions: list[str], mlflow: MlflowClient | None = None) -> None:
    mlflow = mlflow or client(cfg)
    with registry_errors(cfg, "write the champion history"):
        mlflow.set_registered_model_tag(cfg.registry.model_name, HISTORY_TAG, ",".join(versions))


@contextmanager
def fetched(cfg: MlopsConfig, version: ModelVersion) -> Iterator[Path]:
    """The version's whole bundle in a temporary directory, checksum verified."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as scratch:
        with registry_errors(cfg, f"download version {version.version}"):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=scratch, tracking_uri=cfg.tracking.uri
            )
        bundle = Path(local)
        missing = [name for name in BUNDLE_FILES if not (bundle / name).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"registry version {version.version} lacks {', '.join(missing)}: "
                "it was not registered by this project's `train`"
            )
        metadata = artifacts.load_metadata(bundle)
        if model_store.sha256_file(bundle / artifacts.ONNX_FILE) != metadata.onnx_sha256:
            raise ModelNotFoundError(
                f"registry version {version.version}: model.onnx does not match its metadata"
            )
        yield bundle


def list_versions(cfg: MlopsConfig) -> list[dict[str, Any]]:
    """Every registered version, newest first, with its aliases and main tags."""
    mlflow = client(cfg)
    name = cfg.registry.model_name
    with registry_errors(cfg, "list versions"):
        if not _exists(mlflow, name):
            return []
        versions = mlflow.search_model_versions(f"name = '{name}'")
        aliases = mlflow.get_registered_model(name).aliases  # alias -> version
    rows = []
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = found.tags
        rows.append(
            {
                "version": str(found.version),
                "aliases": sorted(a for a, v in aliases.items() if str(v) == str(found.version)),
                "model_version": tags.get("model_version", ""),
                "metric": tags.get(f"test_{cfg.registry_metric}", ""),
                "decision": tags.get("promote.decision", ""),
            }
        )
    return rows
