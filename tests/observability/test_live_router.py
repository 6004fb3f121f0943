"""The live page's routes, `/v1/history`, `/metrics` from the run's registry and the request middleware, on
the real uvicorn server over loopback (no Ray: an in-process CoordinatorState fed with real records)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.coordinator import protocol
from services.control.app import create_app
from services.control.live_router import ASSETS, LIVE_DIR, SECURITY_HEADERS
from services.control.server import ControlServer
from services.coordinator.state import CoordinatorState
from services.config.overrides import build_config
from services.coordinator.telemetry import RunTelemetry

from .harness import ROOT

RECORDS = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "metrics_mu_ppo_smoke.jsonl").read_text().splitlines()]
TOKEN = "t" * 32


@dataclass
class Plane:
    url: str
    state: CoordinatorState
    telemetry: RunTelemetry
    http: httpx.Client


@pytest.fixture(scope="module")
def plane() -> Iterator[Plane]:
    config = build_config(["preset=smoke", "objective=mu_ppo", "control.port=0"])
    state = CoordinatorState(config, run_label="router-test")
    for record in RECORDS:  # real records of a smoke run, committed as the learner would
        handed = protocol.begin_iteration(state, record["iteration"])
        protocol.commit(state, record["iteration"], {"objective_state": handed.state, "record": record})
    server = ControlServer(create_app(state, TOKEN), "127.0.0.1", 0)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield Plane(server.url, state, state.telemetry, http)
    server.stop()


def metric(plane: Plane, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(plane.http.get("/metrics").text):
        for s in family.samples:
            if s.name == name and s.labels == {"run": plane.telemetry.run, **labels}:
                return s.value
    return None


def test_history_returns_the_committed_records(plane: Plane) -> None:
    body = plane.http.get("/v1/history").json()
    assert body["run"] == plane.telemetry.run and body["rewards"] == ["meteor", "topic"]
    assert [r["iteration"] for r in body["records"]] == [0, 1, 2] and body["next_since"] == 3
    for served, record in zip(body["records"], RECORDS, strict=True):
        for key in ("reward/meteor", "threshold/topic", "violation/topic", "multiplier/meteor", "weight/kl", "kl", "time/sync", "eval/score"):
            assert served[key] == pytest.approx(record[key]), key
    newer = plane.http.get("/v1/history", params={"since": 2}).json()
    assert [r["iteration"] for r in newer["records"]] == [2] and newer["next_since"] == 3
    none = plane.http.get("/v1/history", params={"since": 3}).json()
    assert none["records"] == [] and none["next_since"] == 3  # poll again from the same place
    assert [r["iteration"] for r in plane.http.get("/v1/history", params={"limit": 1}).json()["records"]] == [2]


@pytest.mark.parametrize("params", [{"since": -1}, {"limit": 0}, {"limit": 10_001}, {"since": "x"}])
def test_history_rejects_bad_parameters(plane: Plane, params: dict) -> None:
    r = plane.http.get("/v1/history", params=params)
    assert r.status_code == 422 and r.json()["detail"]


def test_history_is_in_the_api_schema_and_the_page_is_not(plane: Plane) -> None:
    paths = plane.http.get("/openapi.json").json()["paths"]
    assert "get" in paths["/v1/history"]
    assert not any(p.startswith("/live") for p in paths)


def test_live_redirects_to_the_page_directory(plane: Plane) -> None:
    r = plane.http.get("/live")
    assert r.status_code == 307 and r.headers["location"] == "live/"  # relative: works behind a path prefix
    page = plane.http.get("/live", follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/live/")
    assert plane.http.get("/live", params={"poll_ms": 500}).headers["location"] == "live/?poll_ms=500"


def test_page_and_assets_are_served_with_their_types_and_a_strict_policy(plane: Plane) -> None:
    for path, (file, media) in ASSETS.items():
        r = plane.http.get(f"/live/{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"] == media
        assert r.content == (LIVE_DIR / file).read_bytes()
        for header, expected in SECURITY_HEADERS.items():
            assert r.headers[header] == expected
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp


@pytest.mark.parametrize("path", ["/live/missing.js", "/live/../live_router.py", "/live/%2e%2e/live_router.py", "/live/vendor/uplot/README.md", "/live/index.html"])
def test_nothing_outside_the_asset_list_is_served(plane: Plane, path: str) -> None:
    r = plane.http.get(path)
    assert r.status_code == 404 and "detail" in r.json()


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN: every script/stylesheet the page names is one of the served assets, and no shipped file
    (uPlot included) fetches from an absolute URL."""
    html = (LIVE_DIR / "index.html").read_text()
    referenced = [r for r in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html) if r != "data:,"]  # empty favicon
    assert sorted(referenced) == sorted(["vendor/uplot/uPlot.min.css", "style.css", "vendor/uplot/uPlot.iife.min.js", "app.js"])
    assert all(r in ASSETS for r in referenced)
    for path in ("app.js", "style.css", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css"):
        text = (LIVE_DIR / path).read_text()
        assert not re.search(r"""(?:fetch|import|url)\(\s*["']?(?:https?:)?//""", text), path


def test_the_assets_ship_as_package_data() -> None:
    """pyproject's package-data globs cover every served file (so a wheel install serves the page)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["services.control"]
    for file, _ in ASSETS.values():
        assert any(fnmatch(f"live/{file}", p) for p in patterns), file
    assert (LIVE_DIR / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT License")


def test_metrics_serve_the_runs_registry(plane: Plane) -> None:
    r = plane.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert metric(plane, "crlhf_iterations_total") == 3
    assert metric(plane, "crlhf_constraint_violation", reward="meteor") == pytest.approx(RECORDS[-1]["violation/meteor"])


def test_requests_are_counted_by_route_template_and_status(plane: Plane) -> None:
    count = lambda **labels: metric(plane, "crlhf_control_requests_total", **labels) or 0  # noqa: E731
    before = {
        "ok": count(method="GET", route="/v1/constraints/{name}", status="200"),
        "missing": count(method="GET", route="/v1/constraints/{name}", status="404"),
        "unmatched": count(method="GET", route="unmatched", status="404"),
    }
    assert plane.http.get("/v1/constraints/meteor").status_code == 200
    assert plane.http.get("/v1/constraints/topic").status_code == 200
    assert plane.http.get("/v1/constraints/nope").status_code == 404
    assert plane.http.put("/v1/constraints/meteor", json={"threshold": 0.3}).status_code == 401
    assert plane.http.get("/no/such/path/123").status_code == 404
    assert plane.http.delete("/v1/status").status_code == 405
    assert count(method="GET", route="/v1/constraints/{name}", status="200") == before["ok"] + 2
    assert count(method="GET", route="/v1/constraints/{name}", status="404") == before["missing"] + 1
    assert count(method="PUT", route="/v1/constraints/{name}", status="401") == 1
    assert count(method="GET", route="unmatched", status="404") == before["unmatched"] + 1  # raw paths never become labels
    assert count(method="DELETE", route="/v1/status", status="405") == 1
    assert metric(plane, "crlhf_control_request_duration_seconds_count", method="PUT", route="/v1/constraints/{name}") == 1
    text = plane.http.get("/metrics").text
    assert "/v1/constraints/meteor" not in text and "/no/such/path" not in text


def test_a_handler_that_raises_is_counted_as_500() -> None:
    """The app's catch-all handler (outside user middleware) answers 500; the middleware still counts it."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    telemetry = RunTelemetry("errors", ["r"], process_metrics=False)
    app = FastAPI()

    @app.exception_handler(Exception)
    def internal(_request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.get("/boom/{what}")
    def boom(what: str) -> None:
        raise RuntimeError(what)

    from services.control.metrics import RequestMetricsMiddleware

    app.add_middleware(RequestMetricsMiddleware, telemetry=telemetry)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom/x").status_code == 500
    text = telemetry.render().decode()
    assert 'crlhf_control_requests_total{method="GET",route="/boom/{what}",run="errors",status="500"} 1.0' in text
