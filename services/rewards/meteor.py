"""METEOR reward (RL4LMs / [000] task reward): nltk `single_meteor_score` per response against its reference."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from services.rewards.base import RewardFunction, RewardParams, ScoringBatch


class MeteorParams(RewardParams):
    rl4lms_compat: bool = Field(
        False,
        description="Reproduce RL4LMs: the j-th response of a batch gets the mean METEOR of responses 1..j "
        "instead of its own score (docs/ALGORITHMS.md §12, 'RL4LMs reward quirk').",
    )


def tokenize(text: str) -> list[str]:
    """nltk word tokens without punkt (not available offline); differs only at sentence-internal periods."""
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


class MeteorReward(RewardFunction):
    score_range = (0.0, 1.0)
    kind = "meteor"
    Params = MeteorParams
    params: MeteorParams

    def __init__(self, params: MeteorParams | None = None) -> None:
        super().__init__(params)
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import single_meteor_score

        from services.rewards.wordnet import ensure_wordnet

        ensure_wordnet()
        wordnet.ensure_loaded()  # parse the index now (seconds), not inside the first scoring call
        self._meteor = single_meteor_score

    def _score(self, batch: ScoringBatch) -> Sequence[float]:
        references = batch.require_references(self.kind)
        scores = [self._meteor(tokenize(ref), tokenize(hyp)) for ref, hyp in zip(references, batch.responses)]
        if self.params.rl4lms_compat:
            return running_mean(scores)
        return scores


def running_mean(values: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for j, value in enumerate(values, start=1):
        total += value
        out.append(total / j)
    return out
