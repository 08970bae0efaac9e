"""Reproducible installs: every rendered project ships a uv.lock that matches its
pyproject.toml and installs with `uv sync --locked` (what `make install`, its CI and its
Dockerfile run). The locks are made by `make locks` (scripts/locks.py)."""

from __future__ import annotations

import pytest

import locks
from conftest import UV, render, run, uv_sync

COMBINATIONS = [(t, v) for t in locks.PROJECT_TYPES for v in locks.PYTHON_VERSIONS]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("project_type", "python_version"), COMBINATIONS, ids=[f"{t}-py{v}" for t, v in COMBINATIONS]
)
def test_rendered_project_installs_from_its_lock(
    tmp_path_factory: pytest.TempPathFactory, project_type: str, python_version: str
) -> None:
    # Given a project of this type and Python version, under a name of its own
    root = tmp_path_factory.mktemp(f"lock-{project_type}-{python_version}")
    answers = {
        "project_type": project_type,
        "python_version": python_version,
        "package_name": "lock_probe",
    }
    project = render(root / "project", answers)
    python = locks.interpreter(python_version)
    # Then its lock is current: uv would not change a line of it
    check = run([str(UV), "lock", "--check", "--python", python], cwd=project, check=False)
    assert check.returncode == 0, f"stale lock, run `make locks`:\n{check.stderr}"
    assert '"lock-probe"' in (project / "uv.lock").read_text(encoding="utf-8")
    # And exactly what it pins installs (torch aside: the deep-learning lock leaves it out)
    extras = ["--extra", "pipeline"]
    if project_type != "deep_learning":
        extras += ["--extra", "postgres"]
    env_dir = root / "venv"
    uv_sync(project, env_dir, "--python", python, *extras)
    # And the service and the command line import from that environment
    modules = "lock_probe.serving.app" if project_type == "deep_learning" else "lock_probe.cli"
    run([str(env_dir / "bin" / "python"), "-c", f"import {modules}"], cwd=root)
