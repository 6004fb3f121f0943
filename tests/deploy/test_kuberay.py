"""deploy/kuberay: every overlay renders, its RayJob/RayCluster validate against the vendored KubeRay CRD
schemas (as `kubectl apply` would check them), and the manifests agree with the project: the pinned Ray,
the image tags, an entrypoint the config validator accepts, the control plane's port, the token from a
Secret, monitors that select what the clusters run. No cluster is needed (there is none here)."""

from __future__ import annotations

import copy
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from services.config.overrides import build_config
from services.config.schema import ControlConfig
from services.run.preflight import check_cluster, needs, reward_actor_count

from .render import crd_schema, load_yaml_documents, render, schema_errors

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
OVERLAYS = {"cpu": "default", "gpu": "gpu"}  # overlay -> the preset its RayJob runs
CRDS = {doc["spec"]["names"]["kind"]: doc for name in ("ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml")
        for doc in load_yaml_documents(KUBERAY / "crds" / name)}
RENDERED = {overlay: render(KUBERAY / "overlays" / overlay) for overlay in OVERLAYS}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def cluster_spec(resource: dict[str, Any]) -> dict[str, Any]:
    return resource["spec"]["rayClusterSpec"] if resource["kind"] == "RayJob" else resource["spec"]


def pod_templates(resource: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name or 'head', pod template) of a RayJob's or RayCluster's Ray pods."""
    spec = cluster_spec(resource)
    return [("head", spec["headGroupSpec"]["template"])] + [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for _, template in pod_templates(resource) for c in template["spec"]["containers"]]


def pinned_ray_version() -> str:
    """The Ray release the images are built on: Dockerfile.cpu's default base tag."""
    match = re.search(r"^ARG BASE_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-py311-cpu$", (ROOT / "docker" / "Dockerfile.cpu").read_text(), re.M)
    assert match, "docker/Dockerfile.cpu: ARG BASE_IMAGE=rayproject/ray:<version>-py311-cpu not found"
    return match.group(1)


