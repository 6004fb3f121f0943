"""vLLM through Ray: the rollout actor on a real engine, the object-store weight sync, a full training run.

`PolicySource` below stands in for the learner only as the *holder* of a state dict (the learner's own
`policy_state()` is exactly such a detached CPU copy); the sync path under test — object store → rollout
actor → engine reload — is the production one.
"""

from __future__ import annotations

import json

import pytest
import ray
import torch

from services.actors.rollout import RolloutActor
from services.config.schema import SamplingConfig
from services.data.dialogues import DialogueExample
from services.models.loading import load_tokenizer
from services.rollout.weight_sync import ObjectStoreWeightSync, make_weight_sync

from .helpers import hf_model, max_logprob_gap, require_vllm, vllm_config

pytestmark = pytest.mark.slow
LOGPROB_TOL = 1e-4

EXAMPLES = [
    DialogueExample(context=("hi there", "hello, how are you?"), reference="fine thanks", label=None),
    DialogueExample(context=("what do you like to eat?",), reference="pizza", label=None),
    DialogueExample(context=("do you know any jokes?",), reference="yes", label=None),
    DialogueExample(context=("where are you from?",), reference="the internet", label=None),
]


@ray.remote
class PolicySource:
    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state

    def policy_state(self, changed_only: bool = False) -> dict[str, torch.Tensor]:
        return self.state  # a full state dict: every weight "changed"


@pytest.fixture(scope="module")
def actor(ray_local, tiny_vllm_path):
    require_vllm()
    handle = RolloutActor.options(num_cpus=1).remote(vllm_config(tiny_vllm_path), 0)
    yield handle
    ray.kill(handle)


def test_the_rollout_actor_runs_vllm_and_says_so(actor):
    info = ray.get(actor.describe.remote())
    assert info == {"backend": "vllm", "reason": "rollout.backend=vllm", "device": "cpu"}


def test_object_store_sync_puts_the_learners_weights_into_the_engine(actor, tiny_vllm_path):
    pad = load_tokenizer(tiny_vllm_path).pad_token_id
    new = hf_model(tiny_vllm_path)
    g = torch.Generator().manual_seed(1)
    new.load_state_dict({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in new.state_dict().items()})
    source = PolicySource.remote({k: v.clone() for k, v in new.state_dict().items()})

    sync = make_weight_sync(vllm_config(tiny_vllm_path), source, [actor])
    assert isinstance(sync, ObjectStoreWeightSync)  # no GPUs requested: the CPU path
    seconds = sync.sync(version=7)
    assert 0 < seconds < 60

    shard = ray.get(actor.generate.remote(EXAMPLES, 3))
    assert shard.weights_version == 7
    assert max_logprob_gap(new, shard.generation, pad) <= LOGPROB_TOL
    assert max_logprob_gap(hf_model(tiny_vllm_path), shard.generation, pad) > 0.05


def test_a_sampling_override_applies_to_one_call(actor):
    greedy = SamplingConfig(max_new_tokens=5, min_new_tokens=5, top_k=1)
    a = ray.get(actor.generate.remote(EXAMPLES, 1, greedy)).generation
    b = ray.get(actor.generate.remote(EXAMPLES, 2, greedy)).generation
    assert [len(r) for r in a.response_ids] == [5] * 4
    assert a.response_ids == b.response_ids  # greedy: the seed does not matter
    default = ray.get(actor.generate.remote(EXAMPLES, 1)).generation  # the run's sampling: 24 tokens max
    assert max(len(r) for r in default.response_ids) > 5


def test_a_full_training_run_with_the_vllm_backend(ray_local, tiny_vllm_path, tmp_path):
    require_vllm()
    from services.launch import main

    args = ["preset=smoke", "control.port=0", f"model.name_or_path={tiny_vllm_path}", "rollout.backend=vllm",
            "trainer.iterations=2", f"run.root={tmp_path}", "run.name=v"]
    assert main(args) == 0  # rollout.backend=vllm never falls back: success means vLLM generated
    records = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for r in records:
        assert r["tokens"] > 0 and r["ppo_steps"] > 0
        assert r["time/sync"] > 0  # the weight sync is timed every iteration
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # iteration 0 samples the reference policy
    assert records[1]["kl"] > 0.0
