"""What a generation backend returns, and the interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from services.config.schema import SamplingConfig


@dataclass
class Generation:
    """One batch of sampled responses.

    prompt_ids / response_ids: token ids per sequence (response ends with EOS if the model stopped).
    logprobs: per response token, log π(a_t|s_t) of the *unwarped* model distribution (before
    temperature / top-k / top-p), which is what PPO's old log-probs are. vLLM returns the same by default.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    logprobs: list[list[float]]
    texts: list[str]
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)


class GenerationBackend(ABC):
    """Generates from token-id prompts and accepts new policy weights."""

    @abstractmethod
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int) -> Generation: ...

    @abstractmethod
    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None: ...
