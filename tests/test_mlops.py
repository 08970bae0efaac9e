"""The MLOps project type end to end, on a regression project (``task: regression``): lint and
types, the lifecycle through its command line on the embedded store (train -> promote -> serve
-> simulate -> monitor -> retrain -> registry -> rollback), a fuzzed service, the team stack
file, and its container serving the champion from a tracking server. A multiclass project runs
its generated lifecycle tests (registry and gate, reference and drift, prediction log, reload,
simulate).

Binary classification, the default task, is covered elsewhere: the generated MLOps suite of a
binary project (including its loop against a real MLflow tracking server: train, serve,
simulate, monitor, retrain, promote, reload, rollback) runs in tests/test_user_data.py's
database walk-through, and the default MLOps project is rendered and linted in test_render.py.

The projects run with the default project's interpreter (the dependencies are the same) and
their own ``src`` on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import free_port, fuzz, live_service, project_env, render, run
from httpcheck import http, wait_ready

pytestmark = pytest.mark.slow

PACKAGE = "churn_platform"
ENV_PREFIX = PACKAGE.upper()


# The generated tests that exercise what differs by task (the loop and the server tests do not:
# the regression project's command-line loop covers them).
LIFECYCLE_TESTS = [
    "tests/test_lifecycle.py",
    "tests/test_monitoring.py",
    "tests/test_prediction_log.py",
    "tests/test_reload.py",
    "tests/test_simulate.py",
]


@pytest.fixture(scope="session")
def mlops_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLOps project with ``task: regression`` (model: its default, ridge)."""
    return render(
        tmp_path_factory.mktemp("mlops") / "churn-platform",
        {"project_type": "mlops", "task": "regression"},
    )


def stop(process: subprocess.Popen[str]) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started (the
    MLflow server runs worker processes of its own): its process group, found by its PID."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class CliLoop:
    project: Path
    outputs: dict[str, subprocess.CompletedProcess[str]]
    ready: dict


@pytest.fixture(scope="module")
def cli_loop(mlops_project: Path, project_python: Path) -> CliLoop:
    """The README's one-machine demo, command by command, on the embedded stores."""
    env = project_env(mlops_project)
    python = str(project_python)

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([python, "-m", PACKAGE, *args], cwd=mlops_project, env=env, check=check)

    outputs = {"data": cli("data"), "train": cli("train"), "promote": cli("promote")}
    port = free_port()
    server = subprocess.Popen(
        [python, "-m", PACKAGE, "serve", "--port", str(port)],
        cwd=mlops_project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(f"{url}/ready", server, timeout=90)
        outputs["simulate"] = cli("simulate", "--url", url, "--rows", "1000")
        time.sleep(2.5)  # the prediction log flushes every second
        outputs["monitor"] = cli("monitor", check=False)
        outputs["retrain"] = cli("retrain")
        outputs["registry"] = cli("registry")
        outputs["rollback"] = cli("rollback", check=False)
    finally:
        stop(server)
    return CliLoop(mlops_project, outputs, ready)


def test_mlops_train_registers_first_champion(cli_loop: CliLoop) -> None:
    assert "version 1: champion" in cli_loop.outputs["train"].stdout
    assert cli_loop.ready["status"] == "ready"
    promote = cli_loop.outputs["promote"].stdout
    assert "promote: no_challenger" in promote, "nothing to gate before a second version"
    assert "already the champion" in promote


def test_mlops_service_logs_predicted_values(cli_loop: CliLoop) -> None:
    database = cli_loop.project / "logs" / "predictions.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT prediction, score FROM prediction_log").fetchall()
    db.close()

    assert len(rows) >= 1000, "every simulated record is logged"
    values = [json.loads(prediction) for prediction, _ in rows]
    assert all(isinstance(value, float) for value in values), "regression logs numbers"
    assert [score for _, score in rows] == pytest.approx(values), "the score is the value"


