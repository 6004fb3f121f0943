"""Checks a run makes before any actor starts (pure: the caller passes the loaded examples and Ray's numbers).

- `check_rewards`: each reward's needs against the data — a class label per row (classifier), a reference
  per row (meteor, bleu, sacrebleu, rouge, similarity), labels the classifier knows — and models on disk.
  Without it a run fails minutes later inside a reward actor ("row 0 has none").
- `check_policy_model`: a policy model given as a path that is not there.
- `check_cluster`: a run whose actors ask for more CPUs or GPUs than the cluster has would wait forever with
  its learner in PENDING_CREATION; this says so at once, naming the resource and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.config.schema import RootConfig
from services.data.dialogues import DialogueExample

# Which reward kinds read which per-row field (their `_score` calls ScoringBatch.require_labels /
# require_references; tests/run/test_preflight.py checks this table against the reward classes' source).
NEEDS_LABEL = frozenset({"classifier"})
NEEDS_REFERENCE = frozenset({"meteor", "bleu", "sacrebleu", "rouge", "similarity"})
# Params that name a model directory, per kind. hf_model's `path` may also be a hub id, so only a value that
# is written as a path (/, ./, ../, ~) is checked.
MODEL_PARAMS = {"classifier": ("model_dir", "encoder_path"), "similarity": ("model_path",), "hf_model": ("path",)}


class PreflightError(ValueError):
    """A run that cannot work as configured; the message names the reward/resource and the fix."""


def check_rewards(config: RootConfig, examples: Sequence[DialogueExample]) -> None:
    """PreflightError for the first reward the data or the disk cannot serve."""
    for name, reward in config.rewards.items():
        drop = f"set rewards.{name}=null to train without it"
        if reward.kind in NEEDS_LABEL:
            _require_field(config, name, examples, "label", "scores each response against the row's class label",
                           "COLUMN (the column of class labels)")
            _check_known_labels(name, reward.params, {ex.label for ex in examples})
        if reward.kind in NEEDS_REFERENCE:
            _require_field(config, name, examples, "reference", "compares each response with the row's reference", "COLUMN")
        for key in MODEL_PARAMS.get(reward.kind, ()):
            value = reward.params.get(key)
            if value is None or (reward.kind == "hf_model" and not looks_like_path(str(value))):
                continue
            if not Path(str(value)).expanduser().is_dir():
                raise PreflightError(
                    f"reward '{name}' ({reward.kind}): rewards.{name}.params.{key}={value} is not a directory on this "
                    f"machine: give the model's directory (on every node that runs reward actors), or {drop}"
                )


def _require_field(config: RootConfig, name: str, examples: Sequence[DialogueExample], field: str, what: str, column: str) -> None:
    """PreflightError when an example has no `field` (label or reference), naming data.<field>_column and the fixes."""
    missing = next((i for i, ex in enumerate(examples) if getattr(ex, field) is None), None)
    if missing is None:
        return
    key = f"data.{field}_column"
    gives = f"{key}=null gives none" if getattr(config.data, f"{field}_column") is None else f"example {missing + 1} has none"
    raise PreflightError(
        f"reward '{name}' ({config.rewards[name].kind}) {what}, and {config.data.source}'s {gives}: "
        f"set rewards.{name}=null to train without it, or set {key}={column}"
    )


def looks_like_path(value: str) -> bool:
    """Written as a filesystem path (not an embedded name or a hub id such as org/model)."""
    return value.startswith(("/", "./", "../", "~"))


def check_policy_model(config: RootConfig) -> None:
    value = config.model.name_or_path
    if looks_like_path(value) and not Path(value).expanduser().is_dir():
        raise PreflightError(
            f"model.name_or_path={value} is not a directory on this machine: give a Hugging Face model directory "
            "(save_pretrained), a hub id, or an embedded name (smollm2-135m-instruct, tiny-llama)"
        )


def _check_known_labels(name: str, params: dict, labels: set[str | None]) -> None:
    """A classifier only scores the classes it was built on; the built one lists them in labels.json."""
    directory = params.get("model_dir")
    if directory is None:  # the default, built on first use; its path as services.config.paths computes it,
        # without creating the cache directory (a preflight writes nothing)
        directory = Path(os.environ.get("CRLHF_CACHE", Path.home() / ".cache" / "crlhf")) / "topic_classifier"
    listing = Path(str(directory)).expanduser() / "labels.json"
    if not listing.is_file():
        return  # not built yet (it is built from the chatterbot corpus on first use)
    known = set(json.loads(listing.read_text()))
    unknown = sorted(str(label) for label in labels - known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise PreflightError(
            f"reward '{name}' (classifier): the data has labels the classifier in {listing.parent} does not know "
            f"({shown}; it knows {', '.join(sorted(known))}): give a classifier built on these labels "
            f"(rewards.{name}.params.model_dir), or set rewards.{name}=null"
        )


@dataclass(frozen=True)
class Need:
    group: str  # e.g. "rollout (1 actor)"
    setting: str  # the config key that sets it, e.g. "rollout.num_cpus"
    cpus: float
    gpus: float


def reward_actor_count(config: RootConfig) -> int:
    """One reward actor per distinct `rewards.*.actor` (as services/run/actors.py:reward_groups starts them)."""
    return len({reward.actor for reward in config.rewards.values()})


def needs(config: RootConfig, reward_actors: int) -> list[Need]:
    r, learner, rewards = config.rollout, config.learner, config.reward_actors
    return [
        Need(f"rollout ({r.num_actors} actor{'s' * (r.num_actors > 1)})", "rollout.num_cpus", r.num_cpus * r.num_actors, r.num_gpus * r.num_actors),
        Need(f"reward ({reward_actors} actor{'s' * (reward_actors > 1)})", "reward_actors.num_cpus", rewards.num_cpus * reward_actors,
             rewards.num_gpus * reward_actors),
        Need("learner", "learner.num_cpus", learner.num_cpus, learner.num_gpus),
    ]


def check_cluster(wanted: list[Need], resources: dict[str, float]) -> str | None:
    """None when the cluster can hold every actor at once, else one message naming what is short and the fix."""
    for key, unit in (("CPU", "cpus"), ("GPU", "gpus")):
        total = sum(getattr(n, unit) for n in wanted)
        have = float(resources.get(key, 0.0))
        if total > have + 1e-9:
            parts = ", ".join(f"{n.group} {getattr(n, unit):g}" for n in wanted if getattr(n, unit))
            if key == "CPU":
                biggest = max(wanted, key=lambda n: n.cpus)
                fix = (f"start Ray with --num-cpus={_ceil(total)} (logical CPUs only gate scheduling; the phases take turns), "
                       f"or lower {biggest.setting} (e.g. {biggest.setting}={max(biggest.cpus - (total - have), 0):g})")
            else:
                fix = "add GPU nodes, or set rollout.num_gpus / learner.num_gpus / reward_actors.num_gpus to fit"
            return f"this cluster has {have:g} {key}s, the run needs {total:g} ({parts}): {fix}"
    return None


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole == value else whole + 1
