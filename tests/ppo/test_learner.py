"""The learner's PPO update on the tiny model: what it computes and what an update does to the policy."""

import pytest
import torch

from services.config import ModelConfig, RewardConfig, SamplingConfig, TrainerConfig
from services.models import load_tokenizer
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
    recomputed = learner._logprobs(learner.policy, batch, torch.arange(batch.size))
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
    before = (learner._logprobs(learner.policy, batch, everything) * batch.response_mask).sum(dim=1).detach()
    scores = torch.tensor([[1.0], [0.0]] * (batch.size // 2))  # even rows rewarded
    stats = learner.train(gen.prompt_ids, gen.response_ids, scores, objective())
    after = (learner._logprobs(learner.policy, batch, everything) * batch.response_mask).sum(dim=1).detach()
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
    for a, b in zip(learner.value.state_dict().values(), fresh.value.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.optimizer.state_dict()["state"].keys() == learner.optimizer.state_dict()["state"].keys()
