"""Generation with Hugging Face `generate` (any causal LM, CPU or GPU)."""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from services.config.schema import SamplingConfig
from services.rollout.base import Generation, GenerationBackend


class HFBackend(GenerationBackend):
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int) -> Generation:
        start = time.perf_counter()
        torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, p in enumerate(prompt_ids):  # left padding
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attention[i, width - len(p) :] = 1
        out = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention.to(self.device),
            do_sample=True,
            temperature=sampling.temperature,
            top_k=sampling.top_k or None,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.min_new_tokens,
            stop_strings=sampling.stop or None,
            tokenizer=self.tokenizer if sampling.stop else None,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, width:].cpu()
        # Raw logits (before temperature/top-k): PPO needs log-probs of the policy itself.
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1).cpu()
        token_logprobs = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        eos_ids = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        responses, lps = [], []
        for row, row_lp in zip(new_tokens.tolist(), token_logprobs.tolist()):
            end = response_end(row, eos_ids, sampling.stop, self.tokenizer)
            responses.append(row[:end])
            lps.append(row_lp[:end])
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return Generation(prompt_ids, responses, lps, [t.strip() for t in texts], time.perf_counter() - start)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """A full or partial state dict (LoRA sends only the merged adapted weights); unknown names are errors."""
        unexpected = self.model.load_state_dict(state_dict, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"weights the generation model does not have: {unexpected[:3]}")


def response_end(tokens: list[int], eos_ids: set[int], stop: list[str], tokenizer: PreTrainedTokenizerBase) -> int:
    """Length of the sampled response inside a padded `generate` row.

    A row ends after its first EOS, or after the token that completed a stop string. Everything after
    that is padding `generate` appended once the row finished; it must not reach PPO as if sampled
    (with pad = EOS, as for SmolLM2, a stop-string row would otherwise gain an unsampled EOS, and with
    another pad token it would run to max_new_tokens).
    """
    end = next((i + 1 for i, tok in enumerate(tokens) if tok in eos_ids), len(tokens))
    if stop:
        for i in range(end):
            text = tokenizer.decode(tokens[: i + 1], skip_special_tokens=True)
            if any(s in text for s in stop):
                return i + 1
    return end


def _as_list(x: int | list[int] | None) -> list[int]:
    if x is None:
        return []
    return [x] if isinstance(x, int) else list(x)
