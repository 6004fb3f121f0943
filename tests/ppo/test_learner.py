"""The learner's PPO update on the tiny model: what it computes and what an update does to the policy."""

import pytest
import torch

from services.config.schema import ModelConfig, RewardConfig, SamplingConfig, TrainerConfig
from services.models.loading import load_tokenizer
from services.objectives.composite import FixedWeightPPO, PPOConfig
from services.ppo.batch import collate
from services.ppo.learner import PPOLearner
from services.rollout.hf import HFBackend
from services.rollout.prompts import encode_prompts

MODEL = ModelConfig(name_or_path="tiny-llama")
CONTEXTS = [("Hello", "Hi there", "How are you?"), ("What is AI?",), ("Do you like music?",), ("Bye",)] * 2


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MODEL.name_or_path)


def make_learner(tokenizer, **trainer):
    """float32 unless a test asks for mixed precision: the exactness checks below need it."""
    trainer = {"mixed_precision": "fp32", **trainer}
    return PPOLearner(MODEL, TrainerConfig(**trainer), num_streams=1, pad_id=tokenizer.pad_token_id)


def rollout(learner, tokenizer, seed=0):
    prompts = encode_prompts(tokenizer, CONTEXTS, True, 64)
    return HFBackend(learner.policy, tokenizer).generate(prompts, SamplingConfig(max_new_tokens=6, min_new_tokens=6), seed)


def objective():
    return FixedWeightPPO(PPOConfig(), {"r": RewardConfig(kind="length")})


def test_recomputed_old_logprobs_match_the_generation_logprobs(tokenizer):
    learner = make_learner(tokenizer)
    gen = rollout(learner, tokenizer)
    batch = collate(gen.prompt_ids, gen.response_ids, tokenizer.pad_token_id)
    recomputed = learner._logprobs(batch, torch.arange(batch.size))
    for i, logprobs in enumerate(gen.logprobs):
        assert recomputed[i, : len(logprobs)].tolist() == pytest.approx(logprobs, abs=1e-4)


def test_token_minibatches_cover_every_response_token_once_per_epoch(tokenizer):
    learner = make_learner(tokenizer, minibatch_size=5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    for unit in ("token", "sequence"):
        learner.cfg = TrainerConfig(minibatch_size=2 if unit == "sequence" else 5, minibatch_unit=unit)
        chunks = learner._minibatches(mask)
        seen = sorted(map(tuple, torch.cat(chunks).tolist()))
        assert seen == sorted(map(tuple, mask.nonzero().tolist()))
        if unit == "sequence":  # whole episodes stay together
            assert all(len(set(c[:, 0].tolist())) <= 2 for c in chunks)


def test_an_update_raises_the_likelihood_of_rewarded_responses(tokenizer):
    torch.manual_seed(0)
    learner = make_learner(tokenizer, learning_rate=1e-3, epochs=4, minibatch_size=16)
    gen = rollout(learner, tokenizer)
    batch = collate(gen.prompt_ids, gen.response_ids, tokenizer.pad_token_id)
    everything = torch.arange(batch.size)
    before = (learner._logprobs(batch, everything) * batch.response_mask).sum(dim=1).detach()
    scores = torch.tensor([[1.0], [0.0]] * (batch.size // 2))  # even rows rewarded
    stats = learner.train(gen.prompt_ids, gen.response_ids, scores, objective())
    after = (learner._logprobs(batch, everything) * batch.response_mask).sum(dim=1).detach()
    change = after - before
    assert change[0::2].mean() > change[1::2].mean() + 0.1
    assert stats["ppo_steps"] == 4 * 3  # 48 tokens / 16 per minibatch × 4 epochs
    assert stats["kl"] == pytest.approx(0.0, abs=1e-5)  # the rollout came from the reference weights


def test_checkpoint_round_trip_restores_policy_value_and_optimizer(tokenizer, tmp_path):
    learner = make_learner(tokenizer, learning_rate=1e-3, epochs=1, minibatch_size=16)
    gen = rollout(learner, tokenizer)
    learner.train(gen.prompt_ids, gen.response_ids, torch.ones(len(CONTEXTS), 1), objective())
    learner.save(tmp_path, tokenizer)
    fresh = make_learner(tokenizer)
    fresh.load(tmp_path)
    for (name, a), b in zip(learner.policy.state_dict().items(), fresh.policy.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(learner.models.value.state_dict().values(), fresh.models.value.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()


def test_bf16_mixed_precision_keeps_float32_master_weights_that_small_steps_still_move(tokenizer):
    """The bug this guards against: a policy stored in bf16 ignores AdamW steps of lr=1e-6 entirely."""
    learner = make_learner(tokenizer, mixed_precision="bf16", learning_rate=1e-6, epochs=1, minibatch_size=16)
    models = [learner.policy, learner.models.value, learner.models.reference]
    assert all(p.dtype == torch.float32 for m in models for p in m.parameters())
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    gen = rollout(learner, tokenizer)
    stats = learner.train(gen.prompt_ids, gen.response_ids, torch.ones(len(CONTEXTS), 1), objective())
    moved = [k for k, v in learner.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2
    # bf16 compute of the same weights on both sides of the ratio: its first minibatch is exactly on-policy
    assert stats["approx_kl"] < 1e-3
    assert stats["kl"] == 0.0  # the reference runs the policy's exact bf16 arithmetic


def test_bf16_logprobs_stay_close_to_float32_and_weights_leave_in_the_rollout_dtype(tokenizer):
    exact, mixed = make_learner(tokenizer), make_learner(tokenizer, mixed_precision="bf16")
    gen = rollout(exact, tokenizer)
    batch = collate(gen.prompt_ids, gen.response_ids, tokenizer.pad_token_id)
    rows = torch.arange(batch.size)
    gap = (exact._logprobs(batch, rows) - mixed._logprobs(batch, rows)) * batch.response_mask
    assert mixed._logprobs(batch, rows).dtype == torch.float32
    assert 0 < gap.abs().max() < 0.1
    assert {v.dtype for v in mixed.policy_state().values()} == {torch.float32}  # model.dtype=auto is float32 on CPU
    mixed.models.rollout_dtype = torch.bfloat16  # as on a GPU, where the engines hold bf16
    assert {v.dtype for v in mixed.policy_state().values()} == {torch.bfloat16}


def test_auto_mixed_precision_follows_native_bf16_support():
    from services.models.loading import native_bf16, pick_autocast_dtype

    cpu = torch.device("cpu")
    assert pick_autocast_dtype("fp32", cpu) is None and pick_autocast_dtype("bf16", cpu) is torch.bfloat16
    assert pick_autocast_dtype("auto", cpu) is (torch.bfloat16 if native_bf16(cpu) else None)
