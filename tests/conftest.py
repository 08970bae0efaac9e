"""Shared fixtures for the template tests.

Rendering is cheap; installing dependencies and training are not. So:

- ``project_python`` builds ONE fresh virtualenv per session by installing the default rendered
  project from its own ``uv.lock`` (``uv sync --locked``, as ``make install`` and the image do),
  exactly as a user would. That is the fresh-environment smoke test, and every rendered
  variant then runs with that interpreter (``PYTHONPATH=src`` puts the variant's own package first).
- ``rendered`` renders each variant of ``RUN_VARIANTS`` once per session.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import copier
import pytest

from httpcheck import NotReadyError, wait_ready

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]

# Variants that are rendered AND run (pipeline, tests, API). Together they cover every
# classical `model`, every `ci`, every non-default Python and most licenses; the independent
# answers are cycled instead of multiplied. Each task also runs on a dataset bundled with
# scikit-learn in test_tasks.py.
RUN_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "random_forest-gitlab-apache-py312": {
        "project_name": "Fraud Risk",
        "model": "random_forest",
        "ci": "gitlab",
        "license": "Apache-2.0",
        "python_version": "3.12",
    },
    "regression-hist_gradient_boosting-noci-proprietary-py313": {
        "project_name": "Revenue Forecast",
        "package_name": "revenue_forecast_ml",
        "task": "regression",
        "model": "hist_gradient_boosting",
        "ci": "none",
        "license": "Proprietary",
        "python_version": "3.13",
        "author_name": "Data Team",
        "author_email": "data-team@corp.example",
    },
}
# Rendered and linted only: answers whose effect is limited to text files. The default
# deep-learning project is run end to end in test_deep_learning.py.
RENDER_ONLY_VARIANTS: dict[str, dict[str, Any]] = {
    "bsd-github-py311": {"project_name": "Upsell", "license": "BSD-3-Clause"},
    "deep_learning": {"project_type": "deep_learning"},
    "deep_learning-gpu-gitlab-apache-py312": {
        "project_type": "deep_learning",
        "project_name": "Defect Inspector",
        "gpu": True,
        "ci": "gitlab",
        "license": "Apache-2.0",
        "python_version": "3.12",
    },
    # The default MLOps project is run end to end in test_mlops.py.
    "mlops": {"project_type": "mlops"},
    "mlops-lightgbm-gitlab-apache-py313": {
        "project_type": "mlops",
        "project_name": "Credit Risk Ops",
        "model": "lightgbm",
        "ci": "gitlab",
        "license": "Apache-2.0",
        "python_version": "3.13",
    },
}
ALL_VARIANTS = {**RUN_VARIANTS, **RENDER_ONLY_VARIANTS}
# One project per type: `make format` and `pre-commit run --all-files` (ruff check, ruff
# format, mypy) run on these in test_checks.py; every other variant gets the same lint and
# type check once, in test_render.py. No variant is linted twice.
FORMAT_VARIANTS = ["defaults", "mlops", "deep_learning"]


# With pytest-xdist (`make test` runs two workers, --dist loadgroup), a module's tests stay on
# one worker, so its module- and session-scoped renders, venvs and pipeline runs are built
# once; the modules below are collections of independent end-to-end tests instead, spread one
# by one. Tests that share the deep-learning pipeline run together wherever they live.
INDEPENDENT_MODULES = {"test_user_data", "test_tasks"}
DL_GROUP = "deep_learning"


PROJECT_TYPES = ("classical", "deep_learning", "mlops")
DL_FIXTURES = {"dl_project", "dl_python", "dl_pipeline"}
# Fixtures that install a project's dependencies (minutes on a cold cache), or need them.
INSTALL_FIXTURES = {"project_python", "pipelines", *DL_FIXTURES}


def project_type_of(item: pytest.Item) -> str:
    """The project type a test exercises: from its module, its fixtures or its parameters
    (``test_x[mlops-...]``); classical when nothing says otherwise."""
    module = item.module.__name__ if item.module is not None else ""
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = " ".join(map(str, callspec.params.values())) if callspec else ""
    words = f"{item.name} {params}"
    if module == "test_deep_learning" or fixtures & DL_FIXTURES or "deep_learning" in words:
        return "deep_learning"
    if module == "test_mlops" or "mlops" in words:
        return "mlops"
    return "classical"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # `-m deep_learning` (or classical, mlops) selects one project type's tests; the
        # template's own CI runs one job per type that way. `-m "not slow"` leaves out every
        # test that installs a project's dependencies, not only the ones marked by hand.
        project_type = project_type_of(item)
        item.add_marker(getattr(pytest.mark, project_type))
        if INSTALL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("xdist_group"):
            continue
        module = item.module.__name__ if item.module is not None else ""
        # The container tests build the deep-learning image too.
        deep_learning = module in ("test_deep_learning", "test_container")
        if deep_learning or "dl_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(DL_GROUP))
        elif module not in INDEPENDENT_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


def render(dst: Path, answers: dict[str, Any], *, trust: bool = False) -> Path:
    """Render the working tree of the template into ``dst`` (tasks only with ``trust``)."""
    copier.run_copy(
        str(TEMPLATE_ROOT),
        dst,
        data=answers,
        defaults=True,
        unsafe=trust,
        skip_tasks=not trust,
        vcs_ref="HEAD",  # HEAD plus uncommitted changes: test what is in the working tree
        quiet=True,
    )
    return dst


def run(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (unless ``check`` is false), fail the test with its output."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def copy_working_tree(destination: Path) -> None:
    """The template as git sees it (tracked and untracked-but-not-ignored files), links kept:
    what a release made from this working tree would hold."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=TEMPLATE_ROOT,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = TEMPLATE_ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A variant of ``ALL_VARIANTS`` rendered for static checks only, on first use (the
    session's renders also run pipelines, which add data, models and reports)."""
    root = tmp_path_factory.mktemp("fresh")
    projects: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in projects:
            projects[variant] = render(root / variant, ALL_VARIANTS[variant])
        return projects[variant]

    return get


