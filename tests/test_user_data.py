"""Bring your own data: a project pointed at the user's own database (with a table named
`customers`, like the sample's), files or image folder by config and SQL only runs every make
target that can run here, its own tests and the commands of its generated CI, and that data is
byte-for-byte unchanged afterwards. The tabular walk-through is docs/bring-your-own-data.md's.

The sample is built only by `make data`, only at data.sample.url / data.sample.root, and
`make clean` removes only what the project generated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    DL_PACKAGE,
    TEMPLATE_ROOT,
    free_port,
    live_service,
    package_of,
    post_json,
    project_env,
    render,
    run,
    update_config,
)
from httpcheck import NotReadyError, wait_ready

pytestmark = pytest.mark.slow

BYOD_PAGE = TEMPLATE_ROOT / "docs" / "bring-your-own-data.md"

# The MLOps targets that read the data source (after validate, train, evaluate, predict).
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


def doc_blocks() -> dict[str, str]:
    """The titled code blocks of docs/bring-your-own-data.md: ``title -> text``. The walk-through
    below uses them as they are, so the page cannot drift from what works."""
    text = BYOD_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```', text, flags=re.MULTILINE | re.DOTALL)
    return dict(blocks)


def clinic_project(
    tmp_path: Path, python: Path, project_type: str, source: str
) -> tuple[Path, dict[str, str], str, dict[str, Any]]:
    """docs/bring-your-own-data.md's first steps, as written: render, write the clinic data
    (a SQLite database with a table of the user's named `customers`, and the same tables as
    Parquet + CSV files), the two SQL files and the `data:` block for ``source``; then
    `make profile WRITE=1` and the leak it flags added to data.leaky_columns. Returns the
    project, its environment, profile's output and the features it wrote."""
    blocks = doc_blocks()
    # The classical project with a random forest: its generated suite runs only here (the
    # sample-config suites in test_project.py cover the other estimators).
    answers = {"project_type": project_type, "ci": "github"}
    if project_type == "classical" and source == "database":
        answers["model"] = "random_forest"
    project = render(tmp_path / "clinic", answers)
    env = project_env(project)
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"  # `python` in CI lines
    (project / "make_clinic_data.py").write_text(blocks["make_clinic_data.py"], encoding="utf-8")
    run([str(python), "make_clinic_data.py"], cwd=project, env=env)
    for name in ("sql/training_set.sql", "sql/scoring_set.sql"):
        (project / name).write_text(blocks[name], encoding="utf-8")
    data_block = yaml.safe_load(
        blocks[f"data: {'a database' if source == 'database' else 'files'}"]
    )
    update_config(project, python, "data", data_block["data"])
    profiled = run(["make", "profile", "WRITE=1", f"PYTHON={python}"], cwd=project, env=env)
    config = yaml.safe_load((project / "configs" / "config.yaml").read_text(encoding="utf-8"))
    update_config(project, python, "data", {"leaky_columns": ["surgery_scheduled"]})
    return project, env, profiled.stdout, config["features"]


def assert_clinic_features(profiled: str, features: dict[str, Any]) -> None:
    assert "surgery_scheduled: likely leak" in profiled, "profile flags the leak"
    assert len(features["numeric"]) == 30, "the 30 measurements are proposed"
    assert "surgery_scheduled" not in str(features), "the leak is not proposed as a feature"
    [referral] = features["categorical"]
    assert referral["name"] == "referral", referral
    assert referral["categories"] == ["gp", "screening", "specialist"], "every observed one"
    assert referral["nullable"], "referral is not always recorded"


