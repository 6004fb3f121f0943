"""Real runs and a real Prometheus for the observability tests.

A real run (`services.launch.main`) keeps iterating in a thread of the test process; the tests talk to
*its* control plane (the coordinator's uvicorn server) and point a real Prometheus at its `/metrics`.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- real runs -----------------------------------------------------------------------------------------
@dataclass
class LaunchedRun:
    """`services.launch.main([...])` in a thread of this process, on the Ray cluster the caller connected
    (tests/conftest.py's `ray_local`; launch joins an initialised Ray instead of starting one). A thread,
    not a subprocess: a subprocess's `ray.init(address="auto")` would join whatever Ray cluster happens to
    run on the machine."""

    run_dir: Path
    thread: threading.Thread
    result: dict[str, Any]

    def control(self) -> tuple[str, str] | None:
        """(url, token) once the control plane is up."""
        address, token = self.run_dir / "control.json", self.run_dir / "control.token"
        if not (address.exists() and token.exists()):
            return None
        return json.loads(address.read_text())["url"], token.read_text().strip()

    def check_alive(self) -> None:
        if not self.thread.is_alive():
            raise AssertionError(f"run ended early: {self.result}\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.run_dir / "train.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no train.log)"

    def wait(self, timeout: float) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"run did not end within {timeout:.0f} s:\n{self.log_tail()}")
        if "error" in self.result:
            raise AssertionError(f"run failed: {self.result['error']!r}\n{self.log_tail()}")
        return self.result["code"]

    def stop(self, url: str | None = None, token: str | None = None, timeout: float = 120.0) -> None:
        """Graceful stop over REST (the driver ends at the next iteration boundary and releases its actors)."""
        if self.thread.is_alive() and url and token:
            try:
                httpx.post(f"{url}/v1/stop", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            except httpx.HTTPError:
                pass
        self.thread.join(timeout)


def launch(run_root: Path, name: str, overrides: list[str]) -> LaunchedRun:
    from services.launch import main

    run_root.mkdir(parents=True, exist_ok=True)
    argv = [*overrides, f"run.root={run_root}", f"run.name={name}", "control.port=0"]
    result: dict[str, Any] = {}
    handlers = list(logging.getLogger().handlers)

    def target() -> None:
        try:
            result["code"] = main(argv)
        except BaseException as err:  # surfaced by wait()/check_alive()
            result["error"] = err
        finally:  # main() adds a FileHandler for train.log to the root logger; do not leak it
            for handler in logging.getLogger().handlers:
                if handler not in handlers:
                    logging.getLogger().removeHandler(handler)
                    handler.close()

    thread = threading.Thread(target=target, name=f"launch-{name}", daemon=True)
    thread.start()
    return LaunchedRun(run_root / name, thread, result)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --- Prometheus -----------------------------------------------------------------------------------------
class Prometheus:
    """Debian's prometheus on a free loopback port, scraping file_sd targets (added while it runs)."""

    def __init__(self, directory: Path, scrape_interval: str = "1s") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.targets_file = directory / "targets.json"
        self.targets: list[dict[str, Any]] = []
        self._write_targets()
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {"job_name": "crlhf", "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}]},
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        wait_for(self._ready, 60, "prometheus to become ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {(self.directory / 'prometheus.log').read_text()}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def _write_targets(self) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.targets))
        tmp.replace(self.targets_file)

    def add_target(self, url: str, **labels: str) -> None:
        self.targets.append({"targets": [url.removeprefix("http://")], "labels": labels})
        self._write_targets()

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        body = self.http.get("/api/v1/query", params=params).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 2.0) -> list[dict[str, Any]]:
        r = self.http.get("/api/v1/query_range", params={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"})
        body = r.json()
        assert body.get("status") == "success", (expr, body)
        return body["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        body = self.http.get(f"/api/v1/label/{label}/values", params={"match[]": match}).json()
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
