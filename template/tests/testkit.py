"""Helpers the tests of every project type share (plain functions, no fixtures): config
dictionaries, running the command line hermetically, snapshots of folders, free ports."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (nested mappings merge, rest replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    """Write a config dictionary as the YAML file the command line reads."""
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its content, to prove nothing changed."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def package_of(project_root: Path) -> str:
    """The project's import name: the package under ``src/`` that runs with ``python -m``."""
    return next(
        p.name for p in sorted((project_root / "src").iterdir()) if (p / "__main__.py").is_file()
    )


def hermetic_env(project_root: Path) -> dict[str, str]:
    """No config overrides from the developer's shell (``<PACKAGE>_*``, MLflow's URI); the
    package importable from ``src/``."""
    prefix = f"{package_of(project_root).upper()}_"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(prefix) and name != "MLFLOW_TRACKING_URI"
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(project_root / "src"), os.environ.get("PYTHONPATH")])
    )
    return env


def run_cli(
    *args: str,
    cwd: Path,
    project_root: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m <package> <args>`` in ``cwd``, hermetic (see ``hermetic_env``) apart from
    the variables in ``env``."""
    return subprocess.run(
        [sys.executable, "-m", package_of(project_root), *args],
        cwd=cwd,
        env={**hermetic_env(project_root), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
