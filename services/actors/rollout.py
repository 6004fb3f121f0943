"""RolloutActor: turns dialogue contexts into sampled responses with per-token log-probs.

The generation backend (HF or vLLM) is chosen by `services.rollout.factory` from `rollout.backend`; the
choice and its reason are printed once (Ray forwards it to the driver's console) and available from
`describe()`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import ray
import torch

from services.actors.common import ActorStateLost, quiet_process
from services.config.schema import RootConfig, SamplingConfig
from services.data.dialogues import DialogueExample
from services.rollout.base import Generation


@dataclass
class RolloutShard:
    """One rollout actor's share of an iteration: the examples and what was generated for them."""

    examples: list[DialogueExample]
    generation: Generation
    weights_version: int


@ray.remote
class RolloutActor:
    def __init__(self, config: RootConfig, rank: int) -> None:
        quiet_process()
        from services.models.loading import load_tokenizer, resolve_model_path
        from services.rollout.factory import build_backend

        self.config = config
        self.rank = rank
        model_path = resolve_model_path(config.model.name_or_path)
        self.tokenizer = load_tokenizer(model_path)
        self.backend, self.choice = build_backend(config, model_path)
        self.weights_version = 0
        print(f"[rollout {rank}] {self.choice.describe()}", file=sys.stderr, flush=True)

    def pid(self) -> int:
        return os.getpid()

    def current_weights_version(self) -> int:
        return self.weights_version

    def describe(self) -> dict[str, Any]:
        """Which backend runs here and why; `device` is where it generates ('cpu' / 'cuda')."""
        device = getattr(self.backend, "device", "cpu")
        return {"backend": self.choice.name, "reason": self.choice.reason, "device": str(getattr(device, "type", device))}

    def generate(
        self, examples: list[DialogueExample], seed: int, sampling: SamplingConfig | None = None, weights_version: int | None = None
    ) -> RolloutShard:
        """Sample one response per example. `sampling` overrides the run's `rollout.sampling` for this call
        (e.g. greedy evaluation); the engine's length bound still applies.

        Idempotent for a given seed and weights, so Ray may retry it on a restarted actor; `weights_version`
        (the version the driver last sent) makes such a retry fail loudly instead of sampling with the base
        model's weights a restarted process starts from."""
        from services.rollout.prompts import encode_prompts

        if weights_version is not None and weights_version != self.weights_version:
            raise ActorStateLost(f"rollout actor {self.rank} holds weights version {self.weights_version}, the driver sent "
                                 f"{weights_version}: it was restarted")

        prompts = encode_prompts(
            self.tokenizer, [e.context for e in examples], self.config.model.use_chat_template, self.config.model.max_prompt_tokens
        )
        generation = self.backend.generate(prompts, sampling or self.config.rollout.sampling, seed)
        return RolloutShard(examples, generation, self.weights_version)

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> float:
        """Load the learner's policy (object-store path). Returns the seconds the reload took."""
        start = time.perf_counter()
        self.backend.load_weights(state_dict)
        self.weights_version = version
        return time.perf_counter() - start

    # --- NCCL weight sync (GPU + vLLM only; see services/rollout/weight_sync.py) --------------------
    def weight_receiver_ranks(self) -> int:
        """NCCL ranks this actor contributes: one per vLLM worker (tensor-parallel size)."""
        self._require_vllm_cuda()
        return self.config.rollout.tensor_parallel_size

    def init_weight_receiver(self, address: str, port: int, rank_offset: int, world_size: int) -> None:
        self._require_vllm_cuda()
        self.backend.collective_rpc("crlhf_init_weight_group", address, port, rank_offset, world_size)

    def receive_weights(self, metadata: list[Any], version: int) -> float:
        """Receive a broadcast from the learner into every worker; returns the seconds it took."""
        self._require_vllm_cuda()
        start = time.perf_counter()
        self.backend.collective_rpc("crlhf_receive_weights", metadata)
        self.backend.reset_cache()
        self.weights_version = version
        return time.perf_counter() - start

    def _require_vllm_cuda(self) -> None:
        info = self.describe()
        if info["backend"] != "vllm" or info["device"] != "cuda":
            raise RuntimeError(f"NCCL weight sync needs a vLLM engine on CUDA; this actor runs {info}")
