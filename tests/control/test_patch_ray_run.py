"""On a real Ray run, with the real LearnerActor: an objective hyperparameter patched over HTTP changes the
learner from the announced iteration (and not before), a direction flip reverses the multiplier's motion,
and a run resumed from a checkpoint keeps the patched spec.

mu_ppo with one reward, the response length (always > 0) and θ = −1: with direction ge the constraint holds,
so λ shrinks every iteration; with le it is violated, so λ grows. HF generation with a fixed seed makes the
twin runs' rollouts identical.
"""

from __future__ import annotations

import httpx
import pytest
import ray

from services.config.overrides import build_config
from services.data.dialogues import load_examples
from services.driver import Driver

pytestmark = pytest.mark.slow

OVERRIDES = ["preset=smoke", "objective=mu_ppo", "control.port=0", "evaluation.every=0", "rollout.backend=hf",
             "rewards.meteor=null", "rewards.topic=null", "rewards.len.kind=length", "rewards.len.threshold=-1"]


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(("time/", "tokens_per_second", "memory/"))}


def driver_for(run_dir, *extra: str) -> tuple[Driver, httpx.Client]:
    config = build_config([*OVERRIDES, *extra])
    driver = Driver(config, run_dir, load_examples(config.data, "train"))
    url = ray.get(driver.coordinator.address.remote())
    token = (run_dir / "control.token").read_text().strip()
    return driver, httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def test_patch_direction_and_resume_reach_the_real_learner(ray_local, tmp_path, monkeypatch):
    monkeypatch.delenv("CRLHF_CONTROL_TOKEN", raising=False)
    (tmp_path / "twin").mkdir()
    (tmp_path / "run").mkdir()
    twin, _ = driver_for(tmp_path / "twin")
    try:
        unpatched = [twin.iteration(0), twin.iteration(1)]
    finally:
        twin.close()

    driver, http = driver_for(tmp_path / "run")
    try:
        patched = [driver.iteration(0)]
        r = http.patch("/v1/objective", json={"multiplier_lr": 1.0})
        assert r.status_code == 202 and r.json()["applies_from"] == 1
        patched.append(driver.iteration(1))
        assert comparable(patched[0]) == comparable(unpatched[0])  # before the announced iteration: identical
        assert patched[1]["objective/version"] == 1 and unpatched[1]["objective/version"] == 0
        step_twin = unpatched[1]["lambda/len"] - unpatched[0]["lambda/len"]
        step_patched = patched[1]["lambda/len"] - patched[0]["lambda/len"]
        assert step_twin < 0 and step_patched < 0  # θ = −1 holds: λ shrinks in both
        assert abs(step_patched) > 2 * abs(step_twin), (step_patched, step_twin)  # 10× the learning rate

        r = http.put("/v1/constraints/len", json={"direction": "le"})
        assert r.status_code == 202 and r.json()["applies_from"] == 2
        patched.append(driver.iteration(2))
        assert patched[2]["objective/version"] == 2
        assert patched[2]["lambda/len"] > patched[1]["lambda/len"]  # r ≤ −1 is violated: λ grows
        driver.save_checkpoint(2)
    finally:
        driver.close()

    resumed, http = driver_for(tmp_path / "run", "resume=true")
    try:
        resumed.restore()
        view = http.get("/v1/objective").json()
        assert view["version"] == 2 and view["hyperparameters"]["multiplier_lr"] == 1.0
        assert http.get("/v1/constraints/len").json()["direction"] == "le"
        record = resumed.iteration(3)
        assert record["objective/version"] == 2 and record["lambda/len"] > patched[2]["lambda/len"]
    finally:
        resumed.close()
