"""Reward registry: maps `rewards.<name>.kind` to an implementation and validates its `params`.

Validation imports only the reward modules (pydantic params models, no torch, no model loading), so config
validation stays fast; `build_reward` is where models load.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from services.config.names import unknown_name_message
from services.rewards.base import RewardFunction

# kind -> "module:Class"; modules are imported on first use.
_REWARDS: dict[str, str] = {
    "meteor": "services.rewards.meteor:MeteorReward",
    "bleu": "services.rewards.overlap:BleuReward",
    "sacrebleu": "services.rewards.overlap:SacreBleuReward",
    "rouge": "services.rewards.overlap:RougeReward",
    "length": "services.rewards.length:LengthReward",
    "similarity": "services.rewards.similarity:SimilarityReward",
    "classifier": "services.rewards.classifier:ClassifierReward",
    "hf_model": "services.rewards.hf_model:HFModelReward",
}
REWARD_KINDS: list[str] = list(_REWARDS)


def reward_class(kind: str) -> type[RewardFunction]:
    if kind not in _REWARDS:
        raise ValueError(unknown_name_message("reward kind", kind, REWARD_KINDS))
    module_name, cls_name = _REWARDS[kind].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


MAX_ABS_THRESHOLD = 1e9  # unbounded kinds (length, hf_model): only absurd magnitudes are refused


def threshold_range(kind: str) -> tuple[float, float]:
    """The closed range a threshold for this reward kind must lie in (its scores' range, if bounded)."""
    return reward_class(kind).score_range or (-MAX_ABS_THRESHOLD, MAX_ABS_THRESHOLD)


def validate_reward_params(kind: str, params: dict[str, Any]) -> None:
    """ValueError naming an unknown kind or a bad/unknown param (with the nearest valid one); loads no model."""
    _parse_params(reward_class(kind), params)


def build_reward(kind: str, params: dict[str, Any]) -> RewardFunction:
    cls = reward_class(kind)
    return cls(_parse_params(cls, params))


def _parse_params(cls: type[RewardFunction], params: dict[str, Any]) -> Any:
    try:
        return cls.Params.model_validate(params)
    except ValidationError as err:
        fields = list(cls.Params.model_fields)
        problems = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]) or "params"
            if e["type"] == "extra_forbidden":
                problems.append(unknown_name_message(f"{cls.kind} param", name, fields))
            elif e["type"] == "missing":
                problems.append(f"reward kind '{cls.kind}' needs param '{name}'")
            else:
                problems.append(f"param '{name}' of reward kind '{cls.kind}': {e['msg']} (got {e.get('input')!r})")
        raise ValueError("; ".join(problems)) from None
