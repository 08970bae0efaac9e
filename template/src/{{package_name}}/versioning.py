"""Versioned artifact directories shared by every project type: ``<models_dir>/<version>/``
written through a temporary directory and renamed into place, and a ``LATEST`` pointer replaced
atomically afterwards, so a failed or interrupted run never changes what is being served.
Standard library only: the service imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError
from .settings import PACKAGE

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
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=models_dir))
    try:
        # mkdtemp makes the directory private (0700); a published model must stay readable by
        # the service's user (a mounted volume, a container running as another uid).
        staging.chmod(0o755)
        write(staging)
        final = models_dir / version
        staging.replace(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _atomic_write_text(models_dir / LATEST_FILE, version + "\n")
    return final


def new_partial_file(target: Path) -> Path:
    """A new, empty, uniquely named file beside ``target`` to write into and then move over it:
    never a file that already exists (a user's ``<name>.partial`` included). Readable by all,
    like the result it becomes (mkstemp files are private)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    partial = Path(name)
    partial.chmod(0o644)
    return partial


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).chmod(0o644)  # mkstemp files are private; the pointer must be readable too
    Path(tmp).replace(path)


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
