"""A run directory's checkpoints: `checkpoints/iter_NNNNNN/` with the learner's files (policy or adapters,
optimiser), the coordinator's whole state and the driver's position (iteration, prompt sampler).

Written to `<name>.partial`, then `MANIFEST.json` (every file's size) is written last as the completion
marker, the directory is renamed into place and `checkpoints/latest` names it. A checkpoint without a
manifest, or whose files differ from it (truncated, missing) or do not load, is never taken: `candidates`
yields the usable ones newest first and says which were refused, naming the file, so resume falls back to
the previous checkpoint on its own. Older ones beyond `checkpoint.keep_last` are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from services.coordinator.store import load_state, save_atomic

log = logging.getLogger("crlhf")
MANIFEST = "MANIFEST.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected; the message names the files at fault."""


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
    write_manifest(partial)  # last: its presence says every other file is complete
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (checkpoints / "latest.tmp").write_text(target.name)
    (checkpoints / "latest.tmp").replace(checkpoints / "latest")
    for old in sorted(p for p in checkpoints.glob("iter_*") if not p.name.endswith(".partial"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _files(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(directory: Path) -> None:
    """Sizes, not hashes: hashing a full fine-tune's optimiser state would add seconds to every checkpoint,
    and what sizes miss (same-length garbage) fails to load, which `candidates` also catches."""
    for path in directory.rglob("*"):  # the learner wrote through buffered files: make them durable first
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": _files(directory)}, indent=0))
    tmp.replace(directory / MANIFEST)


def problem(directory: Path) -> str | None:
    """Why this checkpoint cannot be used (naming the file), or None when its files match its manifest."""
    manifest = directory / MANIFEST
    if not manifest.exists():  # renamed into place without one: written before manifests existed
        return None if (directory / "driver.json").exists() else f"{directory / 'driver.json'} is missing"
    try:
        expected = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, size in expected.items():
        path = directory / name
        if not path.exists():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} is truncated or changed ({path.stat().st_size} bytes, {size} when written)"
    return None


def _read(directory: Path) -> Restored:
    meta = json.loads((directory / "driver.json").read_text())
    return Restored(directory, meta["iteration"], meta["sampler"], load_state(directory / "coordinator.pt"))


def candidates(checkpoints: Path) -> Iterator[Restored]:
    """Usable checkpoints, newest first; each refused one is logged with the file at fault. The caller may
    skip one that fails later (the learner's files load in the learner actor) by taking the next."""
    found = sorted((p for p in checkpoints.glob("iter_*") if p.is_dir() and not p.name.endswith(".partial")), reverse=True)
    refused, usable = [], 0
    for directory in found:
        why = problem(directory)
        if why is None:
            try:
                restored = _read(directory)
            except Exception as err:  # noqa: BLE001 - torch/json raise many kinds on a damaged file
                why = f"{directory} does not load: {type(err).__name__}: {err}"
            else:
                if refused:
                    log.warning("using the previous checkpoint %s instead", directory)
                usable += 1
                yield restored
                continue
        refused.append(why)
        log.warning("checkpoint refused: %s", why)
    if refused and not usable:
        raise CheckpointError(
            f"no usable checkpoint in {checkpoints}: " + "; ".join(refused)
            + f". Restore the files, or move {checkpoints} away to start the run again from iteration 0"
        )


def latest(checkpoints: Path) -> Restored | None:
    """The newest usable checkpoint (refusals logged), or None."""
    return next(candidates(checkpoints), None)


def latest_iteration(checkpoints: Path) -> int | None:
    """The iteration of the newest complete checkpoint, from its name (no loading)."""
    done = [p for p in checkpoints.glob("iter_*") if (p / MANIFEST).exists() and not p.name.endswith(".partial")]
    return int(max(done).name.removeprefix("iter_")) if done else None


def trim_metrics(metrics: Path, last_iteration: int) -> None:
    """Drop records of iterations after a checkpoint: a resumed run writes them again."""
    if metrics.exists():
        kept = [line for line in metrics.read_text().splitlines() if _iteration(line) <= last_iteration]
        metrics.write_text("".join(line + "\n" for line in kept))


def _iteration(line: str) -> float:
    """A record's iteration; a line cut short by a killed driver counts as after every checkpoint (dropped)."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError):
        return float("inf")
