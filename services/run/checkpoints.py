"""A run directory's checkpoints: `checkpoints/iter_NNNNNN/` with the learner's files (policy or adapters,
optimiser), the coordinator's whole state and the driver's position (iteration, prompt sampler), written
to `<name>.partial` and renamed into place, with `checkpoints/latest` naming the newest complete one.
Older ones beyond `checkpoint.keep_last` are deleted."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from services.coordinator.store import load_state, save_atomic


@dataclass
class Restored:
    directory: Path
    iteration: int  # the last completed iteration
    sampler: dict[str, Any]
    coordinator: dict[str, Any]


def save(checkpoints: Path, iteration: int, learner: Any, coordinator: Any, sampler: dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint `iteration` from the learner and coordinator actors; returns its directory."""
    target = checkpoints / f"iter_{iteration:06d}"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ray.get(learner.save.remote(str(partial)))
    save_atomic(ray.get(coordinator.state_dict.remote()), partial / "coordinator.pt")
    (partial / "driver.json").write_text(json.dumps({"iteration": iteration, "sampler": sampler}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (checkpoints / "latest.tmp").write_text(target.name)
    (checkpoints / "latest.tmp").replace(checkpoints / "latest")
    for old in sorted(p for p in checkpoints.glob("iter_*") if not p.name.endswith(".partial"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest(checkpoints: Path) -> Restored | None:
    """The newest complete checkpoint, read back (the learner's files stay on disk for `learner.load`)."""
    pointer = checkpoints / "latest"
    if not pointer.exists():
        return None
    directory = checkpoints / pointer.read_text().strip()
    meta = json.loads((directory / "driver.json").read_text())
    return Restored(directory, meta["iteration"], meta["sampler"], load_state(directory / "coordinator.pt"))


def trim_metrics(metrics: Path, last_iteration: int) -> None:
    """Drop records of iterations after a checkpoint: a resumed run writes them again."""
    if metrics.exists():
        kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["iteration"] <= last_iteration]
        metrics.write_text("".join(line + "\n" for line in kept))
