"""The deep-learning project type: rendered, installed (torch first, as its Makefile does),
linted, type-checked, its own test suite, its pipeline (data -> validate -> train -> evaluate
-> batch predict), its API, and a short `make bench`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DL_PACKAGE, free_port, fuzz, live_service, project_env, run
from httpcheck import http, wait_ready

pytestmark = pytest.mark.slow


def test_dl_pipeline_publishes_model_and_reports(
    dl_project: Path, dl_pipeline: dict[str, str]
) -> None:
    version = (dl_project / "models" / "LATEST").read_text().strip()
    metadata = json.loads((dl_project / "models" / version / "metadata.json").read_text())
    metrics = json.loads((dl_project / "reports" / "metrics.json").read_text())
    assert metadata["classes"] == [str(digit) for digit in range(10)]
    assert metadata["onnx_parity"]["passed"] is True
    assert metrics["test"]["accuracy"] >= 0.9
    assert (dl_project / "models" / version / "model.onnx").stat().st_size > 1000
    predictions = (dl_project / "reports" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 1797 + 1, "one row per sample image plus the header"


def test_dl_generated_test_suite_passes(dl_project: Path, dl_python: Path) -> None:
    start = time.perf_counter()
    result = run(
        [str(dl_python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=dl_project,
        env=project_env(dl_project, installed=True),
    )
    summary = result.stdout.splitlines()[-1]
    print(f"\n[deep_learning] generated tests: {time.perf_counter() - start:.1f}s; {summary}")
    assert " passed" in result.stdout
    assert " failed" not in result.stdout


def test_dl_api_serves_trained_model(
    dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(dl_python), "-m", f"{DL_PACKAGE}.serving", "--port", str(port)],
        cwd=dl_project,
        env=project_env(dl_project, installed=True),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"{base}/ready", server)
        _, metadata = http("GET", f"{base}/metadata")
        status, prediction = http("POST", f"{base}/predict", metadata["input_example"])
        assert status == 200
        assert prediction["prediction"] in metadata["classes"]
        assert prediction["model_version"] == metadata["model_version"]
        status, error = http("POST", f"{base}/predict", {"pixels": [[0.5] * 3]})
        assert status == 422
        assert "pixels" in error["detail"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def test_dl_bench_runs_and_writes_report(
    dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str]
) -> None:
    """`make bench`, briefly: it runs end to end and writes its JSON (timings not asserted)."""
    result = run(
        ["make", "bench", f"PYTHON={dl_python}", "BENCH_ARGS=--seconds 2"],
        cwd=dl_project,
        env=project_env(dl_project, installed=True),
    )
    report = json.loads((dl_project / "reports" / "bench.json").read_text())
    print(f"\n[deep_learning bench, 2 s runs]\n{result.stdout}")
    assert report["cold_start_s"] > 0


def test_dl_fuzz_service_finds_no_issue(
    dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str], tmp_path: Path
) -> None:
    env = project_env(dl_project, installed=True)
    settings = dl_project / "tests" / "schemathesis.toml"

    with live_service(dl_python, dl_project, DL_PACKAGE, env) as base:
        cases = fuzz(dl_python, base, tmp_path, settings)

    print(f"\n[deep_learning] schemathesis: {cases}")


def test_dl_two_node_torchrun_trains_like_one_node(
    dl_project: Path, dl_python: Path, dl_pipeline: dict[str, str], tmp_path: Path
) -> None:
    """The multi-node command of docs/scaling-out.md, as two "nodes" on this machine: two
    torchrun launchers (one process each) meeting at a c10d rendezvous on 127.0.0.1. Global rank
    0 alone publishes, and training is the same as two processes on one node."""
    config = tmp_path / "config.yaml"
    text = (dl_project / "configs" / "config.yaml").read_text(encoding="utf-8")
    short = {"epochs:": "  epochs: 2", "min_val_accuracy:": "  min_val_accuracy: 0.0"}
    lines = [
        next((new for key, new in short.items() if line.strip().startswith(key)), line)
        for line in text.splitlines()
    ]
    runs = tmp_path / "runs"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**project_env(dl_project, installed=True), "OMP_NUM_THREADS": "1"}
    # Each "node" keeps its own models/, reports/, checkpoints/ and MLflow store: only rank 0's
    # must be written.
    for node in ("node0", "node1", "single"):
        (runs / node).mkdir(parents=True)
        (runs / node / "data").symlink_to(dl_project / "data")
    launch = [str(dl_python), "-m", "torch.distributed.run"]
    train = ["-m", DL_PACKAGE, "train", "--config", str(config)]
    rendezvous = [
        "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=two-node-check",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [*launch, *rendezvous, *train],
            cwd=runs / node,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in ("node0", "node1")
    ]
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.communicate()
    single = run(
        [*launch, "--standalone", "--nproc_per_node=2", *train], cwd=runs / "single", env=env
    )

    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    published = [
        node for node in ("node0", "node1") if (runs / node / "models" / "LATEST").is_file()
    ]
    assert len(published) == 1, f"global rank 0 alone publishes: {published}"
    epochs = [line for _, err in outputs for line in err.splitlines() if "epoch 2/2" in line]
    assert len(epochs) == 1, "rank 0 alone logs progress"
    same = [line for line in single.stderr.splitlines() if "epoch 2/2" in line]
    assert epochs[0].split(": ", 1)[1] == same[0].split(": ", 1)[1], (
        "two nodes of one process train exactly as one node of two processes"
    )
