"""Reward function interface: a batch of dialogue turns in, one finite float per response out."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class RewardError(ValueError):
    """Bad reward input or output (NaN score, missing reference or label); names the offending row."""


@dataclass(frozen=True)
class ScoringBatch:
    contexts: list[list[str]]  # dialogue turns before the response, oldest first
    responses: list[str]  # generated responses (decoded text)
    references: list[str | None]  # reference responses (None if the dataset has none)
    labels: list[str | None]  # class label per example (e.g. topic) or None

    def __post_init__(self) -> None:
        sizes = {
            "contexts": len(self.contexts),
            "responses": len(self.responses),
            "references": len(self.references),
            "labels": len(self.labels),
        }
        if len(set(sizes.values())) != 1:
            raise RewardError(f"ScoringBatch fields differ in length: {sizes}")

    def __len__(self) -> int:
        return len(self.responses)

    def require_references(self, kind: str) -> list[str]:
        """The references, or a RewardError naming the first sample (1-based) without one."""
        for row, ref in enumerate(self.references):
            if not isinstance(ref, str):
                raise RewardError(f"reward '{kind}' needs a reference response; sample {row + 1} of the batch has none")
        return list(self.references)  # type: ignore[arg-type]

    def require_labels(self, kind: str) -> list[str]:
        """The labels, or a RewardError naming the first sample (1-based) without one."""
        for row, label in enumerate(self.labels):
            if not isinstance(label, str):
                raise RewardError(f"reward '{kind}' needs a class label; sample {row + 1} of the batch has none")
        return list(self.labels)  # type: ignore[arg-type]


class RewardParams(BaseModel):
    """Keyword parameters of one reward kind (`rewards.<name>.params`); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RewardFunction(ABC):
    """A reward kind. Subclasses set `kind` and `Params` and implement `_score`.

    Constructors take a validated `Params` instance and may load models; `validate_reward_params` only
    touches `Params`, so module-level imports of reward modules must stay light (no torch).
    """

    kind: ClassVar[str]
    Params: ClassVar[type[RewardParams]] = RewardParams
    # Closed range every score lies in, or None for unbounded kinds: a threshold outside it can never be met.
    score_range: ClassVar[tuple[float, float] | None] = None

    def __init__(self, params: RewardParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def score(self, batch: ScoringBatch) -> list[float]:
        """One finite float per response; RewardError on NaN/inf or a wrong number of scores."""
        if len(batch) == 0:
            return []
        scores = [float(s) for s in self._score(batch)]
        return check_scores(self.kind, scores, len(batch))

    @abstractmethod
    def _score(self, batch: ScoringBatch) -> Sequence[float]: ...


def check_scores(kind: str, scores: list[float], expected: int) -> list[float]:
    if len(scores) != expected:
        raise RewardError(f"reward '{kind}' returned {len(scores)} scores for {expected} responses")
    for row, value in enumerate(scores):
        if not math.isfinite(value):
            raise RewardError(f"reward '{kind}' gave a non-finite score ({value}) for sample {row + 1} of the batch")
    return scores


def _row(batch: ScoringBatch, i: int) -> ScoringBatch:
    return ScoringBatch([batch.contexts[i]], [batch.responses[i]], [batch.references[i]], [batch.labels[i]])


def _prompt_start(batch: ScoringBatch, i: int, width: int = 40) -> str:
    turn = batch.contexts[i][-1] if batch.contexts[i] else ""
    return turn[:width] + ("…" if len(turn) > width else "")


def score_samples(fn: RewardFunction, name: str, batch: ScoringBatch, on_error: str = "fail", iteration: int | None = None) -> list[float]:
    """Each response's score under `rewards.on_error` (fault.reward_on_error).

    A sample the reward raises on, or scores NaN/inf: 'fail' raises a RewardError naming the reward, the
    iteration and the sample (1-based within the batch, with the start of its prompt) and the fix; 'skip'
    gives NaN for it, which the learner drops (services/ppo/iteration.py). When the whole batch raises, the
    samples are scored one by one to find the ones at fault (only on this error path, so normal batches keep
    their batched speed); a batch error no single sample reproduces is re-raised.
    """
    if len(batch) == 0:
        return []
    where = f" at iteration {iteration}" if iteration is not None else ""
    try:
        scores = [float(s) for s in fn._score(batch)]
        failures: dict[int, str] = {}
    except Exception as err:  # noqa: BLE001 - a reward may raise anything; each sample is then tried alone
        scores, failures = [], {}
        for i in range(len(batch)):
            try:
                scores.append(float(fn._score(_row(batch, i))[0]))
            except Exception as one:  # noqa: BLE001
                scores.append(math.nan)
                failures[i] = f"raised {type(one).__name__}: {one}"
        if not failures:
            raise RewardError(f"reward '{name}'{where}: {type(err).__name__}: {err}") from None
    if len(scores) != len(batch):  # a broken reward, not a bad sample: never skipped
        raise RewardError(f"reward '{name}' (kind {fn.kind}) returned {len(scores)} scores for {len(batch)} responses")
    for i, value in enumerate(scores):
        if i not in failures and not math.isfinite(value):
            failures[i] = f"gave a non-finite score ({value})"
    if failures and on_error != "skip":
        i = min(failures)
        more = f" ({len(failures) - 1} more samples failed too)" if len(failures) > 1 else ""
        raise RewardError(
            f"reward '{name}'{where}, sample {i + 1} of {len(batch)} (prompt '{_prompt_start(batch, i)}'): {failures[i]}{more}. "
            "Fix the reward or the data, or set rewards.on_error=skip to drop such samples from the update"
        )
    return [math.nan if i in failures else v for i, v in enumerate(scores)]
