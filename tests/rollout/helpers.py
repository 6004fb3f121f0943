"""Helpers for the rollout tests: real embedded models, a vLLM-compatible tiny model, learner log-probs.

vLLM tests skip when vLLM is not installed, *unless* CRLHF_REQUIRE_VLLM=1 (set by .ci/run, which installs
vLLM's CPU build): there a missing or broken vLLM fails the run instead of silently skipping.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from services.config.schema import RootConfig, SamplingConfig
from services.models.loading import load_causal_lm

CHAT_QUESTIONS = [
    "Hi, how are you today?",
    "What is the capital of France?",
    "Tell me a joke.",
    "Name a color.",
    "Do you like music?",
    "Say just the word yes.",
    "What is two plus two?",
    "Where do penguins live?",
]


def require_vllm() -> None:
    """Skip (or, in CI, fail) when vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CRLHF_REQUIRE_VLLM") == "1":
            pytest.fail("CRLHF_REQUIRE_VLLM=1 but vLLM is not installed (bash cluster/setup.sh installs it)")
        pytest.skip("vLLM is not installed (bash cluster/setup.sh installs its CPU build)")


def build_tiny_vllm_model(out: Path) -> Path:
    """The embedded tiny-llama with 2 attention heads instead of 4 (head_dim 32 instead of 16).

    vLLM's CPU attention kernels need head_dim ≥ 32, so the embedded tiny-llama cannot run on vLLM; this
    is the same size class (2 layers, hidden 64, SmolLM2 tokenizer, random init) for vLLM tests and bench.
    """
    from services.models.loading import build_tiny_llama

    if not (out / "config.json").exists():
        build_tiny_llama(out, num_attention_heads=2)
    return out


def hf_model(path: str) -> torch.nn.Module:
    return load_causal_lm(path, torch.float32, torch.device("cpu")).eval()


def learner_logprobs(
    model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int, temperature: float = 1.0
) -> list[torch.Tensor]:
    """The learner's recomputation of old log-probs (services/ppo: collate + response_logprobs), per response;
    `temperature` ≠ 1 gives the tempered distribution the backends must *not* return."""
    from services.ppo.batch import collate, response_logprobs

    batch = collate(prompts, responses, pad_id)
    with torch.no_grad():
        logits = model(**batch.rows(torch.arange(batch.size), torch.device("cpu")), logits_to_keep=batch.response_ids.shape[1]).logits
    lp = response_logprobs(logits / temperature, batch.response_ids)
    return [lp[i, : len(r)] for i, r in enumerate(responses)]


def max_logprob_gap(model: torch.nn.Module, generation, pad_id: int) -> float:
    recomputed = learner_logprobs(model, generation.prompt_ids, generation.response_ids, pad_id)
    return max((r - torch.tensor(g)).abs().max().item() for r, g in zip(recomputed, generation.logprobs))


def vllm_config(path: str, **sampling: object) -> RootConfig:
    """A run config for vLLM engines in tests: float32 (exact comparison with the learner), short sequences."""
    config = RootConfig()
    config.model.name_or_path = path
    config.model.dtype = "float32"
    config.model.max_prompt_tokens = 64
    config.rollout.backend = "vllm"
    config.rollout.batch_size = 8
    config.rollout.sampling = SamplingConfig(**{"max_new_tokens": 24, "min_new_tokens": 0, **sampling})
    return config
