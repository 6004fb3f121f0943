"""deploy/: the Prometheus config (checked by Debian's promtool when present), Grafana provisioning and the
docker-compose file. Docker cannot run here, so the compose file is checked structurally with PyYAML:
every mounted file exists, the provisioning points at the mounts, the dashboard is the home page, and
anonymous users can view it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .harness import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
DATASOURCES = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
PROVIDERS = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "crlhf.yaml").read_text())
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "crlhf.json").read_text())


def mounts(service: str) -> dict[str, Path]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    out = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (DEPLOY / source).resolve() if source.startswith(".") else Path(source)
    return out


def test_compose_runs_prometheus_and_grafana_from_pinned_images() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"prometheus", "grafana"}
    for service in services.values():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image
    assert "prometheus" in services["grafana"]["depends_on"]
    assert "9090:9090" in services["prometheus"]["ports"] and "3000:3000" in services["grafana"]["ports"]
    assert set(COMPOSE["volumes"]) == {"prometheus-data", "grafana-data"}


def test_compose_mounts_exist_in_the_repository() -> None:
    for service in ("prometheus", "grafana"):
        for target, source in mounts(service).items():
            if source.is_absolute() and not str(source).startswith(str(DEPLOY)):
                continue  # host paths such as /tmp/ray
            assert source.exists(), f"{service}: {source} (mounted at {target}) is missing"


def test_prometheus_service_uses_the_config_and_sees_rays_discovery_file() -> None:
    service = COMPOSE["services"]["prometheus"]
    config_flag = next(a for a in service["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert mounts("prometheus")[config_path] == DEPLOY / "prometheus" / "prometheus.yml"
    ray_files = [f for job in PROMETHEUS["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert ray_files == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert mounts("prometheus")["/tmp/ray"] == Path("/tmp/ray")
    assert "host.docker.internal:host-gateway" in service["extra_hosts"]


def test_prometheus_scrapes_the_control_plane_statically() -> None:
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    crlhf = jobs["crlhf"]
    assert crlhf["metrics_path"] == "/metrics"
    assert crlhf["static_configs"][0]["targets"] == ["host.docker.internal:8321"]  # control.port's default
    assert "ray" in jobs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_config() -> None:
    result = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_the_dashboard_as_home_for_anonymous_viewers() -> None:
    grafana = COMPOSE["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    m = mounts("grafana")
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_dir, home_file = home.rsplit("/", 1)
    assert (m[home_dir] / home_file).resolve() == (DEPLOY / "grafana" / "dashboards" / "crlhf.json").resolve()
    # Provisioning directories are where Grafana reads them, and the provider loads the mounted dashboards.
    assert m["/etc/grafana/provisioning/datasources"] == DEPLOY / "grafana" / "provisioning" / "datasources"
    assert m["/etc/grafana/provisioning/dashboards"] == DEPLOY / "grafana" / "provisioning" / "dashboards"
    (provider,) = PROVIDERS["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == home_dir


def test_the_provisioned_datasource_is_the_prometheus_service_and_the_dashboards_default() -> None:
    (ds,) = DATASOURCES["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"]
    assert ds["jsonData"]["timeInterval"] == PROMETHEUS["global"]["scrape_interval"]
    variable = next(v for v in DASHBOARD["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == ds["uid"] and variable["current"]["text"] == ds["name"]
