"""N-gram overlap rewards against the reference response: BLEU (nltk), SacreBLEU and ROUGE, per sample."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class BleuParams(RewardParams):
    max_order: int = Field(4, ge=1, le=4, description="Highest n-gram order, uniform weights (BLEU-4 by default).")
    smoothing: int = Field(
        1,
        ge=0,
        le=7,
        description="nltk SmoothingFunction method (Chen & Cherry 2014); 0 = none, 1 = epsilon for zero counts.",
    )


class BleuReward(RewardFunction):
    """nltk sentence BLEU on whitespace-split tokens, the tokenisation of the BLEU metric in docs/ALGORITHMS.md §12.

    nltk rather than sacrebleu so that `bleu` and `sacrebleu` are genuinely different signals. Smoothing defaults
    to method1: without it nearly every short response scores exactly 0 and the reward carries no signal.
    """
    score_range = (0.0, 1.0)

    kind = "bleu"
    Params = BleuParams
    params: BleuParams

    def __init__(self, params: BleuParams | None = None) -> None:
        super().__init__(params)
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        self._bleu = sentence_bleu
        self._smoothing = getattr(SmoothingFunction(), f"method{self.params.smoothing}")
        self._weights = (1.0 / self.params.max_order,) * self.params.max_order

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        references = batch.require_references(self.kind)
        with warnings.catch_warnings():  # nltk warns on every zero n-gram count when unsmoothed
            warnings.simplefilter("ignore", UserWarning)
            return [
                self._bleu([ref.split()], hyp.split(), weights=self._weights, smoothing_function=self._smoothing)
                for ref, hyp in zip(references, batch.responses)
            ]


class SacreBleuParams(RewardParams):
    tokenize: Literal["intl", "13a", "char", "none"] = Field("intl", description="sacrebleu tokenizer.")
    lowercase: bool = False


class SacreBleuReward(RewardFunction):
    """sacrebleu sentence BLEU / 100 (exponential smoothing, effective order), tokenize='intl' as in [000]."""
    score_range = (0.0, 1.0)

    kind = "sacrebleu"
    Params = SacreBleuParams
    params: SacreBleuParams

    def __init__(self, params: SacreBleuParams | None = None) -> None:
        super().__init__(params)
        from sacrebleu.metrics import BLEU

        self._bleu = BLEU(tokenize=self.params.tokenize, lowercase=self.params.lowercase, effective_order=True)

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        references = batch.require_references(self.kind)
        return [
            min(self._bleu.sentence_score(hyp, [ref]).score / 100.0, 1.0)  # clip 1.0000000000000004
            for ref, hyp in zip(references, batch.responses)
        ]


class RougeParams(RewardParams):
    variant: Literal["rouge1", "rouge2", "rougeL"] = "rouge2"
    use_stemmer: bool = True


class RougeReward(RewardFunction):
    """rouge-score F-measure of one variant (ROUGE-2 with Porter stemming by default, as in [000])."""
    score_range = (0.0, 1.0)

    kind = "rouge"
    Params = RougeParams
    params: RougeParams

    def __init__(self, params: RougeParams | None = None) -> None:
        super().__init__(params)
        from rouge_score.rouge_scorer import RougeScorer

        self._scorer = RougeScorer([self.params.variant], use_stemmer=self.params.use_stemmer)

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        references = batch.require_references(self.kind)
        variant = self.params.variant
        return [
            self._scorer.score(target=ref, prediction=hyp)[variant].fmeasure
            for ref, hyp in zip(references, batch.responses)
        ]
