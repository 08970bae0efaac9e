"""Questions: invalid answers are refused with their messages; derived defaults work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TEMPLATE_ROOT, render


def copier_cli(dst: Path, *answers: str) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable,
        "-m",
        "copier",
        "copy",
        "--defaults",
        "--skip-tasks",
        "--vcs-ref",
        "HEAD",
    ]
    for answer in answers:
        args += ["--data", answer]
    return subprocess.run(
        [*args, str(TEMPLATE_ROOT), str(dst)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("package_name=1churn", "is not a valid package name"),
        ("package_name=Churn-Model", "is not a valid package name"),
        ("package_name=class", "is a Python keyword"),
        ("package_name=json", "would shadow the 'json' module"),
        ("package_name=sklearn", "would shadow the 'sklearn' module"),
        ("package_name=pandas", "would shadow the 'pandas' module"),
        ("author_email=not-an-email", "is not a valid e-mail address"),
        ("author_email=a@b", "is not a valid e-mail address"),
        ("copyright_year=next year", "copyright_year must look like"),
        ("model=catboost", "catboost"),
        ("task=ranking", "ranking"),
        ("task=regression & model=logistic_regression", "logistic_regression is a classifier"),
        ("task=multiclass_classification & model=ridge", "ridge is a regressor"),
    ],
)
def test_copy_invalid_answer_is_refused_with_message(
    tmp_path: Path, answer: str, message: str
) -> None:
    result = copier_cli(tmp_path / "out", *answer.split(" & "))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "out" / "pyproject.toml").exists(), "nothing is rendered"


def test_copy_task_answer_sets_task_target_model_and_gate(tmp_path: Path) -> None:
    project = render(tmp_path / "p", {"task": "multiclass_classification"})
    config = yaml.safe_load((project / "configs" / "config.yaml").read_text())
    assert config["task"] == "multiclass_classification"
    assert config["data"]["target"] == "outcome"
    assert config["model"]["name"] == "logistic_regression", "the task's default estimator"
    assert config["training"]["gate"]["metric"] == "f1_macro"
    assert {"churned", "revenue_next_quarter"} <= set(config["data"]["leaky_columns"])


@pytest.mark.parametrize(
    ("task", "model"),
    [("binary_classification", "lightgbm"), ("regression", "xgboost")],
)
def test_copy_boosted_model_answer_sets_config_and_readme(
    tmp_path: Path, task: str, model: str
) -> None:
    project = render(tmp_path / "p", {"task": task, "model": model})
    config = yaml.safe_load((project / "configs" / "config.yaml").read_text())
    model_choice = (project / "README.md").read_text().split("## Model choice")[1]
    assert config["model"]["name"] == model
    assert config["model"]["params"] == {}, "the shipped defaults (model.DEFAULT_PARAMS)"
    library = {"lightgbm": "LightGBM", "xgboost": "XGBoost"}[model]
    assert model_choice.startswith(f"\n\n**{library}**"), "the README explains the choice"


def test_copy_derives_package_name_from_project_name(tmp_path: Path) -> None:
    project = render(tmp_path / "p", {"project_name": "2024 Demand Forecast!"})
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["package_name"] == "p_2024_demand_forecast"
    assert (project / "src" / "p_2024_demand_forecast" / "cli.py").is_file()


def test_copy_cli_with_defaults_renders(tmp_path: Path) -> None:
    result = copier_cli(tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "src" / "customer_churn" / "train.py").is_file()
    assert "make train" in result.stdout + result.stderr, "next steps are printed"


@pytest.mark.parametrize(
    ("project_type", "sample"),
    [("classical", "sample warehouse"), ("deep_learning", "sample images")],
)
def test_copy_with_tasks_prints_next_steps_once_for_the_project_type(
    tmp_path: Path, project_type: str, sample: str
) -> None:
    """`copier copy --trust` runs the post-copy task (git init) and prints the next steps:
    once, and about the sample this project type builds."""
    command = [sys.executable, "-m", "copier", "copy", "--defaults", "--trust", "--vcs-ref", "HEAD"]
    command += ["--data", f"project_type={project_type}", str(TEMPLATE_ROOT), str(tmp_path / "p")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("make train") == 1, output
    assert sample in output
    assert "git repository initialised" in output


def test_copy_deep_learning_from_checkout_without_symlinks_is_refused(tmp_path: Path) -> None:
    """A clone made with core.symlinks=false holds the shared files' link targets as text: the
    deep-learning answer is refused with the fix instead of rendering broken modules."""
    # The working tree as git writes it with core.symlinks=false: each link a text file
    # holding its target.
    clone = tmp_path / "template"
    ignore = shutil.ignore_patterns(".git", ".venv", "site", "build", "__pycache__")
    shutil.copytree(TEMPLATE_ROOT, clone, symlinks=True, ignore=ignore)
    for link in [path for path in clone.rglob("*") if path.is_symlink()]:
        target = str(link.readlink())
        link.unlink()
        link.write_text(target)
    command = [sys.executable, "-m", "copier", "copy", "--defaults", "--skip-tasks"]
    command += ["--data", "project_type=deep_learning", str(clone), str(tmp_path / "p")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "without symlink support" in result.stdout + result.stderr
    assert not (tmp_path / "p" / "src").exists()
