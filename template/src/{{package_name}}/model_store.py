"""The model store shared by every project type: ``<models_dir>/<version>/`` directories,
each written through a temporary directory and renamed into place, a ``LATEST`` pointer
replaced atomically afterwards (so a failed or interrupted run never changes what is being
served), and each version's ``metadata.json``, validated by the project type's own model.
Pydantic and the standard library only: the service imports it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .atomic import publish_directory, replace_text
from .config_base import PACKAGE
from .errors import ModelIntegrityError, ModelNotFoundError

METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"


def new_version(data_fingerprint: str, now: datetime | None = None) -> str:
    """A sortable, unique-enough version id: UTC timestamp + data fingerprint prefix."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{data_fingerprint[:8]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish(models_dir: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a fresh directory, then move it to ``models_dir/version`` and point
    ``LATEST`` at it. Nothing visible changes unless ``write`` succeeds."""
    # Readable by all: a published model must stay readable by the service's user (a mounted
    # volume, a container running as another uid).
    final = publish_directory(models_dir, version, write, prefix=f".{version}.")
    replace_text(models_dir / LATEST_FILE, version + "\n")
    return final


def resolve_model_dir(models_dir: Path, version: str | None = None) -> Path:
    """The directory of ``version``, or of the version ``LATEST`` points at."""
    if version is None:
        try:
            version = (models_dir / LATEST_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"no trained model in {models_dir}/ (no {LATEST_FILE} file): "
                f"run `python -m {PACKAGE} train` first"
            ) from None
    model_dir = models_dir / version
    if not (model_dir / METADATA_FILE).is_file():
        raise ModelNotFoundError(f"model version '{version}' not found in {models_dir}/")
    return model_dir


def write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def git_commit() -> str | None:
    """The commit a version is trained from, or None outside a git work tree (a container)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def write_metadata(model_dir: Path, metadata: BaseModel) -> None:
    """Write a version's ``metadata.json`` (inside the staging directory of ``publish``)."""
    text = json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n"
    (model_dir / METADATA_FILE).write_text(text, encoding="utf-8")


def load_metadata(model_dir: Path, model: type[BaseModel]) -> BaseModel:
    """Read ``metadata.json`` and validate it with ``model`` (the project type's metadata; the
    result is an instance of it): a damaged file is reported in one line, never half-used."""
    path = model_dir / METADATA_FILE
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path} is missing") from None
    except ValidationError as exc:
        # Locations and messages only: the error's input (the file's bytes) stays out of it.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'file'}: {error['msg']}"
            for error in exc.errors(include_input=False)[:3]
        )
        raise ModelIntegrityError(f"{path} is not valid model metadata ({problems})") from None
