"""Fast checks of the HF backend on the embedded tiny-llama (float32, CPU).

The full contract on a real chat model (EOS, stop strings, min tokens) is test_generation_contract.py.
Tolerance: |Δ log π| ≤ 1e-5 against the learner's recomputation (same model object, same dtype; the only
difference is `generate`'s KV cache vs one full forward pass).
"""

from __future__ import annotations

import pytest
import torch

from services.config.schema import SamplingConfig
from services.models.loading import load_tokenizer
from services.rollout.hf import HFBackend, response_end

from .helpers import hf_model, max_logprob_gap

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tiny_path: str) -> HFBackend:
    return HFBackend(hf_model(tiny_path), load_tokenizer(tiny_path))


@pytest.fixture(scope="module")
def prompts(tiny: HFBackend) -> list[list[int]]:
    # Different lengths, so left padding is exercised.
    texts = ["hello", "how are you doing today my friend", "a", "what is the weather like in Paris in spring"]
    return [tiny.tokenizer(t)["input_ids"] for t in texts]


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 20)])
def test_logprobs_equal_the_learners_recomputation(tiny, prompts, temperature, top_k):
    """PPO's ratio π_new/π_old starts at 1: the rollout's log-probs are the untempered policy's."""
    gen = tiny.generate(prompts, SamplingConfig(max_new_tokens=12, min_new_tokens=12, temperature=temperature, top_k=top_k), seed=0)
    assert [len(r) for r in gen.response_ids] == [12] * 4
    assert max_logprob_gap(tiny.model, gen, tiny.tokenizer.pad_token_id) <= TOL


def test_max_new_tokens_bounds_and_seed_reproduces(tiny, prompts):
    sampling = SamplingConfig(max_new_tokens=5, min_new_tokens=0)
    a = tiny.generate(prompts, sampling, seed=3)
    assert all(1 <= len(r) <= 5 for r in a.response_ids)
    assert tiny.generate(prompts, sampling, seed=3).response_ids == a.response_ids
    assert tiny.generate(prompts, sampling, seed=4).response_ids != a.response_ids


def test_response_end_trims_padding_after_eos_and_stop_strings(tiny_path):
    tok = load_tokenizer(tiny_path)
    eos = {tok.eos_token_id}
    words = tok("Sure. More text", add_special_tokens=False)["input_ids"]
    dot = next(i for i in range(len(words)) if "." in tok.decode(words[: i + 1]))
    pad = tok.pad_token_id
    # EOS ends the response (kept); what follows is generate's padding.
    assert response_end([*words[:2], tok.eos_token_id, pad, pad], eos, [], tok) == 3
    # A stop string ends it at the token that completed the string, padding after it dropped.
    assert response_end([*words, pad, pad], eos, ["."], tok) == dot + 1
    # No EOS, no stop string: the whole row (length bound reached).
    assert response_end(words, eos, ["zzz"], tok) == len(words)


def test_load_weights_changes_the_samples_distribution(tiny, prompts, tiny_path):
    """The HF backend's weight sync is load_state_dict: afterwards its log-probs are the new model's."""
    new = hf_model(tiny_path)
    g = torch.Generator().manual_seed(0)
    new.load_state_dict({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in new.state_dict().items()})
    old_state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    try:
        tiny.load_weights(new.state_dict())
        gen = tiny.generate(prompts, SamplingConfig(max_new_tokens=8, min_new_tokens=8), seed=5)
        assert max_logprob_gap(new, gen, tiny.tokenizer.pad_token_id) <= TOL
    finally:
        tiny.load_weights(old_state)
