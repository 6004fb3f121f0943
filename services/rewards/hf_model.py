"""Learned reward model: any Hugging Face sequence-classification model, scored on (context, response)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class HFModelParams(RewardParams):
    path: str = Field(description="Local model dir, or a hub id (needs network unless cached).")
    label_index: int = Field(0, ge=0, description="Which output logit is the reward.")
    output: Literal["logit", "prob"] = Field(
        "logit", description="Raw logit, or its probability (softmax over labels; sigmoid for one-label models)."
    )
    input: Literal["pair", "response"] = Field(
        "pair",
        description="'pair' = (context turns joined by newlines, response) as a text pair, as preference RMs "
        "expect; 'response' = the response alone, as sentiment/toxicity classifiers expect.",
    )
    max_length: int = Field(512, gt=0, description="Token limit; pairs lose their oldest context tokens first.")
    batch_size: int = Field(16, gt=0)
    device: str | None = Field(None, description="torch device; None = CUDA when available, else CPU.")


class HFModelReward(RewardFunction):
    kind = "hf_model"
    Params = HFModelParams
    params: HFModelParams

    def __init__(self, params: HFModelParams | None = None) -> None:
        if params is None:
            raise ValueError("reward 'hf_model' needs params.path")
        super().__init__(params)
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.device = torch.device(self.params.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.params.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.params.path, dtype=torch.float32)
        self.model.to(self.device).eval()
        num_labels = self.model.config.num_labels
        if self.params.label_index >= num_labels:
            raise ValueError(
                f"reward 'hf_model': label_index {self.params.label_index} is out of range; "
                f"{self.params.path} has {num_labels} output label(s)"
            )
        if self.tokenizer.pad_token is None:  # decoder RMs (GPT-2 style) often ship without one
            if self.tokenizer.eos_token is None:
                raise ValueError(f"reward 'hf_model': the tokenizer of {self.params.path} has no pad or eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.params.input == "pair":
            self.tokenizer.truncation_side = "left"

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        scores: list[float] = []
        size = self.params.batch_size
        for start in range(0, len(batch), size):
            responses = batch.responses[start : start + size]
            contexts = ["\n".join(turns) for turns in batch.contexts[start : start + size]]
            scores.extend(self._forward(contexts, responses))
        return scores

    def _forward(self, contexts: list[str], responses: list[str]) -> list[float]:
        torch = self._torch
        texts = (contexts, responses) if self.params.input == "pair" else (responses,)
        encoded = self.tokenizer(
            *texts, truncation=True, max_length=self.params.max_length, padding=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            logits = self.model(**encoded).logits.float()
        if self.params.output == "prob":
            probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            return probs[:, self.params.label_index].tolist()
        return logits[:, self.params.label_index].tolist()
