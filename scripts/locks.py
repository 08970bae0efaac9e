"""Make or check the uv.lock that every rendered project ships with.

A project's lock depends on its project type (its dependencies) and its Python version (its
`requires-python`); nothing else in the answers changes it. Each combination's lock lives in
``includes/locks/<project_type>-py<python_version>.uv.lock``, made under a placeholder project
name that ``uv.lock.jinja`` replaces with the project's own.

    python scripts/locks.py            # relock what changed (keeps every pin that still fits)
    python scripts/locks.py --upgrade  # move every package to its newest allowed release
    python scripts/locks.py --check    # exit 1 if a lock no longer matches its pyproject.toml

Each run renders the working tree of the template (uncommitted changes included) with
``copier`` and runs ``uv lock`` in the render, so the locks always follow the pyproject
templates. ``make locks`` runs the first form; the template's tests run the check.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import copier

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "includes" / "locks"
PROJECT_TYPES = ("classical", "mlops", "deep_learning")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
# The project name the locks are made under; uv.lock.jinja swaps in the real one.
PLACEHOLDER_PACKAGE = "copier_ml_lock_placeholder"


def lock_path(project_type: str, python_version: str) -> Path:
    """Where the lock of one project type and Python version is kept."""
    return LOCKS / f"{project_type}-py{python_version}.uv.lock"


def render(dst: Path, project_type: str, python_version: str, package: str) -> Path:
    """Render the template's working tree for one combination (no tasks, no git)."""
    copier.run_copy(
        str(ROOT),
        dst,
        data={
            "project_type": project_type,
            "python_version": python_version,
            "package_name": package,
        },
        defaults=True,
        skip_tasks=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    return dst


def interpreter(python_version: str) -> str:
    """A Python of that version for uv to lock with: ``pythonX.Y`` on PATH, else a pyenv
    install. uv downloads none (``UV_PYTHON_DOWNLOADS=never``), so a missing one is an error
    that names the version rather than a network failure."""
    candidates = [shutil.which(f"python{python_version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(map(str, pyenv_root.glob(f"versions/{python_version}.*/bin/python3")))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "--version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.split()[-1].startswith(f"{python_version}."):
            return candidate
    sys.exit(f"no Python {python_version} found to lock with: install it (pyenv, uv python, apt)")


def uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run uv (the one beside this interpreter, else the one on PATH)."""
    beside = Path(sys.executable).with_name("uv")
    command = str(beside) if beside.exists() else shutil.which("uv")
    if command is None:
        sys.exit("uv is not installed: `make venv` in the template repository installs it")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run(
        [command, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def update(project_type: str, python_version: str, *, upgrade: bool, work: Path) -> str:
    """Relock one combination in a fresh render and store the result; returns a status line."""
    project = render(
        work / f"{project_type}-{python_version}", project_type, python_version, PLACEHOLDER_PACKAGE
    )
    target = lock_path(project_type, python_version)
    if not target.exists():
        # A new combination: uv.lock.jinja rendered an empty file; uv starts from nothing.
        (project / "uv.lock").unlink()
    python = interpreter(python_version)
    result = uv("lock", "--python", python, *(["--upgrade"] if upgrade else []), cwd=project)
    if result.returncode != 0:
        sys.exit(f"uv lock failed for {project_type} / Python {python_version}:\n{result.stderr}")
    new = (project / "uv.lock").read_text(encoding="utf-8")
    old = target.read_text(encoding="utf-8") if target.exists() else None
    if new == old:
        return f"unchanged  {target.relative_to(ROOT)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(new, encoding="utf-8")
    return f"written    {target.relative_to(ROOT)}"


def check(project_type: str, python_version: str, *, work: Path) -> str | None:
    """`uv lock --check` in a render: the problem as text, or None when the lock is current."""
    if not lock_path(project_type, python_version).exists():
        return f"{project_type} / Python {python_version}: no lock (run `make locks`)"
    project = render(
        work / f"{project_type}-{python_version}",
        project_type,
        python_version,
        "lock_check_project",
    )
    result = uv("lock", "--check", "--python", interpreter(python_version), cwd=project)
    if result.returncode != 0:
        return (
            f"{project_type} / Python {python_version}: the lock is stale (run `make locks`)\n"
            f"{result.stderr.strip()}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upgrade", action="store_true", help="newest allowed release of all")
    mode.add_argument("--check", action="store_true", help="fail if a lock is stale")
    args = parser.parse_args(argv)
    combinations = [(t, v) for t in PROJECT_TYPES for v in PYTHON_VERSIONS]
    with tempfile.TemporaryDirectory(prefix="copier-ml-locks-") as tmp:
        work = Path(tmp)
        if args.check:
            problems = [p for t, v in combinations if (p := check(t, v, work=work))]
            for problem in problems:
                print(problem, file=sys.stderr)
            print(f"{len(combinations) - len(problems)} of {len(combinations)} locks current")
            return 1 if problems else 0
        for project_type, python_version in combinations:
            print(update(project_type, python_version, upgrade=args.upgrade, work=work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