def test_the_vendored_crds_are_the_upstream_files_with_their_licence_and_source() -> None:
    shared = ROOT.parent / "shared" / "kuberay"
    for name in ("ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml", "podMonitor.yaml", "LICENSE"):
        assert (KUBERAY / "crds" / name).is_file(), name
        if shared.is_dir():  # the reference copy exists on the project's own machines, not necessarily in CI
            assert (KUBERAY / "crds" / name).read_bytes() == (shared / name).read_bytes(), f"{name} differs from upstream"
    note = (KUBERAY / "crds" / "README.md").read_text()
    assert "feeaf72facab4881ba2b179248bb67315634e229" in note and "Apache" in note
    assert set(CRDS) == {"RayJob", "RayCluster"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_resource_is_valid_against_the_crd_schema(overlay: str) -> None:
    ray_resources = [r for r in RENDERED[overlay] if r["apiVersion"] == "ray.io/v1"]
    assert {r["kind"] for r in ray_resources} == {"RayJob", "RayCluster"}
    for resource in ray_resources:
        errors = schema_errors(resource, crd_schema(CRDS[resource["kind"]], "v1"))
        assert errors == [], f"{overlay}: {resource['kind']} {resource['metadata']['name']}:\n" + "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_field_and_a_wrong_type() -> None:
    """The validation above can fail: a typo the API server would silently prune, and a type it would refuse."""
    job = copy.deepcopy(by_kind(RENDERED["cpu"], "RayJob")[0])
    job["spec"]["shutdownAfterJobFinish"] = job["spec"].pop("shutdownAfterJobFinishes")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "one"
    errors = schema_errors(job, crd_schema(CRDS["RayJob"], "v1"))
    assert any(e.startswith("spec.shutdownAfterJobFinish: unknown field") for e in errors), errors
    assert any(e.startswith("spec.rayClusterSpec.workerGroupSpecs.0.replicas:") for e in errors), errors


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_python_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(KUBERAY / "overlays" / overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731 - kustomize orders resources by kind
    assert sorted(yaml.safe_load_all(result.stdout), key=key) == sorted(RENDERED[overlay], key=key)


def test_ray_version_is_the_pinned_ray_everywhere() -> None:
    version = pinned_ray_version()
    ray_requirement = next(Requirement(d) for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray"))
    assert version in ray_requirement.specifier, f"Dockerfile base Ray {version} is outside pyproject's {ray_requirement}"
    assert importlib.metadata.version("ray") in ray_requirement.specifier
    assert f"rayproject/ray:{version}-py311-" in (ROOT / "docker" / "Dockerfile.gpu").read_text()
    for overlay, resources in RENDERED.items():
        for resource in by_kind(resources, "RayJob") + by_kind(resources, "RayCluster"):
            assert cluster_spec(resource)["rayVersion"] == version, f"{overlay}: {resource['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_runs_the_overlays_image_at_the_package_version(overlay: str) -> None:
    expected = f"crlhf:{PYPROJECT['project']['version']}-{overlay}"
    for resource in by_kind(RENDERED[overlay], "RayJob") + by_kind(RENDERED[overlay], "RayCluster"):
        images = {c["image"] for c in containers(resource)}
        assert images == {expected}, f"{overlay}: {resource['metadata']['name']} runs {images}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_entrypoint_is_a_launch_the_config_validator_accepts(overlay: str) -> None:
    (job,) = by_kind(RENDERED[overlay], "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "services.launch"]
    config = build_config(argv[3:])
    assert config.preset == OVERLAYS[overlay]
    assert config.control.host == "0.0.0.0", "the control plane must listen beyond loopback for the Service"
    assert config.control.token is None and not any(a.startswith("control.token") for a in argv), "token on the command line"
    head = pod_templates(job)[0][1]["spec"]
    mounts = {m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])}
    assert str(config.run.root) in mounts, f"run.root {config.run.root} is not a mounted volume on the head"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rayjob_tears_its_cluster_down_and_every_head_leaves_cpus_to_the_workers(overlay: str) -> None:
    (job,) = by_kind(RENDERED[overlay], "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
    for resource in by_kind(RENDERED[overlay], "RayJob") + by_kind(RENDERED[overlay], "RayCluster"):
        spec = cluster_spec(resource)
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert spec["workerGroupSpecs"], "no worker group"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_control_token_comes_from_a_secret_and_never_from_a_manifest(overlay: str) -> None:
    resources = RENDERED[overlay]
    assert not by_kind(resources, "Secret"), "a Secret in the manifests would carry the token in the repository"
    for resource in by_kind(resources, "RayJob") + by_kind(resources, "RayCluster"):
        head = pod_templates(resource)[0][1]["spec"]["containers"][0]
        (token,) = [e for e in head["env"] if e["name"] == "CRLHF_CONTROL_TOKEN"]
        assert "value" not in token and set(token["valueFrom"]["secretKeyRef"]) == {"name", "key"}
        for container in containers(resource):
            literal = [e["name"] for e in container.get("env", []) if "value" in e and "TOKEN" in e["name"].upper()]
            assert not literal, f"{resource['metadata']['name']}: literal token in {literal}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_control_service_selects_its_head_on_the_control_port(overlay: str) -> None:
    resources = RENDERED[overlay]
    services = {s["metadata"]["name"]: s for s in by_kind(resources, "Service")}
    for resource in by_kind(resources, "RayJob") + by_kind(resources, "RayCluster"):
        head = pod_templates(resource)[0][1]
        # KubeRay adds ray.io/node-type=head to head pods; the rest of the selector must be the template's labels.
        labels = {**head["metadata"]["labels"], "ray.io/node-type": "head"}
        component = resource["metadata"]["labels"]["app.kubernetes.io/component"]
        service = services[f"crlhf-{component}-control"]
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["port"] == ControlConfig().port == 8321
        named = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
        assert named[port["targetPort"]] == ControlConfig().port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitors_select_the_control_services_and_every_ray_pods_metrics_port(overlay: str) -> None:
    resources = RENDERED[overlay]
    (service_monitor,) = by_kind(resources, "ServiceMonitor")
    (pod_monitor,) = by_kind(resources, "PodMonitor")
    selected = [s for s in by_kind(resources, "Service")
                if service_monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 2
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} == {p["name"] for s in selected for p in s["spec"]["ports"]}
    assert service_monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    for resource in by_kind(resources, "RayJob") + by_kind(resources, "RayCluster"):
        spec = cluster_spec(resource)
        export_port = int(spec["headGroupSpec"]["rayStartParams"]["metrics-export-port"])
        for _, template in pod_templates(resource):
            assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
            ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
            assert ports[endpoint["port"]] == export_port


def ray_resources(resource: dict[str, Any]) -> dict[str, float]:
    """What Ray reports for a cluster at its initial size: the workers' pod limits (the head runs num-cpus=0)."""
    total = {"CPU": 0.0, "GPU": 0.0}
    for group in cluster_spec(resource)["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total["CPU"] += float(limits["cpu"]) * group["replicas"]
        total["GPU"] += float(limits.get("nvidia.com/gpu", 0)) * group["replicas"]
    return total


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rayjobs_cluster_passes_the_launch_preflight_for_its_entrypoint(overlay: str) -> None:
    """The run's own cluster check (services/run/preflight.py) would accept the RayJob's workers at once."""
    (job,) = by_kind(RENDERED[overlay], "RayJob")
    config = build_config(shlex.split(job["spec"]["entrypoint"])[3:])
    problem = check_cluster(needs(config, reward_actor_count(config)), ray_resources(job))
    assert problem is None, f"{overlay}: {problem}"
    if overlay == "cpu":
        assert ray_resources(job)["GPU"] == 0
