"""The contract every generation backend keeps, checked on the real SmolLM2-135M-Instruct for HF and vLLM.

Tolerance: backend log-probs vs the learner's recomputation (a full forward pass over prompt + response,
services/ppo/batch.py), both float32 on CPU: |Δ log π| ≤ 1e-4 per token, i.e. PPO's importance ratio is
1 ± 1e-4 at the start of an iteration. Measured: HF ~1e-5, vLLM ~3e-5 (different kernels, KV cache vs
full pass). Anything tempered or top-k-renormalised would be off by > 0.1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from services.config.schema import SamplingConfig
from services.models.loading import load_tokenizer
from services.rollout.base import Generation, GenerationBackend

from .helpers import hf_model, learner_logprobs, max_logprob_gap, require_vllm

pytestmark = pytest.mark.slow  # SmolLM2 on 2 cores; the fast HF checks on tiny-llama are in test_hf_backend.py
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module", params=["hf", "vllm"])
def backend(request: pytest.FixtureRequest, smollm2_path: str) -> Iterator[GenerationBackend]:
    if request.param == "hf":
        from services.rollout.hf import HFBackend

        yield HFBackend(hf_model(smollm2_path), load_tokenizer(smollm2_path))
        return
    require_vllm()
    from services.rollout.vllm import EngineOptions, VLLMBackend

    yield VLLMBackend(smollm2_path, EngineOptions(dtype=torch.float32, max_model_len=160, max_num_seqs=8))


@pytest.fixture(scope="module")
def policy(smollm2_path: str) -> torch.nn.Module:
    return hf_model(smollm2_path)


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: str):
    return load_tokenizer(smollm2_path)


def eos_ids(tokenizer) -> set[int]:
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(tokenizer.name_or_path).eos_token_id
    return {tokenizer.eos_token_id} | set([eos] if isinstance(eos, int) else eos)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logprobs_are_the_unwarped_policy_and_match_the_learner(backend, policy, tokenizer, chat_prompts, temperature):
    sampling = SamplingConfig(max_new_tokens=16, min_new_tokens=1, temperature=temperature, top_k=20)
    gen = backend.generate(chat_prompts, sampling, seed=1)
    assert [len(lp) for lp in gen.logprobs] == [len(r) for r in gen.response_ids]
    assert max_logprob_gap(policy, gen, tokenizer.pad_token_id) <= LOGPROB_TOL
    if temperature != 1.0:  # the tempered distribution is measurably different: we did not return it
        tempered = learner_logprobs(policy, gen.prompt_ids, gen.response_ids, tokenizer.pad_token_id, temperature)
        gap = max((t - torch.tensor(g)).abs().max().item() for t, g in zip(tempered, gen.logprobs))
        assert gap > 0.05


def test_exact_length_when_min_equals_max(backend, chat_prompts, tokenizer):
    gen = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=7, min_new_tokens=7), seed=2)
    assert [len(r) for r in gen.response_ids] == [7] * len(chat_prompts)
    assert not any(t in eos_ids(tokenizer) for r in gen.response_ids for t in r)  # EOS suppressed until min


def test_min_new_tokens_suppresses_early_eos(backend, chat_prompts, tokenizer):
    # Short answers ("Paris.", "yes") end after a few tokens without the bound.
    free = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=40, min_new_tokens=0, top_k=1), seed=3)
    assert min(len(r) for r in free.response_ids) < 10
    bounded = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=40, min_new_tokens=10, top_k=1), seed=3)
    assert all(10 <= len(r) <= 40 for r in bounded.response_ids)
    assert not any(t in eos_ids(tokenizer) for r in bounded.response_ids for t in r[:10])


def test_eos_ends_and_is_kept_once(backend, chat_prompts, tokenizer):
    gen = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=40, min_new_tokens=0, top_k=1), seed=4)
    eos = eos_ids(tokenizer)
    stopped = [r for r in gen.response_ids if r[-1] in eos]
    assert stopped, "greedy SmolLM2 answers at least one of these questions within 40 tokens"
    for r, lp, text in zip(gen.response_ids, gen.logprobs, gen.texts):
        assert len(r) <= 40 and len(lp) == len(r)
        assert not any(t in eos for t in r[:-1]), "nothing (no padding, no second EOS) after the first EOS"
        assert "<|im_end|>" not in text and text == text.strip()
    # Greedy, unconstrained: the short factual answer stops on EOS well before the bound.
    paris = gen.texts[1]
    assert "Paris" in paris and gen.response_ids[1][-1] in eos


def test_stop_string_ends_the_response_at_the_token_that_completes_it(backend, chat_prompts, tokenizer):
    gen = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=40, min_new_tokens=0, top_k=1, stop=["."]), seed=5)
    hits = 0
    for r in gen.response_ids:
        before, full = tokenizer.decode(r[:-1], skip_special_tokens=True), tokenizer.decode(r, skip_special_tokens=True)
        assert "." not in before
        if "." in full:
            hits += 1
        else:  # no stop string: ended by EOS or the length bound
            assert r[-1] in eos_ids(tokenizer) or len(r) == 40
    assert hits >= len(chat_prompts) // 2
    assert all(t.endswith(".") for t, r in zip(gen.texts, gen.response_ids) if "." in t)


def test_same_seed_same_samples_other_seed_other_samples(backend, chat_prompts):
    sampling = SamplingConfig(max_new_tokens=12, min_new_tokens=12, top_k=0, temperature=1.0)
    a, b, c = (backend.generate(chat_prompts, sampling, seed=s) for s in (7, 7, 8))
    assert a.response_ids == b.response_ids
    assert a.response_ids != c.response_ids


def test_generation_record_is_consistent(backend, chat_prompts, tokenizer):
    gen: Generation = backend.generate(chat_prompts, SamplingConfig(max_new_tokens=8, min_new_tokens=1), seed=9)
    assert gen.prompt_ids == chat_prompts
    assert gen.num_tokens == sum(len(r) for r in gen.response_ids) > 0
    assert gen.seconds > 0
    assert gen.texts == [t.strip() for t in tokenizer.batch_decode(gen.response_ids, skip_special_tokens=True)]