def test_mlops_fuzz_service_finds_no_issue(
    cli_loop: CliLoop, project_python: Path, tmp_path: Path
) -> None:
    env = project_env(cli_loop.project)

    with live_service(project_python, cli_loop.project, PACKAGE, env) as base:
        settings = cli_loop.project / "tests" / "schemathesis.toml"
        cases = fuzz(project_python, base, tmp_path, settings)

    print(f"\n[mlops] schemathesis: {cases}")


def test_mlops_simulated_drift_makes_monitor_alert(cli_loop: CliLoop) -> None:
    monitor = cli_loop.outputs["monitor"]
    simulate = cli_loop.outputs["simulate"].stdout

    assert "sent 1000 drifted records" in simulate, simulate
    assert "scored 1000, mean prediction " in simulate, "regression: the mean predicted value"
    assert monitor.returncode == 3, monitor.stdout + monitor.stderr
    assert "drift alert" in monitor.stdout
    assert "prediction: PSI " in monitor.stdout
    assert "mean prediction " in monitor.stdout, monitor.stdout
    reports = sorted((cli_loop.project / "reports" / "monitoring").glob("*/drift.json"))
    assert reports, "monitor wrote no report"
    report = json.loads(reports[-1].read_text())
    assert report["status"] == "alert"
    assert report["rows"] >= 1000
    prediction = report["prediction"]
    assert prediction["task"] == "regression"
    assert prediction["test"] == "ks"
    assert {"reference_mean", "current_mean", "reference_median", "current_median"} <= set(
        prediction
    )
    markdown = (reports[-1].parent / "drift.md").read_text()
    assert "| mean prediction |" in markdown
    assert "PSI of the predicted values" in markdown
    for name in ("drift.md", "drift.html", "prediction.png"):
        assert (reports[-1].parent / name).is_file()


def test_mlops_retrain_goes_through_the_gate(cli_loop: CliLoop) -> None:
    retrain = cli_loop.outputs["retrain"].stdout
    decisions = sorted((cli_loop.project / "reports" / "promotions").glob("*.json"))

    assert "registry version 2" in retrain
    assert "(test r2 " in retrain, "the regression gate metric"
    assert "promote: refused" in retrain  # same data: not better by the margin
    assert "r2: challenger" in retrain, "the gate compares the regression metric"
    assert "does not beat" in retrain
    outcomes = [json.loads(d.read_text())["outcome"] for d in decisions]
    assert outcomes == ["no_challenger", "refused"]


def test_mlops_registry_lists_versions_and_aliases(cli_loop: CliLoop) -> None:
    lines = cli_loop.outputs["registry"].stdout.splitlines()

    assert "r2" in lines[0].split(), "the registry metric of the task"
    assert any(line.split()[0] == "2" and "challenger" in line for line in lines[1:])
    assert any(line.split()[0] == "1" and "champion" in line for line in lines[1:])


def test_mlops_rollback_without_history_is_a_clear_error(cli_loop: CliLoop) -> None:
    rollback = cli_loop.outputs["rollback"]

    assert rollback.returncode == 1
    assert rollback.stderr.startswith("error: no previous champion")
    assert "Traceback" not in rollback.stderr


# The generated MLOps suite runs in tests/test_user_data.py, on a binary project pointed at the
# user's own database (30 numeric features and a nullable categorical one): the suite's data
# follows the config, so that run covers what a run on the sample config would.


