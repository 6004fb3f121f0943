"""End to end on a real Ray run: the Driver's actors, the control plane served by the Coordinator actor,
changes over real HTTP between and during iterations, asserted through the objective's behaviour.

mu_ppo with one reward, the response length (cheap, always > 0): λ moves against the violation, so it
shrinks while the reward is above θ and grows while it is below. θ = −1 first, then 100 from iteration 3.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import ray

from services.coordinator.store import load_state
from services.data.dialogues import load_examples
from services.driver import Driver
from services.config.overrides import build_config

pytestmark = pytest.mark.slow

OVERRIDES = ["preset=smoke", "objective=mu_ppo", "control.port=0", "evaluation.every=0", "rewards.meteor=null",
             "rewards.topic=null", "rewards.len.kind=length", "rewards.len.threshold=-1"]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_threshold_changed_over_http_mid_run_flips_the_multiplier(ray_local, tmp_path, monkeypatch):
    monkeypatch.delenv("CRLHF_CONTROL_TOKEN", raising=False)
    config = build_config(OVERRIDES)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    driver = Driver(config, run_dir, load_examples(config.data, "train"))
    try:
        url = ray.get(driver.coordinator.address.remote())
        assert url.startswith("http://127.0.0.1:")
        token = (run_dir / "control.token").read_text().strip()
        http = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}", "X-Crlhf-User": "test"})
        lam = [http.get("/v1/objective").json()["state"]["lambda/len"]]

        records = [driver.iteration(0), driver.iteration(1)]
        # Iteration 2 runs in the background; the change arrives while it is in flight.
        background = threading.Thread(target=lambda: records.append(driver.iteration(2)))
        background.start()
        wait_for(lambda: http.get("/v1/status").json()["running_iteration"] == 2, what="iteration 2 to start")
        r = http.put("/v1/constraints/len", json={"threshold": 100.0})
        assert r.status_code == 202 and r.json()["applies_from"] == 3
        background.join()
        records.append(driver.iteration(3))
        lam += [rec["lambda/len"] for rec in records]

        assert [rec["threshold/len"] for rec in records] == [-1.0, -1.0, -1.0, 100.0]
        steps = [b - a for a, b in zip(lam, lam[1:])]
        assert all(rec["reward/len"] > 0 for rec in records)
        assert steps[0] < 0 and steps[1] < 0 and steps[2] < 0, steps  # r > θ = −1: λ shrinks
        assert steps[3] > 0, steps  # r < θ = 100 from iteration 3: λ grows
        # The coordinator's view agrees, and the change is persisted and audited.
        view = http.get("/v1/constraints/len").json()
        assert view["threshold"] == 100.0 and view["current"] == pytest.approx(records[-1]["reward/len"])
        assert view["violation"] == pytest.approx(100.0 - records[-1]["reward/len"]) and view["pending"] is None
        saved = load_state(run_dir / "coordinator.pt")
        assert saved["objective"]["thresholds"].tolist() == [100.0]
        assert [(c["target"], c["new"], c["applies_from"], c["who"]) for c in saved["audit"]] == [
            ("rewards.len.threshold", 100.0, 3, "test@127.0.0.1")]

        # Pause, checkpoint while paused, resume: through the driver's own loop.
        assert http.post("/v1/pause").status_code == 202
        driver.start_iteration = 4
        runner = threading.Thread(target=driver.run)
        runner.start()
        time.sleep(2.5)
        status = http.get("/v1/status").json()
        assert (status["state"], status["iteration"], status["running_iteration"]) == ("paused", 3, None)
        http.post("/v1/checkpoint")
        ack = wait_for(lambda: [e for e in http.get("/v1/audit").json() if e["target"] == "checkpoint"], 30, "checkpoint")
        assert ack[0]["new"].endswith("iter_000003") and (run_dir / "checkpoints" / "iter_000003").is_dir()
        http.post("/v1/resume")
        runner.join(120)
        assert http.get("/v1/status").json()["iteration"] == 4

        # Stop: the driver ends gracefully and the status says so; later changes are refused.
        http.post("/v1/stop")
        driver.config.trainer.iterations = 7
        driver.start_iteration = 5
        driver.run()
        status = http.get("/v1/status").json()
        assert status["state"] == "stopped" and status["iteration"] == 4
        refused = http.put("/v1/constraints/len", json={"threshold": 1.0})
        assert refused.status_code == 409 and "stopped" in refused.json()["detail"]
    finally:
        driver.close()
