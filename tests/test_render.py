"""Rendering: the exact file set, no leftover Jinja, lint-clean output, answers recorded."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ALL_VARIANTS, FORMAT_VARIANTS, TEMPLATE_ROOT, project_env, render, run

# Package modules every project type has (several are one shared file, see the symlink test).
SHARED_PACKAGE_FILES = [
    "__init__.py",
    "__main__.py",
    "artifacts.py",
    "atomic.py",
    "cli.py",
    "config.py",
    "config_base.py",
    "data/__init__.py",
    "data/sample.py",
    "data/validate.py",
    "errors.py",
    "errortext.py",
    "evaluate.py",
    "logging_config.py",
    "mlflow_experiment.py",
    "model.py",
    "model_store.py",
    "ortsession.py",
    "predict.py",
    "serving/__init__.py",
    "serving/__main__.py",
    "serving/app.py",
    "serving/core.py",
    "serving/observability.py",
    "serving/oip.py",
    "serving/runtime.py",
    "serving/schemas.py",
    "serving/server.py",
    "tracking.py",
    "train.py",
]
CLASSICAL_PACKAGE_FILES = [
    "data/coerce.py",
    "data/extract.py",
    "data/profile.py",
    "data/synthetic.py",
    "dburl.py",
    "error_analysis.py",
    "explain.py",
    "explain_report.py",
    "features.py",
    "inputs.py",
    "leaderboard.py",
    "onnx_export.py",
    "outputs.py",
    "records.py",
    "scoring.py",
    "sklearn_scoring.py",
    "spark_scoring.py",
    "tasks/__init__.py",
    "tasks/base.py",
    "tasks/binary.py",
    "tasks/labels.py",
    "tasks/multiclass.py",
    "tasks/regression.py",
    "tune.py",
]
PACKAGE_FILES_BY_TYPE = {
    "classical": CLASSICAL_PACKAGE_FILES,
    "mlops": [
        *CLASSICAL_PACKAGE_FILES,
        "lifecycle/__init__.py",
        "lifecycle/cli.py",
        "lifecycle/drift.py",
        "lifecycle/monitor_data.py",
        "lifecycle/monitor_render.py",
        "lifecycle/monitor_report.py",
        "lifecycle/monitoring.py",
        "lifecycle/promotion.py",
        "lifecycle/reference.py",
        "lifecycle/registry.py",
        "lifecycle/retrain.py",
        "lifecycle/shifts.py",
        "lifecycle/simulate.py",
        "mlops_config.py",
        "prediction_store.py",
        "serving/champion.py",
        "serving/drift_gauges.py",
        "serving/mlops.py",
        "serving/prediction_log.py",
        "serving/warning_throttle.py",
    ],
    "deep_learning": [
        "checkpoints.py",
        "data/dataset.py",
        "distributed.py",
        "export.py",
        "imaging.py",
        "publish.py",
    ],
}
# Kubernetes manifests (kustomize base and overlays), in every project type.
K8S_FILES = [
    f"deploy/k8s/{name}"
    for name in (
        "base/deployment.yaml",
        "base/kustomization.yaml",
        "base/service.yaml",
        "overlays/dev/kustomization.yaml",
        "overlays/kserve/inferenceservice.yaml",
        "overlays/kserve/kustomization.yaml",
        "overlays/kserve/kustomizeconfig.yaml",
        "overlays/prod/hpa.yaml",
        "overlays/prod/kustomization.yaml",
        "overlays/prod/pdb.yaml",
    )
]
COMMON_FILES = [
    ".copier-answers.yml",
    ".dockerignore",
    ".gitignore",
    ".pre-commit-config.yaml",
    "Dockerfile",
    "Makefile",
    "README.md",
    "benchmarks/__init__.py",
    "benchmarks/bench.py",
    "benchmarks/benchkit.py",
    "compose.yaml",
    "configs/config.yaml",
    "configs/kustomization.yaml",
    *K8S_FILES,
    "pyproject.toml",
    "uv.lock",
]
# Tabular projects: the extraction queries and the Spark scoring benchmark.
TABULAR_FILES = [
    "sql/scoring_set.sql",
    "sql/training_set.sql",
    "benchmarks/bench_spark.py",
    "tests/schemathesis.toml",
]
FILES_BY_TYPE = {
    "classical": TABULAR_FILES,
    "mlops": [
        *TABULAR_FILES,
        "deploy/alerts.yml",
        "deploy/postgres-init.sql",
        "deploy/prometheus.yml",
        "docker/jobs.Dockerfile",
        "docker/mlflow.Dockerfile",
    ],
    "deep_learning": ["tests/schemathesis.toml"],
}
TREE_BY_TYPE = {
    "classical": "template",
    "mlops": "template",
    "deep_learning": "template_deep_learning",
}
# Tests of the MLOps lifecycle: plain names, dropped from classical renders by copier.yml's
# templated _exclude.
MLOPS_ONLY_TESTS = {
    f"test_{name}.py"
    for name in (
        *("lifecycle", "loop", "monitoring", "prediction_log"),
        *("reload", "server", "simulate"),
    )
}
# Jinja expressions, statements and comments (not the "}}" that ends a nested dict).
TEMPLATE_TREES = ["template", "template_deep_learning"]
JINJA_MARKERS = re.compile(r"{{-?\s*[\w'\"(]|{%-?\s|{#")


def expected_files(answers: dict[str, Any]) -> set[str]:
    project_type = answers.get("project_type", "classical")
    package = answers.get("package_name", _default_package(answers))
    modules = SHARED_PACKAGE_FILES + PACKAGE_FILES_BY_TYPE[project_type]
    files = set(COMMON_FILES + FILES_BY_TYPE[project_type])
    files |= {f"src/{package}/{name}" for name in modules}
    tests = (TEMPLATE_ROOT / TREE_BY_TYPE[project_type] / "tests").glob("*.py*")
    for path in tests:
        name = path.name.removesuffix(".jinja")
        if name not in MLOPS_ONLY_TESTS or project_type == "mlops":
            files.add(f"tests/{name}")
    if answers.get("license", "MIT") != "Proprietary":
        files.add("LICENSE")
    ci = answers.get("ci", "github")
    if ci == "github":
        files.add(".github/workflows/ci.yml")
        files.add(".github/workflows/template-drift.yml")
        if project_type == "mlops":
            files.add(".github/workflows/monitor.yml")
    elif ci == "gitlab":
        files.add(".gitlab-ci.yml")
    if answers.get("gpu"):
        files.add("Dockerfile.cuda")
    return files


def _default_package(answers: dict[str, Any]) -> str:
    default_name = {
        "classical": "Customer Churn",
        "deep_learning": "Digit Classifier",
        "mlops": "Churn Platform",
    }
    name = answers.get("project_name", default_name[answers.get("project_type", "classical")])
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def project_files(project: Path) -> set[str]:
    return {
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_render_variant_has_exact_file_set(fresh: Callable[[str], Path], variant: str) -> None:
    assert project_files(fresh(variant)) == expected_files(ALL_VARIANTS[variant])


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_render_variant_has_no_leftover_jinja(fresh: Callable[[str], Path], variant: str) -> None:
    project = fresh(variant)
    leftovers = [
        f"{name}:{number}: {line.strip()}"
        for name in sorted(project_files(project))
        for number, line in enumerate((project / name).read_text().splitlines(), 1)
        if JINJA_MARKERS.search(line) and not _is_legit_brace(name, line)
    ]
    assert leftovers == []


def _is_legit_brace(name: str, line: str) -> bool:
    # GitHub Actions expressions use ${{ }} on purpose.
    return name.startswith(".github/") and "${{" in line


# The variants that test_checks.py does not already lint and type-check through the project's
# own pre-commit hooks: every rendered variant gets exactly one such pass.
LINT_VARIANTS = [variant for variant in ALL_VARIANTS if variant not in FORMAT_VARIANTS]


@pytest.mark.slow
@pytest.mark.parametrize("variant", LINT_VARIANTS)
def test_render_variant_lints_and_type_checks(
    fresh: Callable[[str], Path],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    variant: str,
) -> None:
    """ruff check, ruff format --check and mypy, as `make lint` runs them, with an interpreter
    that has the project type's dependencies."""
    project = fresh(variant)
    deep_learning = ALL_VARIANTS[variant].get("project_type") == "deep_learning"
    python: Path = request.getfixturevalue("dl_python" if deep_learning else "project_python")
    env = project_env(project)
    # One mypy cache per project type: the libraries are analysed once, not per variant.
    cache = tmp_path_factory.getbasetemp() / f"mypy-{'dl' if deep_learning else 'tabular'}"
    env["MYPY_CACHE_DIR"] = str(cache)
    run([str(python), "-m", "ruff", "check", "."], cwd=project, env=env)
    run([str(python), "-m", "ruff", "format", "--check", "."], cwd=project, env=env)
    assert "Success" in run([str(python), "-m", "mypy"], cwd=project, env=env).stdout


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_render_variant_records_answers_for_copier_update(
    rendered: dict[str, Path], variant: str
) -> None:
    answers = yaml.safe_load((rendered[variant] / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(TEMPLATE_ROOT)
    assert answers["_commit"], "copier update needs the template commit"
    for key, value in ALL_VARIANTS[variant].items():
        assert answers[key] == value


def test_render_with_trust_makes_first_commit(default_project: Path) -> None:
    log = subprocess.run(
        ["git", "log", "--oneline"], cwd=default_project, capture_output=True, text=True, check=True
    )
    status = subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=default_project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Initial commit from copier-ml" in log.stdout
    assert status.stdout == "", "the first commit should contain every rendered file"


def test_render_with_skip_tasks_has_no_git_repository(rendered: dict[str, Path]) -> None:
    assert not (rendered["bsd-github-py311"] / ".git").exists()


def test_render_pyproject_follows_answers(rendered: dict[str, Path]) -> None:
    project = rendered["regression-hist_gradient_boosting-noci-proprietary-py313"]
    text = (project / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.13"' in text
    assert 'name = "Data Team", email = "data-team@corp.example"' in text
    assert "license =" not in text, "a proprietary project declares no open-source license"
    config = yaml.safe_load((project / "configs/config.yaml").read_text())
    assert config["model"]["name"] == "hist_gradient_boosting"
    assert config["task"] == "regression"
    assert config["data"]["target"] == "revenue_next_quarter"
    assert config["training"]["gate"]["metric"] == "r2"


def test_template_jinja_suffix_only_on_files_with_jinja() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *TEMPLATE_TREES],
        cwd=TEMPLATE_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    files = [name for name in listed if (TEMPLATE_ROOT / name).is_file()]
    suffixed_without_jinja = [
        name
        for name in files
        if name.endswith(".jinja") and not JINJA_MARKERS.search((TEMPLATE_ROOT / name).read_text())
    ]
    plain_with_jinja = [
        name
        for name in files
        if not name.endswith(".jinja") and JINJA_MARKERS.search((TEMPLATE_ROOT / name).read_text())
    ]
    assert suffixed_without_jinja == []
    assert plain_with_jinja == []


def test_render_twice_is_identical(tmp_path: Path) -> None:
    first = render(tmp_path / "a", {})
    second = render(tmp_path / "b", {})

    def contents(project: Path) -> dict[str, bytes]:
        # _commit differs between renders of a dirty working tree (Copier commits it).
        return {
            name: re.sub(rb"_commit: \S+", b"_commit: X", (project / name).read_bytes())
            for name in project_files(project)
        }

    assert contents(first) == contents(second)


def test_shared_files_of_project_types_are_links_to_one_copy() -> None:
    """Files shared by the project-type trees are symlinks into template/, never stale copies."""
    links = [p for p in (TEMPLATE_ROOT / "template_deep_learning").rglob("*") if p.is_symlink()]
    classical = (TEMPLATE_ROOT / "template").resolve()
    assert links, "the deep-learning tree shares its plumbing with template/"
    for link in links:
        target = link.resolve()
        assert target.is_file(), f"{link} is a dangling link"
        assert target.is_relative_to(classical), f"{link} points outside template/"


def test_render_refuses_copier_older_than_templated_exclude(tmp_path: Path) -> None:
    """Copier before 9.18 reads the templated _exclude block as one pattern and would copy the
    MLOps-only files into classical projects; the template must refuse it, not render wrongly."""
    script = (
        "import sys, copier\n"
        "copier.__version__ = '9.17.0'\n"
        "try:\n"
        f"    copier.run_copy({str(TEMPLATE_ROOT)!r}, {str(tmp_path / 'p')!r}, defaults=True,\n"
        "                    skip_tasks=True, vcs_ref='HEAD', quiet=True)\n"
        "except copier.errors.UnsupportedVersionError as error:\n"
        "    print('refused:', error)\n"
        "    sys.exit(3)\n"
    )
    result = run([sys.executable, "-c", script], tmp_path, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "9.18.0" in result.stdout
    assert not (tmp_path / "p" / "src").exists(), "nothing is rendered by a refused Copier"


def test_template_modules_lint_in_place_without_jinja() -> None:
    """Every Python module of the template trees is plain Python (no Jinja, no `.jinja`
    suffix) and passes the rendered projects' ruff rules before rendering: `make lint`."""
    modules = [
        path
        for tree in TEMPLATE_TREES
        for path in (TEMPLATE_ROOT / tree / "src").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert modules
    assert [p for p in modules if p.suffix != ".py"] == [], "package modules need no Jinja"
    assert [p for p in modules if JINJA_MARKERS.search(p.read_text(encoding="utf-8"))] == []
    result = run(["make", "lint"], cwd=TEMPLATE_ROOT, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("tree", TEMPLATE_TREES)
def test_template_modules_type_check_in_place(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tree: str
) -> None:
    """mypy checks the template's own package files before rendering (through a link with a
    valid package name), with the rendered projects' settings and the project type's
    dependencies: a module that only type-checks once rendered would fail here."""
    deep_learning = tree == "template_deep_learning"
    python: Path = request.getfixturevalue("dl_python" if deep_learning else "project_python")
    root = tmp_path_factory.mktemp(f"in-place-{tree}")
    (root / "src").mkdir()
    package = TEMPLATE_ROOT / tree / "src" / "{{package_name}}"
    (root / "src" / "template_package").symlink_to(package)
    cache = tmp_path_factory.getbasetemp() / f"mypy-{'dl' if deep_learning else 'tabular'}"
    command = [str(python), "-m", "mypy", "--python-version", "3.11", "--ignore-missing-imports"]
    command += ["--no-warn-unused-ignores", "--cache-dir", str(cache), "-p", "template_package"]
    env = {**project_env(root), "MYPYPATH": str(root / "src")}
    result = run(command, cwd=root, env=env, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Success" in result.stdout