def test_mlops_multiclass_lifecycle_tests_pass(
    project_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The generated lifecycle tests of a multiclass project: the class mix in the reference,
    the drift report and the simulate summary, labels in the prediction log."""
    project = render(
        tmp_path_factory.mktemp("mlops-multiclass") / "churn-platform",
        {"project_type": "mlops", "task": "multiclass_classification"},
    )
    env = project_env(project)

    run(
        [str(project_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *LIFECYCLE_TESTS],
        cwd=project,
        env=env,
    )


def test_mlops_compose_stack_is_consistent(mlops_project: Path) -> None:
    compose = yaml.safe_load((mlops_project / "compose.yaml").read_text())
    services = compose["services"]

    assert {"api", "mlflow", "postgres", "prometheus"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            context = mlops_project / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (mlops_project / source).exists(), f"{name} mounts missing {source}"
    api_env = json.dumps(services["api"].get("environment", {}))
    assert "MLFLOW_TRACKING_URI" in api_env
    assert f"{ENV_PREFIX}_PREDICTION_LOG__URL" in api_env
    # `tune` in the stack: the trainer's study lives in the stack's PostgreSQL (its own database).
    trainer_env = json.dumps(services["trainer"]["environment"])
    assert f"{ENV_PREFIX}_TUNING__STORAGE" in trainer_env
    assert "@postgres:5432/optuna" in trainer_env
    assert "CREATE DATABASE optuna" in (mlops_project / "deploy" / "postgres-init.sql").read_text()
    prometheus = yaml.safe_load((mlops_project / "deploy" / "prometheus.yml").read_text())
    targets = json.dumps(prometheus["scrape_configs"])
    assert "api:8000" in targets


@pytest.mark.container
def test_mlops_container_serves_champion_from_tracking_server(
    mlops_project: Path, project_python: Path, tmp_path: Path
) -> None:
    from test_container import find_engine

    engine = find_engine()
    if isinstance(engine, str):
        pytest.skip(engine)
    cli, engine_env = engine
    port = free_port()
    server = subprocess.Popen(
        [
            str(project_python),
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=project_env(mlops_project),
        start_new_session=True,
    )
    tag = f"localhost/copier-ml-test-mlops:{os.getpid()}"
    name = f"copier-ml-test-mlops-{os.getpid()}"
    tracking = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{tracking}/health", server, timeout=90)
        env = {**project_env(mlops_project), "MLFLOW_TRACKING_URI": tracking}
        env[f"{ENV_PREFIX}_PATHS__MODELS_DIR"] = str(tmp_path / "models")
        env[f"{ENV_PREFIX}_PATHS__REPORTS_DIR"] = str(tmp_path / "reports")
        warehouse = f"sqlite:///{tmp_path / 'warehouse.db'}"
        env[f"{ENV_PREFIX}_DATA__URL"] = env[f"{ENV_PREFIX}_DATA__SAMPLE__URL"] = warehouse
        run([str(project_python), "-m", PACKAGE, "data"], cwd=mlops_project, env=env)
        train = run([str(project_python), "-m", PACKAGE, "train"], cwd=mlops_project, env=env)
        assert "champion" in train.stdout
        build = [cli, "build", "-t", tag, "."]
        if cli == "podman":
            build[2:2] = ["--pull=never", "--format", "docker"]
        start = time.perf_counter()
        run(build, cwd=mlops_project, env=engine_env, timeout=900)
        inspect = [cli, "image", "inspect", "--format", "{{.Size}}", tag]
        size = int(run(inspect, cwd=mlops_project, env=engine_env).stdout)
        print(f"\n[container mlops] build {time.perf_counter() - start:.0f}s, {size / 1e6:.0f} MB")
        service_port = free_port()
        run(
            [
                cli,
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "host",
                "-e",
                f"MLFLOW_TRACKING_URI={tracking}",
                "-e",
                f"{ENV_PREFIX}_SERVING__HOST=127.0.0.1",
                "-e",
                f"{ENV_PREFIX}_SERVING__PORT={service_port}",
                "-e",
                f"{ENV_PREFIX}_PREDICTION_LOG__URL=sqlite:////tmp/predictions.db",
                tag,
            ],
            cwd=mlops_project,
            env=engine_env,
        )
        base = f"http://127.0.0.1:{service_port}"
        ready = wait_ready(f"{base}/ready", timeout=90)
        _, metadata = http("GET", f"{base}/metadata")
        status, prediction = http("POST", f"{base}/predict", metadata["input_example"])
        uid = run([cli, "exec", name, "id", "-u"], cwd=mlops_project, env=engine_env).stdout

        assert ready["model_version"] == metadata["model_version"]
        assert status == 200
        assert prediction["model_version"] == metadata["model_version"]
        assert uid.strip() != "0"
    finally:
        subprocess.run([cli, "rm", "-f", name], env=engine_env, capture_output=True, check=False)
        subprocess.run([cli, "rmi", "-f", tag], env=engine_env, capture_output=True, check=False)
        stop(server)