@pytest.mark.parametrize("project_type", ["classical", "mlops"])
def test_own_database_walkthrough_runs_every_target_and_leaves_it_unchanged(
    tmp_path: Path, project_python: Path, project_type: str
) -> None:
    """The database walk-through: then every make target a user runs, the service with a
    request, the generated tests (all of them for MLOps, the fast ones for classical) and the
    generated CI's commands. The user's database and
    files are byte-for-byte unchanged, and `make clean` leaves them alone."""
    project, env, profiled, features = clinic_project(
        tmp_path, project_python, project_type, "database"
    )
    package = package_of(project)
    before = fingerprint(project / "data")

    validated = run(["make", "validate", f"PYTHON={project_python}"], cwd=project, env=env)
    targets = ["train", "evaluate", "predict"] + (MLOPS_TARGETS if project_type == "mlops" else [])
    for target in targets:
        make(project, project_python, target, env)
    with live_service(project_python, project, package, env) as base:
        with urllib.request.urlopen(f"{base}/metadata", timeout=30) as response:
            example = json.loads(response.read())["input_example"]
        answer = post_json(f"{base}/predict", example)
    # The whole generated suite on the user's database once, in the MLOps project (a superset
    # of the classical suite); the classical project runs the tests that train nothing.
    make(project, project_python, "test" if project_type == "mlops" else "test-fast", env)
    run_ci_commands(project, package, env)
    predictions = (project / "reports" / "predictions.csv").read_text().splitlines()
    make(project, project_python, "clean", env)

    assert_clinic_features(profiled, features)
    assert "data OK: 569 rows" in validated.stdout, "validate reads all of the user's rows"
    assert "not used" not in validated.stdout, "every column is accounted for"
    names = [f["name"] for f in features["numeric"] + features["categorical"]]
    assert sorted(example) == sorted(names), "the API takes the proposed features"
    assert answer["prediction"] in (0, 1), answer
    assert len(predictions) == 569 + 1, "make predict scores every patient"
    assert fingerprint(project / "data") == before, "the user's files are byte-for-byte unchanged"
    with sqlite3.connect(f"file:{project / 'data' / 'clinic.db'}?mode=ro", uri=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert tables == {"patients", "diagnoses", "customers"}, "no table added or removed"
    assert not (project / "models").exists(), "clean removes what the project generated"


@pytest.mark.parametrize("project_type", ["classical", "mlops"])
def test_own_files_walkthrough_trains_scores_and_leaves_them_unchanged(
    tmp_path: Path, project_python: Path, project_type: str
) -> None:
    """The files walk-through (Parquet + CSV through DuckDB, the same SQL): profile, validate,
    train, batch-score a glob of Parquet files directly, the generated fast tests (their data
    comes from the config; the whole suite runs in the database walk-through), and a glob
    that matches nothing: one error line, nothing published. The files are unchanged."""
    project, env, profiled, features = clinic_project(
        tmp_path, project_python, project_type, "files"
    )
    package = package_of(project)
    before = fingerprint(project / "data")

    validated = run(["make", "validate", f"PYTHON={project_python}"], cwd=project, env=env)
    make(project, project_python, "train", env)
    run(
        ["make", "predict", "INPUT=data/clinic/patients/*.parquet", f"PYTHON={project_python}"],
        cwd=project,
        env=env,
    )
    make(project, project_python, "test-fast", env)
    published = sorted(p.name for p in (project / "models").iterdir())
    update_config(
        project,
        project_python,
        "data",
        {"tables": {"patients": "data/none/*.parquet", "diagnoses": "data/clinic/diagnoses.csv"}},
    )
    failed = run([str(project_python), "-m", package, "train"], cwd=project, env=env, check=False)
    predictions = (project / "reports" / "predictions.csv").read_text().splitlines()

    assert_clinic_features(profiled, features)
    assert "data OK: 569 rows" in validated.stdout, "validate reads every row of every file"
    assert len(predictions) == 569 + 1, "a glob of Parquet files scored directly"
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 1, failed.stderr
    assert len(errors) == 1, failed.stderr
    assert "data.tables.patients: no files match data/none/*.parquet" in errors[0]
    assert sorted(p.name for p in (project / "models").iterdir()) == published, "none published"
    assert fingerprint(project / "data") == before, "the user's files are byte-for-byte unchanged"


DL_CLASSES = ("Fox", "barn owl", "hedge-hog")  # sorted, as the pipeline lists them
DL_IMAGES_PER_CLASS = 40
# The user's photos, written with the project's own NumPy and Pillow: per class 39 RGB PNGs of
# 64x64 and one JPEG of another size, each class with a colour cast of its own and a bright
# patch somewhere.
DL_USER_IMAGES = """
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, per_class = Path(sys.argv[1]), int(sys.argv[2])
for index, name in enumerate(sys.argv[3:]):
    (root / name).mkdir(parents=True)
    rng = np.random.default_rng(index)
    for number in range(per_class):
        jpeg = number == 0
        height, width = (72, 96) if jpeg else (64, 64)
        pixels = rng.normal(0.3, 0.1, (height, width, 3))
        pixels[:, :, index] += 0.4
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        pixels[top : top + height // 3, left : left + width // 3] += 0.3
        image = Image.fromarray(np.uint8(np.clip(pixels, 0, 1) * 255))
        image.save(root / name / f"IMG_{number:04d}.{'jpg' if jpeg else 'png'}")
"""


def dl_write_user_images(python: Path, root: Path) -> None:
    """The user's image folder: ``DL_CLASSES``, ``DL_IMAGES_PER_CLASS`` photos each, and a file
    of theirs that is not an image."""
    script = [str(python), "-c", DL_USER_IMAGES, str(root), str(DL_IMAGES_PER_CLASS)]
    run([*script, *DL_CLASSES], cwd=root.parent)
    (root / "NOTES.md").write_text("photos from the field trip, 2026-11\n", encoding="utf-8")


@contextmanager
def dl_make_serve(project: Path, python: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """`make serve` on a free port until ``/ready`` is 200; yields the base URL. make and the
    service run in a session of their own, stopped together (SIGTERM to that group)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            ["make", "serve", f"PYTHON={python}", f"PORT={port}"],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            wait_ready(f"{base}/ready", server, timeout=90)
        except NotReadyError as error:
            pytest.fail(f"`make serve`: {error}:\n{log.read_text()[-3000:]}")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def dl_upload(url: str, image: Path) -> dict[str, Any]:
    """POST ``image`` as the multipart field ``file``; the JSON answer."""
    boundary = "copier-ml-upload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def test_user_image_folder_survives_every_make_target_and_ci_command(
    tmp_path: Path, dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str]
) -> None:
    """A deep-learning project pointed at the user's own photos by config only (data.root, a
    64x64 RGB input, three classes that are not digits, a JPEG of another size among PNGs):
    every make target, `make test` (the generated suite on this config), the generated CI's
    commands and `make serve` with a real upload work; a missing or empty data root is one
    error line and publishes nothing; the user's files are byte-for-byte unchanged."""
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
    env["PATH"] = f"{dl_python.parent}{os.pathsep}{env['PATH']}"  # `python` in CI lines
    mine = project / "data" / "photos"
    dl_write_user_images(dl_python, mine)
    set_config(project, "data", {"root": "data/photos", "image_size": "64", "channels": "3"})
    before = fingerprint(mine)
    n_images = len(DL_CLASSES) * DL_IMAGES_PER_CLASS

    outputs = {}
    for target in DL_TARGETS:
        outputs[target] = run(["make", target, f"PYTHON={dl_python}"], cwd=project, env=env).stdout
    tested = run(["make", "test", f"PYTHON={dl_python}"], cwd=project, env=env, timeout=900)
    run_ci_commands(project, DL_PACKAGE, env)
    models = project / "models"
    version = (models / "LATEST").read_text().strip()
    metadata = json.loads((models / version / "metadata.json").read_text())
    with dl_make_serve(project, dl_python, env, tmp_path / "serve.log") as base:
        photo = mine / DL_CLASSES[1] / "IMG_0000.jpg"
        answer = dl_upload(f"{base}/predict/image", photo)
    published = fingerprint(models)
    split_before = (project / "data" / "splits" / "manifest.csv").read_bytes()
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    refusals = {
        root: run(
            ["make", "train", f"PYTHON={dl_python}"],
            cwd=project,
            env={**env, f"{DL_PACKAGE.upper()}_DATA__ROOT": str(root)},
            check=False,
        )
        for root in (project / "data" / "missing", tmp_path / "empty")
    }
    unchanged_models = fingerprint(models) == published
    split_after = (project / "data" / "splits" / "manifest.csv").read_bytes()
    with (project / "reports" / "predictions.csv").open(encoding="utf-8", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    make(project, dl_python, "clean", env)

    validated = f"data OK: {n_images} images in 3 classes"
    assert validated in outputs["validate"], f"validate reads the user's folder: {outputs}"
    assert metadata["classes"] == list(DL_CLASSES), "the classes are the user's folder names"
    assert (metadata["image_size"], metadata["channels"]) == (64, 3), "the configured shape"
    assert len(predictions) == n_images, "make predict scores the user's folder by default"
    right = sum(row["path"].split("/")[0] == row["prediction"] for row in predictions)
    assert right >= 0.9 * n_images, f"the model learned the user's classes: {right}/{n_images}"
    # pytest's last line (make may add "Leaving directory" lines when run from make, as in CI)
    summary = next((line for line in reversed(tested.stdout.splitlines()) if " passed" in line), "")
    assert " passed" in summary, f"make test runs the generated suite: {summary}"
    assert "failed" not in summary, f"and it passes on the user's config: {summary}"
    assert answer["prediction"] in DL_CLASSES, f"the service classifies an upload: {answer}"
    assert answer["model_version"] == metadata["version"], "with the published model"
    for root, refused in refusals.items():
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode != 0, f"{root}: a non-zero exit"
        assert len(errors) == 1, f"{root}: one error line: {refused.stderr}"
        assert str(root) in errors[0], f"the error names the folder: {errors[0]}"
    assert unchanged_models, "a refused training publishes nothing"
    assert split_after == split_before, "nor rewrites the split manifest"
    assert fingerprint(mine) == before, "the user's images are byte-for-byte unchanged"
    split = (project / "data" / "splits" / "manifest.csv").read_text().splitlines()
    assert len(split) == n_images + 1, "the sample's split was replaced by one of the user's folder"
    assert sorted(p.name for p in (project / "data").iterdir()) == ["photos", "splits"], (
        "clean removes the sample and nothing of the user's"
    )