def project_env(project: Path, *, installed: bool = False) -> dict[str, str]:
    """Environment for running a rendered project's commands with the shared interpreter.

    ``installed``: the project is the one installed in that interpreter (the default one), so
    it runs exactly as installed; other variants put their own ``src`` first on PYTHONPATH.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLFLOW_"))}
    if not installed:
        env["PYTHONPATH"] = str(project / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def default_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default project, rendered with tasks (git init + first commit), as `--trust` does."""
    return render(tmp_path_factory.mktemp("trusted") / "customer-churn", {}, trust=True)


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """A directory built by ``build`` once per test run: with pytest-xdist, the workers share
    it (the first builds it under a file lock, the others wait and reuse it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    target = root / name
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            (target / ".complete").touch()
    return target


def uv_sync(project: Path, env_dir: Path, *args: str, compile_bytecode: bool = False) -> None:
    """``uv sync --locked`` of ``project`` into ``env_dir``: fails when its uv.lock does not
    match its pyproject.toml. The project is installed as a package, not in editable mode.
    ``compile_bytecode``: for an environment that runs many processes (see below)."""
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(env_dir),
        "UV_PYTHON_DOWNLOADS": "never",  # the machine's own interpreters only
        "VIRTUAL_ENV": "",
    }
    command = [str(UV), "sync", "--locked", "--no-editable", "--quiet", *args]
    if compile_bytecode:
        # As pip does: the projects' commands run with PYTHONDONTWRITEBYTECODE, so without .pyc
        # files every process would compile MLflow, pandas and scikit-learn again (measured:
        # the suite took 33 minutes instead of 20).
        command.append("--compile-bytecode")
    run(command, cwd=project, env=env, timeout=1200)


# uv from the template's own environment (its dev group), else the one on PATH.
_UV_BESIDE = Path(sys.executable).with_name("uv")
UV = _UV_BESIDE if _UV_BESIDE.exists() else Path(shutil.which("uv") or "uv")


@pytest.fixture(scope="session")
def project_python(tmp_path_factory: pytest.TempPathFactory, default_project: Path) -> Path:
    """A new virtualenv with the default project installed from its uv.lock (one for the whole
    run: test workers share it)."""

    def build(directory: Path) -> None:
        # The interpreter running the tests (PYTHON_BIN picks it), as the venv module did.
        extras = ["--extra", "pipeline", "--extra", "postgres", "--extra", "spark"]
        python = ["--python", sys.executable]
        uv_sync(default_project, directory / "venv", *python, *extras, compile_bytecode=True)

    return built_once(tmp_path_factory, "project-venv", build) / "venv" / "bin" / "python"


@pytest.fixture(scope="session")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, default_project: Path
) -> Iterator[dict[str, Path]]:
    """Every variant rendered once (``--skip-tasks``; the default one with tasks)."""
    root = tmp_path_factory.mktemp("rendered")
    projects = {"defaults": default_project}
    for name, answers in ALL_VARIANTS.items():
        if name != "defaults":
            projects[name] = render(root / name, answers)
    yield projects
    shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class PipelineRun:
    project: Path
    package: str
    outputs: dict[str, str]
    seconds: dict[str, float]


def update_config(project: Path, python: Path, section: str, values: dict[str, Any]) -> None:
    """Set keys of one section of configs/config.yaml as a user would in an editor: the other
    keys and every comment stay (round trip through ruamel.yaml, a project dependency)."""
    script = (
        "import json, sys\n"
        "from ruamel.yaml import YAML\n"
        "yaml = YAML()\n"
        "path = 'configs/config.yaml'\n"
        "with open(path, encoding='utf-8') as f: doc = yaml.load(f)\n"
        "doc[sys.argv[1]].update(json.loads(sys.argv[2]))\n"
        "with open(path, 'w', encoding='utf-8') as f: yaml.dump(doc, f)\n"
    )
    run([str(python), "-c", script, section, json.dumps(values)], cwd=project)


def post_json(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def package_of(project: Path) -> str:
    return next(p.name for p in (project / "src").iterdir() if (p / "cli.py").is_file())


@pytest.fixture(scope="session")
def pipelines(rendered: dict[str, Path], project_python: Path) -> Pipelines:
    """data -> validate -> train -> evaluate -> predict of a variant, timed: run on first use,
    once per session (per test worker), so a worker that needs one variant runs only that."""
    return Pipelines(rendered, project_python)


class Pipelines:
    """``pipelines[variant]``: the variant's pipeline run, run when first asked for."""

    STEPS: ClassVar[dict[str, list[str]]] = {
        "data": ["data"],
        "validate": ["validate"],
        "train": ["train"],
        "evaluate": ["evaluate"],
        "predict": ["predict", "--input", "sql", "--output", "reports/predictions.csv"],
    }

    def __init__(self, rendered: dict[str, Path], python: Path) -> None:
        self._rendered = rendered
        self._python = python
        self._runs: dict[str, PipelineRun] = {}

    def __getitem__(self, variant: str) -> PipelineRun:
        if variant not in self._runs:
            self._runs[variant] = self._run(variant)
        return self._runs[variant]

    def _run(self, variant: str) -> PipelineRun:
        project = self._rendered[variant]
        package = package_of(project)
        outputs, seconds = {}, {}
        for step, args in self.STEPS.items():
            start = time.perf_counter()
            result = run(
                [str(self._python), "-m", package, *args],
                cwd=project,
                env=project_env(project, installed=variant == "defaults"),
            )
            seconds[step] = time.perf_counter() - start
            outputs[step] = result.stdout
        rounded = {step: round(value, 1) for step, value in seconds.items()}
        print(f"\n[{variant}] pipeline seconds: {json.dumps(rounded)}")
        return PipelineRun(project, package, outputs, seconds)


