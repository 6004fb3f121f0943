"""LoRA through peft on the tiny model: the reference is the base model (adapters disabled, no copy), only
adapters train, the merged weights reach a generation engine exactly, and a LoRA checkpoint resumes exactly."""

from __future__ import annotations

import torch

from services.config.overrides import build_config
from services.models.loading import load_causal_lm, load_tokenizer
from services.ppo.batch import collate
from services.ppo.learner import PPOLearner
from services.ppo.iteration import LearnerLoop
from services.rollout.hf import HFBackend

from ppo.loop import fixed_rollout

LORA = ["preset=smoke", "objective=ppo", "model.lora.r=4", "trainer.advantage=grpo", "rollout.samples_per_prompt=2"]


def learner_for(config) -> PPOLearner:
    return PPOLearner(config.model, config.trainer, LearnerLoop.num_streams(config), load_tokenizer(config.model.name_or_path).pad_token_id)


def test_the_reference_is_the_base_model_exactly_and_no_critic_is_built():
    config = build_config(LORA)
    learner = learner_for(config)
    rollout = fixed_rollout(config, 0)
    batch = collate(rollout.prompt_ids, rollout.response_ids, learner.pad_id)
    rows = torch.arange(batch.size)
    base = load_causal_lm(config.model.name_or_path, torch.float32, learner.device).eval()
    with torch.no_grad():
        width = batch.response_ids.shape[1]
        from services.ppo.batch import response_logprobs

        expected = response_logprobs(base(**batch.rows(rows, learner.device), logits_to_keep=width).logits.float(), batch.response_ids)
        assert torch.equal(learner._logprobs(batch, rows, reference=True), expected)
        assert torch.equal(learner._logprobs(batch, rows), expected)  # B = 0 at start: the policy is the base too
    assert learner.models.reference is None and learner.models.value is None
    trained = learner.models.trained_parameters()
    assert trained and all("lora_" in n for n, p in learner.policy.named_parameters() if p.requires_grad)


def test_an_update_moves_only_adapters_and_the_merged_weights_reach_the_engine():
    config = build_config(LORA)
    learner = learner_for(config)
    loop = LearnerLoop(config, learner, load_tokenizer(config.model.name_or_path))
    frozen = {n: p.detach().clone() for n, p in learner.policy.named_parameters() if not p.requires_grad}
    from services.coordinator import protocol
    from services.coordinator.state import CoordinatorState

    state = CoordinatorState(config)
    rollout = fixed_rollout(config, 0)
    loop.train(0, protocol.begin_iteration(state, 0), rollout, None)
    assert all(torch.equal(p, frozen[n]) for n, p in learner.policy.named_parameters() if not p.requires_grad)

    changed = learner.policy_state(changed_only=True)
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only the adapted projections travel
    engine = HFBackend(load_causal_lm(config.model.name_or_path, torch.float32, learner.device), load_tokenizer(config.model.name_or_path))
    engine.load_weights(changed)
    batch = collate(rollout.prompt_ids, rollout.response_ids, learner.pad_id)
    rows = torch.arange(batch.size)
    from services.ppo.batch import response_logprobs

    with torch.no_grad():
        width = batch.response_ids.shape[1]
        served = response_logprobs(engine.model(**batch.rows(rows, learner.device), logits_to_keep=width).logits.float(), batch.response_ids)
        trained = learner._logprobs(batch, rows)
    assert not torch.equal(trained, learner._logprobs(batch, rows, reference=True))  # the update did something
    assert torch.allclose(served, trained, atol=1e-5)


def test_a_lora_checkpoint_resumes_exactly(tmp_path):
    config = build_config(LORA)
    tokenizer = load_tokenizer(config.model.name_or_path)
    from services.coordinator import protocol
    from services.coordinator.state import CoordinatorState

    def run(loop: LearnerLoop, state: CoordinatorState, k: int) -> dict:
        result = loop.train(k, protocol.begin_iteration(state, k), fixed_rollout(config, k), None)
        protocol.commit(state, k, result)
        return result

    a_state, a = CoordinatorState(config), LearnerLoop(config, learner_for(config), tokenizer)
    run(a, a_state, 0)
    a.learner.save(tmp_path / "ckpt", tokenizer)
    saved = a_state.state_dict()
    reference = run(a, a_state, 1)

    b_state, b = CoordinatorState(config), LearnerLoop(config, learner_for(config), tokenizer)
    protocol.restore(b_state, saved)
    b.learner.load(tmp_path / "ckpt")
    resumed = run(b, b_state, 1)
    assert {k: v for k, v in resumed["record"].items() if not k.startswith(("time/", "memory/"))} == {
        k: v for k, v in reference["record"].items() if not k.startswith(("time/", "memory/"))}
    for (name, p), q in zip(a.learner.policy.named_parameters(), b.learner.policy.parameters()):
        assert torch.equal(p, q), name
    adapter = tmp_path / "ckpt" / "policy" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 2_000_000 and not (tmp_path / "ckpt" / "policy" / "model.safetensors").exists()
