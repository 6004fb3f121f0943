"""RolloutActor: turns dialogue contexts into sampled responses with per-token log-probs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray
import torch

from services.actors.common import quiet_process
from services.config import RootConfig
from services.data import DialogueExample
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
        from services.models import load_causal_lm, load_tokenizer, pick_device, pick_dtype
        from services.rollout.hf import HFBackend

        self.config = config
        self.rank = rank
        device = pick_device()
        self.tokenizer = load_tokenizer(config.model.name_or_path)
        model = load_causal_lm(config.model.name_or_path, pick_dtype(config.model.dtype, device), device)
        self.backend = HFBackend(model, self.tokenizer)
        self.weights_version = 0

    def generate(self, examples: list[DialogueExample], seed: int) -> RolloutShard:
        from services.rollout.prompts import encode_prompts

        prompts = encode_prompts(
            self.tokenizer, [e.context for e in examples], self.config.model.use_chat_template, self.config.model.max_prompt_tokens
        )
        generation = self.backend.generate(prompts, self.config.rollout.sampling, seed)
        return RolloutShard(examples, generation, self.weights_version)

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> float:
        """Returns the seconds the reload took."""
        start = time.perf_counter()
        self.backend.load_weights(state_dict)
        self.weights_version = version
        return time.perf_counter() - start