# The CPU build of torch that this machine provides locally; elsewhere set e.g.
# COPIER_ML_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH_SPEC = os.environ.get("COPIER_ML_TORCH_SPEC", "torch==2.13.0")
DL_PACKAGE = "digit_classifier"


@pytest.fixture(scope="session")
def dl_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(
        tmp_path_factory.mktemp("dl") / "digit-classifier",
        {"project_type": "deep_learning"},
        trust=True,
    )


@pytest.fixture(scope="session")
def dl_python(tmp_path_factory: pytest.TempPathFactory, dl_project: Path) -> Path:
    """A new virtualenv: torch first (the build you choose), then the project from its uv.lock
    (one for the whole run: test workers share it)."""

    def build(directory: Path) -> None:
        # torch is not in the lock (its CPU and CUDA builds share a version, not an index): pip
        # installs the chosen build first, then uv the locked rest, keeping torch (--inexact).
        env_dir = directory / "venv"
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        run([*pip, *TORCH_SPEC.split()], cwd=dl_project, timeout=1200)
        uv_sync(dl_project, env_dir, "--inexact", "--extra", "pipeline", compile_bytecode=True)

    return built_once(tmp_path_factory, "dl-venv", build) / "venv" / "bin" / "python"


@pytest.fixture(scope="session")
def dl_pipeline(dl_project: Path, dl_python: Path) -> dict[str, str]:
    """data -> validate -> train -> evaluate -> predict once, timed; the outputs by step."""
    outputs = {}
    steps = {
        "data": ["data"],
        "validate": ["validate"],
        "train": ["train"],
        "evaluate": ["evaluate"],
        "predict": ["predict", "--output", "reports/predictions.csv"],
    }
    seconds = {}
    for step, args in steps.items():
        start = time.perf_counter()
        result = run(
            [str(dl_python), "-m", DL_PACKAGE, *args],
            cwd=dl_project,
            env=project_env(dl_project, installed=True),
        )
        seconds[step] = round(time.perf_counter() - start, 1)
        outputs[step] = result.stdout
    print(f"\n[deep_learning] pipeline seconds: {json.dumps(seconds)}")
    return outputs


