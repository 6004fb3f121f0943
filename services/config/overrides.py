"""Command-line `key=value` overrides → a validated `RootConfig`.

Hand-written rather than Hydra: Hydra/OmegaConf would add a second schema system beside pydantic, and
the grammar needed here is small (dotted keys, YAML scalars, `objective=NAME`, `preset=NAME`,
`rewards.NAME=null` to drop a reward). Values are parsed as YAML, so `0.23`, `true`, `null` and
`[a, b]` have their usual meaning.
"""

from __future__ import annotations

import typing

import copy
import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from services.config.schema import RootConfig
from services.rewards.config import RewardConfig
from services.objectives.registry import objective_class

# Settings each preset applies before the user's overrides.
PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default, sized for a 2-core CPU laptop (docs/RESULTS.md): what learns fastest per second there —
    # LoRA adapters (no reference copy, tiny optimiser state and checkpoints), critic-free GRPO over 4 completions
    # per prompt (no value model), fewer and shorter passes than the paper, whole-episode minibatches.
    "default": {
        "model.lora.r": 16,
        "model.lora.alpha": 32.0,
        "trainer.advantage": "grpo",
        "rollout.samples_per_prompt": 4,
        "rollout.batch_size": 4,
        "trainer.iterations": 14,
        "evaluation.every": 4,
        "trainer.epochs": 2,
        "trainer.minibatch_unit": "sequence",
        "trainer.minibatch_size": 8,
        "trainer.learning_rate": 2e-4,  # LoRA adapters start at ΔW = 0 and need a far larger step than full weights
        "evaluation.max_examples": 64,
    },
    # The schema's own defaults: paper 000's hyperparameters (Table 2), for GPU clusters — full fine-tuning,
    # GAE over per-stream value heads.
    "paper": {},
    # Tiny random model, few short episodes: a full loop in well under a minute on 2 cores.
    "smoke": {
        "model.name_or_path": "tiny-llama",
        "model.max_prompt_tokens": 64,
        "data.max_examples": 400,
        "rollout.batch_size": 8,
        "rollout.sampling.max_new_tokens": 8,
        "trainer.iterations": 5,
        "trainer.epochs": 2,
        "trainer.minibatch_size": 32,
        "trainer.learning_rate": 1e-4,
        "trainer.mixed_precision": "fp32",  # float32 everywhere: tiny-model runs and tests are exact on any CPU
        "checkpoint.every": 0,
        "evaluation.max_examples": 16,
    },
}


class ConfigError(ValueError):
    """A bad override or an invalid configuration; the message names the key."""


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _nearest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_key(path: list[str], tree: dict[str, Any]) -> None:
    """Raise ConfigError if `path` is not a key of the schema, naming the nearest valid key."""
    model: type[BaseModel] = RootConfig
    for i, key in enumerate(path):
        prefix = ".".join(path[:i])
        if model is RootConfig and key == "objective":
            model = objective_class(tree["objective"]["name"]).config_cls
            continue
        if model is RootConfig and key == "rewards":
            rest = path[i + 1 :]
            if len(rest) >= 2 and rest[1] != "params":
                valid = list(RewardConfig.model_fields)
                if rest[1] not in valid or len(rest) > 2:
                    raise ConfigError(f"unknown key 'rewards.{rest[0]}.{'.'.join(rest[1:])}'{_nearest(rest[1], valid)}")
            return
        valid = [name for name in model.model_fields]
        if key not in valid:
            where = f"'{prefix}.{key}'" if prefix else f"'{key}'"
            raise ConfigError(f"unknown key {where}{_nearest(key, valid)}")
        annotation = _section(model.model_fields[key].annotation)
        if annotation is not None:
            model = annotation
        elif i + 1 < len(path):
            raise ConfigError(f"'{'.'.join(path[: i + 1])}' is a value, not a section")


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (`X` or `X | None` for a pydantic model X), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _apply(tree: dict[str, Any], key: str, value: Any) -> None:
    path = key.split(".")
    if path == ["objective"]:
        tree["objective"] = {"name": value}  # a new objective starts from its own defaults
        objective_class(str(value))  # fail early with the nearest valid name
        return
    _check_key(path, tree)
    node = tree
    for part in path[:-1]:
        if node.get(part) is None:  # an optional section that is off (e.g. model.lora: null) starts empty
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"'{key}': '{part}' is a value, not a section")
    if value is None and path[0] == "rewards" and len(path) == 2:
        node.pop(path[-1], None)  # rewards.NAME=null removes the reward
    else:
        node[path[-1]] = value


def split_override(arg: str) -> tuple[str, Any]:
    if "=" not in arg:
        raise ConfigError(f"expected key=value, got '{arg}'")
    key, raw = arg.split("=", 1)
    if not key:
        raise ConfigError(f"empty key in '{arg}'")
    return key.strip(), _parse_value(raw)


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        given = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        lines.append(f"{loc or 'config'}: {e['msg']}{given}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def build_config(overrides: list[str], base: dict[str, Any] | None = None) -> RootConfig:
    """Defaults (or `base`, e.g. a saved run's config) ← preset ← overrides, validated."""
    pairs = [split_override(arg) for arg in overrides]
    tree = copy.deepcopy(base) if base is not None else RootConfig().model_dump(mode="json")
    # A fresh run gets its preset (default: "default"); a resumed run already holds its preset's values.
    preset = next((v for k, v in pairs if k == "preset"), None if base is not None else tree["preset"])
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'{_nearest(str(preset), list(PRESETS))} (valid: {', '.join(PRESETS)})")
        tree["preset"] = preset
        for key, value in PRESETS[preset].items():
            _apply(tree, key, value)
    try:
        # objective=NAME first, so that objective.KEY overrides are checked against that objective.
        for key, value in sorted(pairs, key=lambda kv: kv[0] != "objective"):
            if key != "preset":
                _apply(tree, key, value)
        return RootConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None
