"""Rendered projects work: their own tests, their pipeline, their API, their type check.

Each variant in RUN_VARIANTS is exercised end to end with the interpreter of the fresh
virtualenv (see conftest.project_python).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import RUN_VARIANTS, Pipelines, free_port, fuzz, live_service, project_env, run
from httpcheck import http, wait_ready

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", RUN_VARIANTS)
def test_pipeline_produces_model_reports_and_predictions(
    pipelines: Pipelines, variant: str
) -> None:
    result = pipelines[variant]
    project = result.project
    version = (project / "models" / "LATEST").read_text().strip()
    metadata = json.loads((project / "models" / version / "metadata.json").read_text())
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert "sample warehouse written" in result.outputs["data"]
    assert result.outputs["validate"].startswith("data OK")
    assert metadata["version"] == version == metrics["version"]
    assert metadata["model_name"] in result.outputs["train"]
    task = metadata["task"]
    assert metrics["task"] == task == RUN_VARIANTS[variant].get("task", "binary_classification")
    metric, bound, plots, header = TASK_EXPECTATIONS[task]
    assert metrics["test"][metric] >= bound, (metric, metrics["test"])
    assert metrics["test"][metric] > metrics["baseline"][metric], "better than the baseline"
    assert "retention_call_made" not in json.dumps(metadata["features"]), "leaky column unused"
    for plot in (*plots, "feature_importance"):
        assert (project / "reports" / f"{plot}.png").stat().st_size > 1000
    predictions = (project / "reports" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == header
    assert len(predictions) == 5000 + 1
    assert (project / "mlflow.db").is_file()


# On the sample: (metric, a floor the default model clears, plots, batch predict's header).
TASK_EXPECTATIONS = {
    "binary_classification": (
        "roc_auc",
        0.65,
        ("roc_curve", "pr_curve", "confusion_matrix", "calibration"),
        "customer_id,prediction,probability,model_version",
    ),
    "regression": (
        "r2",
        0.5,
        ("residuals", "predicted_vs_actual"),
        "customer_id,prediction,model_version",
    ),
}


# The random-forest project's generated suite runs in test_user_data.py instead, on a project
# pointed at the user's own database (the suite's data follows the config, not the sample).
SUITE_VARIANTS = [
    name for name, answers in RUN_VARIANTS.items() if answers.get("model") != "random_forest"
]


# The whole generated suite (Spark included) runs on users' data in test_tasks.py (multiclass)
# and test_user_data.py (MLOps, binary). Here the default project runs it without Spark's tests
# (a JVM and 240k rows through both engines: about a minute), and the regression project the
# tests that train nothing: its generated suite already trains, exports and serves every task
# (tests/test_tasks.py of the project), and test_tasks.py here trains and serves a regression
# project on a dataset of its own.
SUITE_MARKERS = {
    "defaults": "not spark",
    "regression-hist_gradient_boosting-noci-proprietary-py313": "not slow",
}


@pytest.mark.parametrize("variant", SUITE_VARIANTS)
def test_generated_test_suite_passes(
    rendered: dict[str, Path], project_python: Path, variant: str
) -> None:
    project = rendered[variant]
    start = time.perf_counter()
    markers = ["-m", SUITE_MARKERS[variant]] if variant in SUITE_MARKERS else []
    result = run(
        [str(project_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *markers],
        cwd=project,
        env=project_env(project, installed=variant == "defaults"),
    )
    summary = result.stdout.splitlines()[-1]
    print(f"\n[{variant}] generated tests: {time.perf_counter() - start:.1f}s; {summary}")
    assert " passed" in result.stdout
    assert " failed" not in result.stdout


@pytest.mark.parametrize("variant", RUN_VARIANTS)
def test_api_serves_trained_model(pipelines: Pipelines, project_python: Path, variant: str) -> None:
    result = pipelines[variant]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(project_python), "-m", result.package, "serve", "--port", str(port)],
        cwd=result.project,
        env=project_env(result.project, installed=variant == "defaults"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        start = time.perf_counter()
        wait_ready(f"{base}/ready", server)
        print(f"\n[{variant}] process start -> /ready 200: {time.perf_counter() - start:.2f}s")
        status, metadata = http("GET", f"{base}/metadata")
        assert status == 200
        example = metadata["input_example"]
        status, prediction = http("POST", f"{base}/predict", example)
        assert status == 200
        assert prediction["model_version"] == metadata["model_version"]
        if metadata["task"] == "regression":
            assert set(prediction) == {"prediction", "model_version"}
            assert isinstance(prediction["prediction"], float)
        else:
            assert prediction["prediction"] in metadata["classes"]
            assert 0.0 <= prediction["probability"] <= 1.0
        status, error = http("POST", f"{base}/predict", {**example, "tenure_months": "long"})
        assert status == 422
        assert "tenure_months" in error["detail"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output = server.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0].decode()
    assert '"path": "/predict"' in output, "requests are logged as JSON lines"
    assert "Traceback" not in output


def test_fuzz_classical_service_finds_no_issue(
    pipelines: Pipelines, project_python: Path, tmp_path: Path
) -> None:
    result = pipelines["defaults"]
    env = project_env(result.project, installed=True)

    with live_service(project_python, result.project, result.package, env) as base:
        cases = fuzz(project_python, base, tmp_path, result.project / "tests" / "schemathesis.toml")

    print(f"\n[classical] schemathesis: {cases}")


def test_fresh_environment_runs_installed_project(
    default_project: Path, project_python: Path, tmp_path: Path
) -> None:
    """The project installed into a new venv from its own pyproject.toml works without
    PYTHONPATH: the console script exists and the CLI imports its dependencies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    script = project_python.parent / "customer-churn"
    result = run([str(script), "--help"], cwd=tmp_path, env=env)
    for command in ("data", "validate", "train", "evaluate", "predict", "serve"):
        assert command in result.stdout


# A binary and a regression project (multiclass: test_tasks.py); timings are not asserted.
BENCH_VARIANTS = ["defaults", "regression-hist_gradient_boosting-noci-proprietary-py313"]


@pytest.mark.parametrize("variant", BENCH_VARIANTS)
def test_bench_runs_and_writes_report(
    pipelines: Pipelines, project_python: Path, variant: str
) -> None:
    """`make bench`, briefly: it must run end to end and write its JSON (timings not asserted)."""
    project = pipelines[variant].project
    result = run(
        [
            "make",
            "bench",
            f"PYTHON={project_python}",
            "BENCH_ARGS=--seconds 2 --memory-rows 2000 20000",
        ],
        cwd=project,
        env=project_env(project, installed=variant == "defaults"),
    )
    report = json.loads((project / "reports" / "bench.json").read_text())
    print(f"\n[{variant} bench, 2 s runs]\n{result.stdout}")
    assert report["in_process_rows_per_s"] > 0
    assert report["cold_start_s"] > 0
    assert report["serving_rss_mb"] > 0
    assert [run["rows"] for run in report["batch_memory"]] == [2000, 20000]
    if shutil.which("wrk"):
        assert report["predict"]["requests_per_s"] > 0
        assert report["predict"]["non_2xx"] == 0, "every benchmarked request succeeded"
        assert report["batch_non_2xx"] == 0
