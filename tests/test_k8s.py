"""Kubernetes manifests of every project type (deploy/k8s): `make k8s` renders each overlay, every
object validates against the Kubernetes API schemas offline (kubernetes-validate, strict), and
the manifests agree with the project they deploy: image, port, user, config, shutdown budget.

Fast and static: nothing is installed and no model is trained. Each project's own
tests/test_k8s.py adds what needs the project installed (probe paths against the app's routes,
the InferenceService's pod spec), and runs where the project's tests run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from conftest import package_of

VARIANTS = ["defaults", "mlops", "deep_learning"]
MIN_KUBERNETES = "1.32"  # the oldest release the manifests target (as in the projects' test)
MLOPS_ONLY_DEPLOY_FILES = {"alerts.yml", "postgres-init.sql", "prometheus.yml"}
# preStop + serving.shutdown_timeout_s + this (the MLOps service flushes its prediction log for
# at most 5 s after draining) must fit in terminationGracePeriodSeconds.
APP_SHUTDOWN_S = 5


def missing_renderer() -> str | None:
    if shutil.which("make") is None:
        return "make is not installed"
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        return "make k8s needs kubectl or kustomize on PATH (neither is installed)"
    return None


@pytest.fixture(scope="module", params=VARIANTS)
def project(request: pytest.FixtureRequest, fresh: Callable[[str], Path]) -> Path:
    return fresh(str(request.param))


@pytest.fixture(scope="module")
def manifests(project: Path) -> dict[str, list[dict[str, Any]]]:
    """`make k8s` in the project, as a user runs it: overlay -> its rendered objects."""
    problem = missing_renderer()
    if problem is not None:
        pytest.skip(problem)
    result = subprocess.run(
        ["make", "-s", "k8s"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = project / "build" / "k8s"
    return {
        path.stem: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(out.glob("*.yaml"))
    }


def final_stage(project: Path) -> dict[str, list[str]]:
    """The Dockerfile's last stage: instruction -> arguments (continuation lines joined)."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (project / "Dockerfile").read_text())
    stage = re.split(r"^FROM\s.*$", text, flags=re.MULTILINE)[-1]
    found: dict[str, list[str]] = {}
    for line in stage.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def repository(image: str) -> str:
    head, _, last = image.rpartition("/")
    name = last.split("@")[0].split(":")[0]
    return f"{head}/{name}" if head else name


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def test_make_k8s_writes_one_ignored_file_per_overlay(
    project: Path, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    overlays = {p.parent.name for p in project.glob("deploy/k8s/overlays/*/kustomization.yaml")}
    assert overlays == {"dev", "prod", "kserve"}
    written = {path.name for path in (project / "build" / "k8s").iterdir()}
    assert written == {f"{name}.yaml" for name in overlays}, "one file each, no partial file"
    assert "/build/" in (project / ".gitignore").read_text().splitlines(), "build/ is ignored"


def test_make_k8s_objects_validate_against_kubernetes_schemas(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, docs in manifests.items():
        for doc in docs:
            if doc["apiVersion"].startswith("serving.kserve.io/"):
                continue  # a custom resource: checked below and by the project's own test
            for version in (MIN_KUBERNETES, kubernetes_validate.latest_version()):
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    problem = None
                except kubernetes_validate.ValidationError as error:
                    problem = f"{'.'.join(map(str, error.path))}: {error.message}"
                assert problem is None, f"{overlay} {doc['kind']} on {version}: {problem}"


def test_make_k8s_manifests_match_the_image_and_config(
    project: Path, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    stage = final_stage(project)
    image = re.search(r"^IMAGE \?= (\S+)$", (project / "Makefile").read_text(), re.MULTILINE)
    assert image, "the Makefile names the image"
    config_text = (project / "configs" / "config.yaml").read_text()
    serving = yaml.safe_load(config_text)["serving"]
    port = int(stage["EXPOSE"][-1])
    assert port == serving["port"], "EXPOSE and serving.port agree"
    user = stage["USER"][-1].split(":")[0]
    command = json.loads(stage["CMD"][-1])
    config_dir = PurePosixPath(stage["WORKDIR"][-1], command[command.index("--config") + 1]).parent
    for overlay, docs in manifests.items():
        for workload in (d for d in docs if d["kind"] in ("Deployment", "InferenceService")):
            pod = (
                workload["spec"]["predictor"]
                if workload["kind"] == "InferenceService"
                else workload["spec"]["template"]["spec"]
            )
            (container,) = pod["containers"]
            where = f"{overlay} {workload['kind']}"
            assert repository(container["image"]) == repository(image.group(1)), where
            assert [p["containerPort"] for p in container["ports"]] == [port], where
            context = {**pod.get("securityContext", {}), **container["securityContext"]}
            assert str(context["runAsUser"]) == user, f"{where}: the Dockerfile's USER"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            mount = next(
                m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == config_dir
            )
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            config_map = next(
                d
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
            )
            assert config_map["data"] == {"config.yaml": config_text}, f"{where}: the config"
            if workload["kind"] == "Deployment":
                sleep = container["lifecycle"]["preStop"]["exec"]["command"]
                needed = float(sleep[1]) + serving["shutdown_timeout_s"] + APP_SHUTDOWN_S
                assert pod["terminationGracePeriodSeconds"] >= needed, where
                probes = (container["livenessProbe"], container["readinessProbe"])
                assert [p["httpGet"]["path"] for p in probes] == ["/health", "/ready"], where
                assert container["startupProbe"]["httpGet"]["path"] == "/health", where


def test_make_k8s_prod_autoscales_and_keeps_one_pod_through_drains(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    prod = manifests["prod"]
    autoscaler = the(prod, "HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == the(prod, "Deployment")["metadata"]["name"]
    assert autoscaler["minReplicas"] >= 2
    budget = the(prod, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] < autoscaler["minReplicas"], "a drain can evict one pod"
    dev = manifests["dev"]
    assert the(dev, "Deployment")["spec"]["replicas"] == 1
    assert {d["kind"] for d in dev}.isdisjoint({"HorizontalPodAutoscaler", "PodDisruptionBudget"})


def test_make_k8s_credentials_come_from_secrets_only(
    project: Path, manifests: dict[str, list[dict[str, Any]]]
) -> None:
    prefix = package_of(project).upper()
    mlops = (project / "src" / package_of(project) / "mlops_config.py").exists()
    for overlay, docs in manifests.items():
        assert all(d["kind"] != "Secret" for d in docs), f"{overlay}: no Secret objects"
        for workload in (d for d in docs if d["kind"] in ("Deployment", "InferenceService")):
            spec = workload["spec"]
            pod = spec["predictor"] if "predictor" in spec else spec["template"]["spec"]
            env = pod["containers"][0].get("env", [])
            literal = [e["name"] for e in env if "value" in e]
            assert all(not re.search(r"URL|URI|TOKEN|PASSWORD", n) for n in literal), literal
            from_secret = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            expected = {"MLFLOW_TRACKING_URI", f"{prefix}_PREDICTION_LOG__URL"} if mlops else set()
            assert expected <= from_secret, f"{overlay}: {expected} from a Secret"
            if not mlops:
                assert not from_secret, f"{overlay}: only MLOps services read credentials"


def test_make_k8s_inference_service_speaks_v2_from_the_same_image(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    service = the(manifests["kserve"], "InferenceService")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    (container,) = service["spec"]["predictor"]["containers"]
    # KServe's custom predictor: found by this container name, protocol from PROTOCOL.
    assert container["name"] == "kserve-container"
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    deployment = the(manifests["prod"], "Deployment")
    served = deployment["spec"]["template"]["spec"]["containers"][0]
    assert repository(container["image"]) == repository(served["image"])


def test_make_k8s_deploy_folder_holds_only_its_project_types_files(project: Path) -> None:
    files = {p.name for p in (project / "deploy").iterdir() if p.is_file()}
    mlops = (project / "src" / package_of(project) / "mlops_config.py").exists()
    assert files == (MLOPS_ONLY_DEPLOY_FILES if mlops else set()), files
    assert {p.name for p in (project / "deploy").iterdir() if p.is_dir()} == {"k8s"}


def test_make_k8s_without_kubectl_or_kustomize_fails_with_one_line(
    project: Path, tmp_path: Path
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # A PATH with only what the recipe needs besides the renderer.
    for tool in ("sh", "make", "mkdir", "mv", "rm"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    env = {**os.environ, "PATH": str(tmp_path)}
    out = tmp_path / "out"
    result = subprocess.run(
        ["make", "-s", "k8s", f"K8S_DIR={out}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: make k8s needs kubectl"), result.stderr
    assert "kustomize" in first, "names both ways to get a renderer"
    assert not out.exists(), "nothing written"
