"""Many concurrent HTTP changes while iterations begin and commit: serialised, consistent, fully audited."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from services.coordinator import protocol, views
from services.coordinator.state import CoordinatorState
from services.coordinator.store import load_state

from .live import smoke_config

WORKERS, REQUESTS = 8, 25


def worker(url: str, token: str, seed: int, accepted: list[dict], errors: list[str]) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}", "X-Crlhf-User": f"w{seed}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for _ in range(REQUESTS):
            kind = rng.choice(["threshold", "threshold", "direction", "lr", "pause", "resume", "checkpoint", "bad"])
            if kind == "threshold":
                r = http.put(f"/v1/constraints/{rng.choice(['meteor', 'topic'])}", json={"threshold": round(rng.uniform(0, 1), 3)})
            elif kind == "direction":
                r = http.put("/v1/constraints/topic", json={"direction": rng.choice(["ge", "le"])})
            elif kind == "lr":
                r = http.patch("/v1/objective", json={"multiplier_lr": round(rng.uniform(0.01, 1), 3)})
            elif kind == "bad":  # rejected: must leave no trace
                r = http.put("/v1/constraints/meteor", json={"threshold": 7.0})
                if r.status_code != 422:
                    errors.append(f"bad request got {r.status_code}")
                continue
            else:
                r = http.post(f"/v1/{kind}")
            if r.status_code != 202:
                errors.append(f"{kind}: {r.status_code} {r.text}")
            else:
                accepted.append(r.json())


def trainer(state: CoordinatorState, stop: threading.Event, handed: dict[int, dict]) -> None:
    """The driver's side: begin/commit iterations back to back, as fast as the lock allows."""
    k = 0
    while not stop.is_set():
        got = protocol.begin_iteration(state, k)
        handed[k] = {"thresholds": got.state["thresholds"].tolist(), "lr": got.spec.config.multiplier_lr,
                     "directions": list(got.spec.directions)}
        time.sleep(0.002)
        protocol.commit(state, k, {"objective_state": got.state, "record": {"iteration": k}})
        k += 1


def effective_at(audit: list[dict], target: str, iteration: int, initial):
    """The value of `target` in force during `iteration`: the last change applying from it or earlier."""
    value = initial
    for entry in audit:
        if entry["target"] == target and entry["applies_from"] <= iteration:
            value = entry["new"]
    return value


def test_concurrent_changes_are_serialised_consistent_and_fully_audited(live):
    accepted: list[dict] = []
    errors: list[str] = []
    handed: dict[int, dict] = {}
    stop = threading.Event()
    training = threading.Thread(target=trainer, args=(live.state, stop, handed))
    training.start()
    threads = [threading.Thread(target=worker, args=(live.url, live.token, i, accepted, errors)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    training.join()
    assert not errors
    assert len(handed) >= 10  # iterations really interleaved with the changes

    audit = live.http.get("/v1/audit").json()
    # Complete: every accepted change is in the log once, with contiguous sequence numbers; nothing else is.
    returned = [c["seq"] for r in accepted for c in r.get("changes", [])]
    controls = sum(1 for r in accepted if r.get("action") and r["changed"])
    assert [e["seq"] for e in audit] == list(range(len(audit)))
    assert len(audit) == len(returned) + controls and len(set(returned)) == len(returned)
    assert len(audit) >= WORKERS * REQUESTS // 2
    assert all(e["new"] != 7.0 for e in audit)
    # Serialised: per target, each entry's old value is the previous entry's new value; boundaries never go back.
    last: dict[str, object] = {}
    for e in audit:
        if e["target"] in last and e["target"].startswith(("rewards.", "objective.", "control.paused")):
            previous = last[e["target"]]
            assert e["old"] == (pytest.approx(previous, rel=1e-6) if isinstance(previous, float) else previous), e
        last[e["target"]] = e["new"]
    assert [e["applies_from"] for e in audit] == sorted(e["applies_from"] for e in audit)
    # Boundary rule under load: every iteration got exactly the values whose changes applied from it or earlier.
    for k, got in handed.items():
        assert got["thresholds"][0] == pytest.approx(effective_at(audit, "rewards.meteor.threshold", k, 0.23), rel=1e-6)
        assert got["thresholds"][1] == pytest.approx(effective_at(audit, "rewards.topic.threshold", k, 0.48), rel=1e-6)
        assert got["directions"][1] == effective_at(audit, "rewards.topic.direction", k, "ge")
        assert got["lr"] == pytest.approx(effective_at(audit, "objective.multiplier_lr", k, 0.1))
    # Consistent end state, and the persisted copy agrees.
    status = live.http.get("/v1/status").json()
    assert status["paused"] == effective_at(audit, "control.paused", 10**9, False)
    restarted = CoordinatorState(smoke_config(), None)
    protocol.restore(restarted, load_state(live.run_dir / "coordinator.pt"))
    assert [e.seq for e in restarted.audit] == [e["seq"] for e in audit]
    protocol.begin_iteration(restarted, restarted.last_committed + 1)
    assert restarted.thresholds()["meteor"] == pytest.approx(last.get("rewards.meteor.threshold", 0.23), rel=1e-6)
    assert views.objective(restarted)["hyperparameters"]["multiplier_lr"] == pytest.approx(last.get("objective.multiplier_lr", 0.1))
