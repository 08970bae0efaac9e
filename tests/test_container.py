"""The rendered Dockerfile really builds and serves: build, run, /ready, a prediction, the
image's own HEALTHCHECK, a non-root user. Skipped, with the reason, without an engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Pipelines, free_port, run
from httpcheck import http, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.container]

# Where ../shared/container/build-and-smoke.sh keeps podman's config on machines without Docker.
PODMAN_ENV_FILE = Path(os.environ.get("COPIER_ML_PODMAN_ENV", "/tmp/container/podman.env"))


def find_engine() -> tuple[str, dict[str, str]] | str:
    """(engine, env) for a working docker or podman, or the reason there is none."""
    env = dict(os.environ)
    docker_info = ["docker", "info"]
    if shutil.which("docker") and subprocess.run(docker_info, capture_output=True).returncode == 0:
        return "docker", env
    if not shutil.which("podman"):
        return "no container engine: docker has no running daemon and podman is not installed"
    if PODMAN_ENV_FILE.is_file():
        for line in PODMAN_ENV_FILE.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key and value:
                env[key.strip()] = value.strip().strip("'\"")
    probe = subprocess.run(
        ["podman", "image", "exists", "docker.io/library/python:3.11-slim"],
        env=env,
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "podman has no python:3.11-slim base image (run .ci/run, which prepares it)"
    return "podman", env


def trained_project(request: pytest.FixtureRequest, project_type: str) -> Path:
    """The default project of ``project_type``, with a trained model to bake into the image."""
    if project_type == "deep_learning":
        request.getfixturevalue("dl_pipeline")
        project: Path = request.getfixturevalue("dl_project")
        return project
    pipelines: Pipelines = request.getfixturevalue("pipelines")
    return pipelines["defaults"].project


@pytest.mark.parametrize("project_type", ["classical", "deep_learning"])
def test_container_builds_and_serves(request: pytest.FixtureRequest, project_type: str) -> None:
    engine = find_engine()
    if isinstance(engine, str):
        pytest.skip(engine)
    cli, env = engine
    project = trained_project(request, project_type)
    tag = f"localhost/copier-ml-test-{project_type.replace('_', '-')}:{os.getpid()}"
    build = [cli, "build", "-t", tag, "."]
    if cli == "podman":
        build[2:2] = ["--pull=never", "--format", "docker"]  # local base; keep HEALTHCHECK
    start = time.perf_counter()
    run(build, cwd=project, env=env, timeout=900)
    build_seconds = time.perf_counter() - start
    size = int(
        run([cli, "image", "inspect", "--format", "{{.Size}}", tag], cwd=project, env=env).stdout
    )
    print(
        f"\n[container {project_type}] {cli} build {build_seconds:.0f}s, image {size / 1e6:.0f} MB"
    )

    port = free_port()
    name = f"copier-ml-test-{project_type.replace('_', '-')}-{os.getpid()}"
    run(
        [cli, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", tag],
        cwd=project,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/ready", timeout=90, interval=0.5)
        _, metadata = http("GET", f"{base}/metadata")
        example = metadata["input_example"]
        status, prediction = http("POST", f"{base}/predict", example)
        assert status == 200
        assert prediction["model_version"] == metadata["model_version"]
        uid = run([cli, "exec", name, "id", "-u"], cwd=project, env=env).stdout.strip()
        assert uid != "0", "the service must not run as root"
        if cli == "podman":
            run([cli, "healthcheck", "run", name], cwd=project, env=env)
        health = run(
            [cli, "image", "inspect", "--format", "{{json .Config.Healthcheck}}", tag],
            cwd=project,
            env=env,
        ).stdout
        assert "/ready" in json.dumps(health)
    finally:
        subprocess.run([cli, "rm", "-f", name], env=env, capture_output=True, check=False)
        subprocess.run([cli, "rmi", "-f", tag], env=env, capture_output=True, check=False)
