"""The user's data is never written: a project pointed at the user's own database (with a table
named `customers`, like the sample's) or image folder runs every make target that can run here
and the commands of its generated CI, and that data is byte-for-byte unchanged afterwards.

The sample is built only by `make data`, only at data.sample.url / data.sample.root, and
`make clean` removes only what the project generated.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from conftest import DL_PACKAGE, package_of, project_env, render, run

pytestmark = pytest.mark.slow

# Every target of the generated Makefile that opens the data source and runs without a
# container engine, a network download or a long-running server, in the order a user would run
# them; `clean` last. (The test targets run in tests/test_project.py: the generated tests work
# in temporary folders only.)
TABULAR_TARGETS = ["help", "data", "validate", "train", "evaluate", "predict"]
MLOPS_TARGETS = ["registry", "retrain"]  # retrain: extract, validate, train, register, promote
DL_TARGETS = ["help", "data", "validate", "train", "evaluate", "predict"]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def set_config(project: Path, section: str, values: dict[str, str]) -> None:
    """Edit configs/config.yaml the way a user does: change the values, keep the comments."""
    config = project / "configs" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    for key, value in values.items():
        text, count = re.subn(
            rf"^(  {key}: )\S+", rf"\g<1>{value}", text, count=1, flags=re.MULTILINE
        )
        assert count == 1, f"{section}.{key} not found in {config}"
    config.write_text(text, encoding="utf-8")
    assert yaml.safe_load(text)[section] is not None


def ci_commands(project: Path, package: str) -> list[str]:
    """The project commands of the generated GitHub workflows, in order: `python -m <package>`
    lines, and the compose stack's `trainer` runs as the same command outside a container."""
    commands = []
    for workflow_file in sorted((project / ".github" / "workflows").glob("*.yml")):
        workflow = yaml.safe_load(workflow_file.read_text(encoding="utf-8"))
        for job in workflow["jobs"].values():
            for step in job["steps"]:
                for line in str(step.get("run", "")).splitlines():
                    line = line.strip().replace(
                        "docker compose run --rm trainer ", f"python -m {package} "
                    )
                    if line.startswith(f"python -m {package} "):
                        commands.append(line)
    assert any(" train" in command for command in commands), "the CI trains a model"
    return commands


def run_ci_commands(project: Path, package: str, env: dict[str, str]) -> None:
    """Run the CI's project commands here. Building data and training must succeed; the others
    may need what only CI has (monitor: the stack's prediction log), so their status is not
    asserted, only that none of them touched the user's data (the caller checks)."""
    for command in ci_commands(project, package):
        must_pass = any(f" {step}" in command for step in ("data", "train"))
        run(["sh", "-c", command], cwd=project, env=env, timeout=900, check=must_pass)


def make(project: Path, python: Path, target: str, env: dict[str, str]) -> None:
    run(["make", target, f"PYTHON={python}"], cwd=project, env=env, timeout=900)


def user_database(project: Path, python: Path, env: dict[str, str]) -> Path:
    """The user's own SQLite file under data/: their customers, activity and labels (another
    seed and size than the sample), a table of theirs the project knows nothing about, and no
    trace of the sample builder."""
    scratch = project.parent / f"{project.name}-scratch.db"
    package = package_of(project)
    prefix = package.upper()
    overrides = {
        f"{prefix}_DATA__SAMPLE__URL": f"sqlite:///{scratch}",
        f"{prefix}_DATA__SAMPLE__N_CUSTOMERS": "1200",
        f"{prefix}_DATA__SAMPLE__SEED": "3",
    }
    run([str(python), "-m", package, "data"], cwd=project, env={**env, **overrides})
    database = project / "data" / "own.db"
    database.parent.mkdir(exist_ok=True)
    shutil.move(scratch, database)
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE sample_warehouse_tables")
        connection.execute("CREATE TABLE notes (customer_id INTEGER, note TEXT)")
        connection.execute("INSERT INTO notes VALUES (1, 'called twice'), (7, 'VIP')")
    connection.close()
    return database


