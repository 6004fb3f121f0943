"""NCCL weight sync (learner → vLLM engine) on real GPUs. GPU-only: skips without ≥ 2 CUDA devices and a
CUDA build of vLLM (NCCL cannot place two ranks on one GPU). Never run on the CPU machines this project is
built on; see services/rollout/weight_sync.py.

`Sender` stands in for the learner actor: it holds the policy on its GPU and mixes in the production
`NcclWeightSenderMixin` exactly as the learner actor does. That stand-in is the only non-production piece.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _cuda_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        from services.rollout.vllm import import_vllm, platform_device

        import_vllm()
        return platform_device() == "cuda"
    except Exception:
        return False


requires_two_gpus_and_cuda_vllm = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.device_count() >= 2 and _cuda_vllm()),
    reason="needs 2 CUDA GPUs and the CUDA build of vLLM",
)


@requires_two_gpus_and_cuda_vllm
def test_nccl_broadcast_puts_the_learners_weights_into_the_engine(tmp_path):
    import ray

    from services.actors.rollout import RolloutActor
    from services.models.loading import load_tokenizer
    from services.rollout.weight_sync import NcclWeightSenderMixin, NcclWeightSync, make_weight_sync

    from .helpers import build_tiny_vllm_model, hf_model, max_logprob_gap, vllm_config

    path = str(build_tiny_vllm_model(tmp_path / "tiny"))
    config = vllm_config(path)
    config.model.dtype = "bfloat16"
    config.rollout.num_gpus = 1
    config.learner.num_gpus = 1

    @ray.remote(num_gpus=1)
    class Sender(NcclWeightSenderMixin):
        def __init__(self) -> None:
            model = hf_model(path).to("cuda", torch.bfloat16)
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g).to(p))
            self.policy = model

        def _sync_module(self) -> torch.nn.Module:
            return self.policy

        def cpu_state(self) -> dict[str, torch.Tensor]:
            return {k: v.float().cpu() for k, v in self.policy.state_dict().items()}

    ray.init(address="local", num_gpus=2, include_dashboard=False)
    try:
        sender = Sender.remote()
        engine = RolloutActor.options(num_gpus=1).remote(config, 0)
        sync = make_weight_sync(config, sender, [engine])
        assert isinstance(sync, NcclWeightSync)
        sync.setup()
        assert sync.sync(version=1) > 0

        from services.data.dialogues import DialogueExample

        examples = [DialogueExample(context=(q,), reference=None, label=None) for q in ("hi", "how are you?", "tell me more")]
        shard = ray.get(engine.generate.remote(examples, 0))
        assert shard.weights_version == 1
        learner = hf_model(path)
        learner.load_state_dict(ray.get(sender.cpu_state.remote()))
        pad = load_tokenizer(path).pad_token_id
        assert max_logprob_gap(learner, shard.generation, pad) <= 2e-2  # bf16 engine vs fp32 recomputation
        assert max_logprob_gap(hf_model(path), shard.generation, pad) > 0.1  # not the initial weights
    finally:
        ray.shutdown()