# Per project type: long enough for every route to get hundreds of cases (the generated
# projects' own schemathesis test runs a shorter budget).
FUZZ_SECONDS = 20


@contextmanager
def live_service(
    python: Path, project: Path, package: str, env: dict[str, str], timeout: float = 90
) -> Iterator[str]:
    """``python -m <package>.serving`` on a free port of 127.0.0.1 until ``/ready`` is 200;
    stopped by its PID afterwards. Yields the base URL. The log goes to a file (an unread pipe
    would fill up and stall the server)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="copier-ml-service-") as folder:
        log = Path(folder) / "service.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [str(python), "-m", f"{package}.serving", "--port", str(port)],
                cwd=project,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            try:
                wait_ready(f"{base}/ready", server, timeout=timeout)
            except NotReadyError as error:
                pytest.fail(f"{error}:\n{log.read_text()[-3000:]}")
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def fuzz(python: Path, base: str, cwd: Path, settings: Path | None = None) -> str:
    """Schemathesis against ``base``: every check, the examples, coverage and fuzzing phases,
    ``FUZZ_SECONDS`` at most, with the project's ``settings`` file if it has one. Fails the
    test on any failed check; returns the count of cases."""
    command = [str(python), "-m", "schemathesis.cli"]
    command += ["--config-file", str(settings)] if settings else []
    command += ["run", "--no-color", "--seed", "1"]
    command += ["--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "500"]
    command += ["--max-time", str(FUZZ_SECONDS), "--request-timeout", "10"]
    result = run([*command, f"{base}/openapi.json"], cwd=cwd, check=False, timeout=FUZZ_SECONDS * 6)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    return next(line.strip() for line in result.stdout.splitlines() if " generated" in line)