@pytest.mark.parametrize("project_type", ["classical", "mlops"])
def test_user_database_survives_every_make_target_and_ci_command(
    tmp_path: Path, project_python: Path, project_type: str
) -> None:
    project = render(tmp_path / "own-data", {"project_type": project_type, "ci": "github"})
    package = package_of(project)
    env = project_env(project)
    env["PATH"] = f"{project_python.parent}{os.pathsep}{env['PATH']}"  # `python` in CI lines
    database = user_database(project, project_python, env)
    (project / "data" / "README.txt").write_text("our extract, 2026-11\n", encoding="utf-8")
    # A file of the user's where the sample goes: `make clean` removes the sample, not this.
    (project / "data" / "sample").mkdir()
    (project / "data" / "sample" / "notes.txt").write_text("mine\n", encoding="utf-8")
    set_config(project, "data", {"url": "sqlite:///data/own.db"})
    before = fingerprint(project / "data")

    targets = TABULAR_TARGETS + (MLOPS_TARGETS if project_type == "mlops" else [])
    for target in targets:
        make(project, project_python, target, env)
    validated = run([str(project_python), "-m", package, "validate"], cwd=project, env=env)
    run_ci_commands(project, package, env)
    make(project, project_python, "clean", env)

    assert "1200 rows" in validated.stdout, "training reads the user's database"
    assert fingerprint(project / "data") == before, "the user's files are byte-for-byte unchanged"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert tables == {"customers", "activity", "labels", "notes"}
    assert not (project / "models").exists(), "clean removes what the project generated"


def test_user_image_folder_survives_every_make_target_and_ci_command(
    tmp_path: Path, dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str]
) -> None:
    project = tmp_path / "own-images"
    generated = {"data", "models", "checkpoints", "reports", "mlflow.db", "mlartifacts"}
    shutil.copytree(
        dl_project,
        project,
        ignore=lambda folder, names: [
            n for n in names if Path(folder) == dl_project and n in generated
        ],
    )
    # The user switches from the sample: its split manifest is still there.
    (project / "data" / "splits").mkdir(parents=True)
    shutil.copyfile(
        dl_project / "data" / "splits" / "manifest.csv",
        project / "data" / "splits" / "manifest.csv",
    )
    env = project_env(project)
    env["PATH"] = f"{dl_python.parent}{os.pathsep}{env['PATH']}"
    # The user's images: 40 per class of three classes, their own folder and names, plus a
    # file of theirs that is not an image.
    mine = project / "data" / "photos"
    sample = dl_project / "data" / "sample" / "digits"
    for label, name in (("1", "one"), ("4", "four"), ("7", "seven")):
        (mine / name).mkdir(parents=True)
        for index, image in enumerate(sorted((sample / label).glob("*.png"))[:40]):
            shutil.copyfile(image, mine / name / f"scan-{index:03d}.png")
    (mine / "NOTES.md").write_text("scanned at 300 dpi\n", encoding="utf-8")
    set_config(project, "data", {"root": "data/photos"})
    before = fingerprint(mine)

    for target in DL_TARGETS:
        make(project, dl_python, target, env)
    run_ci_commands(project, DL_PACKAGE, env)
    predictions = (project / "reports" / "predictions.csv").read_text().splitlines()
    make(project, dl_python, "clean", env)

    assert len(predictions) == 3 * 40 + 1, "make predict scores the user's folder by default"
    assert fingerprint(mine) == before, "the user's images are byte-for-byte unchanged"
    split = (project / "data" / "splits" / "manifest.csv").read_text().splitlines()
    assert len(split) == 3 * 40 + 1, "the sample's split was replaced by one of the user's folder"
    assert sorted(p.name for p in (project / "data").iterdir()) == ["photos", "splits"]
