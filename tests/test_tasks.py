"""Every task on a dataset bundled with scikit-learn, as a user with that data would do it.

Each case renders a classical project with the task's copier answers, writes the dataset to a
SQLite database of the user's (string class labels where the task has classes), points the
config at it (SQL, `data:` keys, `make profile WRITE=1`), trains, serves it and runs the
project's own tests (`make test` where no other test runs that task's whole suite); the
database is byte-for-byte unchanged afterwards. Across the
cases and the variants of test_project.py every estimator of every task trains at least once.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import live_service, package_of, post_json, project_env, render, run, update_config
from httpcheck import http

pytestmark = pytest.mark.slow

# Writes the dataset as the user's table `records` (id `record_id`) to data/own.db.
DATASET_SCRIPT = textwrap.dedent(
    """
    import json, os, re, sqlite3, sys
    from sklearn import datasets

    name, target = sys.argv[1], sys.argv[2]
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: re.sub(r"[^0-9a-z]+", "_", c.lower()).strip("_"))
    values = frame.pop("target")
    if name != "diabetes":  # class names, as the user's table spells them
        values = values.map(dict(enumerate(bunch.target_names)))
    frame.insert(0, "record_id", range(1, len(frame) + 1))
    frame[target] = values
    os.makedirs("data", exist_ok=True)
    with sqlite3.connect("data/own.db") as connection:
        frame.to_sql("records", connection, index=False)
    labels = [] if name == "diabetes" else [str(label) for label in bunch.target_names]
    print(json.dumps({"columns": [c for c in frame.columns if c != target], "labels": labels}))
    """
)

CASES: dict[str, dict[str, Any]] = {
    "binary-breast_cancer-hist_gradient_boosting": {
        "answers": {"task": "binary_classification", "model": "hist_gradient_boosting"},
        "dataset": "breast_cancer",
        "target": "diagnosis",
        "data": {"positive_class": "malignant"},
        "metric": ("roc_auc", 0.95),
        "also": "logistic_regression",
        # The binary and regression suites also run on the sample's config (test_project.py).
        "suite": "test-fast",
    },
    "multiclass-wine-logistic_regression": {
        "answers": {"task": "multiclass_classification", "model": "logistic_regression"},
        "dataset": "wine",
        "target": "cultivar",
        "data": {},
        "metric": ("f1_macro", 0.85),
        "also": "hist_gradient_boosting",
        "suite": "test",
    },
    "regression-diabetes-ridge": {
        "answers": {"task": "regression", "model": "ridge"},
        "dataset": "diabetes",
        "target": "progression",
        "data": {},
        "metric": ("r2", 0.3),
        "also": "random_forest",
        "suite": "test-fast",
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", CASES)
def test_task_on_bundled_dataset_trains_serves_and_passes_its_tests(
    tmp_path: Path, project_python: Path, case: str
) -> None:
    spec = CASES[case]
    project = render(tmp_path / case, spec["answers"])
    package = package_of(project)
    env = project_env(project)
    python = str(project_python)
    written = json.loads(
        run([python, "-c", DATASET_SCRIPT, spec["dataset"], spec["target"]], cwd=project, env=env)
        .stdout.strip()
        .splitlines()[-1]
    )
    (project / "sql" / "training_set.sql").write_text("SELECT * FROM records\n")
    scoring = f"SELECT {', '.join(written['columns'])} FROM records\n"
    (project / "sql" / "scoring_set.sql").write_text(scoring)
    update_config(
        project,
        project_python,
        "data",
        {
            "url": "sqlite:///data/own.db",
            "id_column": "record_id",
            "target": spec["target"],
            "leaky_columns": [],
            **spec["data"],
        },
    )
    database = project / "data" / "own.db"
    before = _sha256(database)

    make = ["make", f"PYTHON={python}"]
    run([*make, "profile", "WRITE=1"], cwd=project, env=env)
    trained = run([*make, "train"], cwd=project, env=env).stdout
    run([*make, "predict"], cwd=project, env=env)

    version = (project / "models" / "LATEST").read_text().strip()
    metadata = json.loads((project / "models" / version / "metadata.json").read_text())
    task = spec["answers"]["task"]
    metric, floor = spec["metric"]
    assert metadata["task"] == task
    assert metadata["metrics"][metric] >= floor, (metric, metadata["metrics"])
    assert metadata["metrics"][metric] > metadata["baseline_metrics"][metric], "beats baseline"
    assert metadata["onnx_parity"]["passed"] is True
    assert metadata["onnx_parity"]["max_scaled_diff"] <= 1e-5
    assert metadata["onnx_parity"]["label_flips"] == 0
    assert f"{metric} " in trained, trained
    assert "(baseline " in trained, "the summary shows the baseline"
    header = (project / "reports" / "predictions.csv").read_text().splitlines()[0]
    if task == "regression":
        assert metadata["classes"] is None
        assert header == "record_id,prediction,model_version"
    else:
        assert sorted(metadata["classes"]) == sorted(written["labels"]), "the table's labels"
        if task == "binary_classification":
            assert metadata["positive_class"] == "malignant"
            assert header == "record_id,prediction,probability,model_version"
        else:
            probabilities = ",".join(f"probability_{label}" for label in metadata["classes"])
            assert header == f"record_id,prediction,{probabilities},model_version"

    with live_service(project_python, project, package, env) as base:
        example = metadata["input_example"]
        answer = post_json(f"{base}/predict", example)
        batch = post_json(f"{base}/predict/batch", {"records": [example, example]})
        status, served = http("GET", f"{base}/metadata")
    assert status == 200
    assert served["task"] == task
    assert answer["model_version"] == version
    for batched in batch["predictions"]:  # ONNX Runtime picks kernels by batch size: ~1e-9
        if task == "regression":
            assert batched["prediction"] == pytest.approx(answer["prediction"], rel=1e-6)
        else:
            assert batched["prediction"] == answer["prediction"]
        assert batched.get("probability") == pytest.approx(answer.get("probability"), abs=1e-6)
        assert batched.get("probabilities") == pytest.approx(answer.get("probabilities"), abs=1e-6)
    if task == "regression":
        assert set(answer) == {"prediction", "model_version"}
    elif task == "binary_classification":
        assert answer["prediction"] in metadata["classes"]
        assert 0.0 <= answer["probability"] <= 1.0
    else:
        assert answer["prediction"] in metadata["classes"]
        assert list(answer["probabilities"]) == metadata["classes"]

    if task == "multiclass_classification":  # binary and regression: test_project.py
        run([*make, "bench", "BENCH_ARGS=--seconds 1 --memory-rows 500 5000"], cwd=project, env=env)
        bench = json.loads((project / "reports" / "bench.json").read_text())
        assert bench["in_process_rows_per_s"] > 0
        if "predict" in bench:
            assert bench["predict"]["non_2xx"] == 0, "every benchmarked request succeeded"

    if spec["also"]:  # another estimator for the same task: a config change
        update_config(project, project_python, "model", {"name": spec["also"], "params": {}})
        again = run([*make, "train"], cwd=project, env=env).stdout
        assert spec["also"] in again

    result = run([*make, spec["suite"]], cwd=project, env=env, timeout=900)
    assert " passed" in result.stdout, result.stdout[-2000:]
    assert " failed" not in result.stdout, result.stdout[-2000:]
    assert _sha256(database) == before, "the user's database is never written"
