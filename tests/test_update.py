"""`copier update` carries template fixes into existing projects, for every project type.

A temporary git copy of this template gets two tagged versions: v0.1.0 is the template as it
was before 0.2.0 (``serving.pinned_version`` still called ``serving.model_version``), v0.2.0 is
the current template plus two template fixes (a docstring in a module every type shares, and
the default port). A project is rendered from v0.1.0, committed, edited the way users edit
(config values, a new module, the README, a generated file), then updated to v0.2.0.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import copy_working_tree, project_env, run

OLD, NEW = "v0.1.0", "v0.2.0"
TREES = ("template", "template_deep_learning")
SHARED_MODULE = "src/{{package_name}}/errors.py"
FIX_FROM = '"""Base class: a problem with the user\'s config, data or artifacts, not a bug."""'
FIX_TO = '"""Base class: a problem with the user\'s config, data or artifacts (not a bug)."""'
GIT_USER = ["-c", "user.name=Test User", "-c", "user.email=test@example.com"]


def git(cwd: Path, *args: str) -> str:
    return run(["git", *GIT_USER, *args], cwd=cwd).stdout


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture(scope="module")
def template_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("template-versions") / "copier-ml"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")

    copy_working_tree(repo)
    # v0.1.0: before the rename that 0.2.0's migration handles.
    for tree in TREES:
        for path in (repo / tree).rglob("*"):
            if path.is_file() and not path.is_symlink():
                text = path.read_text(encoding="utf-8")
                if "pinned_version" in text:
                    path.write_text(text.replace("pinned_version", "model_version"), "utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release 0.1.0")
    git(repo, "tag", OLD)

    copy_working_tree(repo)  # the current template, then two template fixes
    edit(repo / "template" / SHARED_MODULE, FIX_FROM, FIX_TO)
    for tree in TREES:
        edit(repo / tree / "configs" / "config.yaml.jinja", "  port: 8000", "  port: 8080")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release 0.2.0")
    git(repo, "tag", NEW)
    return repo


@dataclass(frozen=True)
class Updated:
    project: Path
    package: str
    result: subprocess.CompletedProcess[str]


def render_old(template: Path, destination: Path, project_type: str) -> tuple[Path, str]:
    run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--trust",
            "--skip-tasks",
            "--defaults",
            "--vcs-ref",
            OLD,
            "-d",
            f"project_type={project_type}",
            str(template),
            str(destination),
        ],
        cwd=destination.parent,
    )
    git(destination, "init", "-q", "-b", "main")
    git(destination, "add", "-A")
    git(destination, "commit", "-q", "-m", "Initial commit")
    package = next(p.name for p in (destination / "src").iterdir() if p.is_dir())
    return destination, package


def update(project: Path) -> subprocess.CompletedProcess[str]:
    # --trust: migrations are tasks; --defaults: keep the recorded answers.
    return run(
        [sys.executable, "-m", "copier", "update", "--trust", "--defaults", "--vcs-ref", NEW],
        cwd=project,
        env={**project_env(project), "GIT_AUTHOR_NAME": "Test User"},
    )


def user_edits(project: Path, package: str) -> None:
    """What users do to a generated project between two template releases."""
    config = project / "configs" / "config.yaml"
    config.write_text(
        re.sub(r"(?m)^  seed: 42$", "  seed: 7", config.read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    (project / "src" / package / "custom_features.py").write_text(
        '"""Our own features."""\n\nRATIO = 0.5\n', encoding="utf-8"
    )
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\n## Team notes\n\nOwned by the data team.\n")
    makefile = project / "Makefile"
    makefile.write_text(makefile.read_text() + "\nnightly: ## Our nightly job\n\techo nightly\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "our changes")


@pytest.fixture(scope="module", params=["classical", "deep_learning", "mlops"])
def updated(
    request: pytest.FixtureRequest,
    template_versions: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Updated:
    project_type: str = request.param
    root = tmp_path_factory.mktemp(f"update-{project_type}")
    project, package = render_old(template_versions, root / "project", project_type)
    user_edits(project, package)
    return Updated(project, package, update(project))


def test_update_template_fixes_arrive(updated: Updated) -> None:
    errors = (updated.project / "src" / updated.package / "errors.py").read_text()
    config = yaml.safe_load((updated.project / "configs" / "config.yaml").read_text())
    answers = yaml.safe_load((updated.project / ".copier-answers.yml").read_text())

    assert FIX_TO in errors
    assert config["serving"]["port"] == 8080
    assert "pinned_version" in config["serving"]
    assert "model_version" not in config["serving"]
    assert answers["_commit"] == NEW


def test_update_user_edits_survive(updated: Updated) -> None:
    project, package = updated.project, updated.package
    config = yaml.safe_load((project / "configs" / "config.yaml").read_text())

    assert config["training"]["seed"] == 7
    assert (project / "src" / package / "custom_features.py").read_text().endswith("0.5\n")
    assert "## Team notes" in (project / "README.md").read_text()
    assert "nightly: ## Our nightly job" in (project / "Makefile").read_text()


def test_update_without_conflicts_loses_nothing(updated: Updated) -> None:
    status = git(updated.project, "status", "--porcelain").splitlines()
    tracked = git(updated.project, "ls-files").splitlines()

    assert not [line for line in status if line[:2].strip() in {"D", "UU", "AA"}]
    assert not [line for line in status if line.endswith(".rej")]
    for name in tracked:
        text = (updated.project / name).read_bytes()
        assert b"<<<<<<< " not in text, f"conflict markers in {name}"


def test_update_true_conflict_is_marked_and_migrated(
    template_versions: Path, tmp_path: Path, project_python: Path
) -> None:
    # Given a project whose serving port and pinned version were changed by the user (the
    # template changes that line block too) and a config the user derived from the shipped one
    project, package = render_old(template_versions, tmp_path / "project", "classical")
    config = project / "configs" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("  port: 8000", "  port: 9000")
    text = re.sub(r"(?m)^  model_version: null", '  model_version: "20260101T000000Z-abc"', text)
    config.write_text(text, encoding="utf-8")
    prod = project / "configs" / "prod.yaml"
    prod.write_text(text.replace("port: 9000", "port: 80"), encoding="utf-8")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "pin a version, production config")

    # When it is updated
    result = update(project)

    # Then the conflict is marked with both sides, the user's values are kept, and the
    # migration renamed the key on the user's side and in the derived config
    merged = config.read_text(encoding="utf-8")
    ours = merged.split("<<<<<<< ")[1].split("=======")[0]
    assert "port: 9000" in ours
    assert 'pinned_version: "20260101T000000Z-abc"' in ours
    assert "model_version" not in merged
    assert "renamed serving.model_version -> serving.pinned_version" in result.stdout
    migrated = yaml.safe_load(prod.read_text(encoding="utf-8"))
    assert migrated["serving"]["pinned_version"] == "20260101T000000Z-abc"
    assert migrated["serving"]["port"] == 80
    check = run(
        [
            str(project_python),
            "-c",
            f"from {package}.config import load_config; "
            "print(load_config('configs/prod.yaml').serving.pinned_version)",
        ],
        cwd=project,
        env=project_env(project),
    )
    assert check.stdout.strip() == "20260101T000000Z-abc"
