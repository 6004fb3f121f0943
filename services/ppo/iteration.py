"""One learner iteration, independent of Ray: a rollout, the coordinator's handout (objective spec + state)
and an optional held-out evaluation in; the updated objective state and the iteration's metrics record out.

`LearnerLoop` is exactly what `services/actors/learner.py` runs inside its actor, so tests drive the real
learner without a cluster. The objective comes through the one bridge (`services.objectives.spec`): it is
rebuilt from the handed-out spec whenever the spec's version moved (a REST hyperparameter or direction
change), so the change reaches the loss from the iteration the coordinator announced.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import psutil
import torch

from services.config.schema import RootConfig
from services.objectives import spec as objective_spec
from services.objectives.constraints import violation
from services.objectives.spec import Handout, ObjectiveSpec
from services.ppo.guards import non_finite_entries, require_finite_parameters, require_finite_state
from services.ppo.off_policy import BehaviourLogprobs

if TYPE_CHECKING:
    from services.objectives.base import Objective
    from services.ppo.learner import PPOLearner


@dataclass
class Rollout:
    """One iteration's batch, assembled from the rollout shards and the reward actors' scores.

    scores: [B, N] in the config's reward order. behaviour: the rollout's own log-probs and per-sequence
    staleness, for overlapped rollouts (trainer.async_rollout), else None.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    scores: torch.Tensor
    references: list[str | None]
    tokens: int
    rollout_seconds: float
    reward_seconds: float
    staleness: int = 0
    behaviour: BehaviourLogprobs | None = None
    group_size: int = 1  # completions per prompt; rows come in contiguous groups of this many
    groups: torch.Tensor | None = None  # [B] group index per row, once rows were dropped (drop_unscored)


def drop_unscored(rollout: Rollout, reward_names: list[str]) -> tuple[Rollout, dict[str, float]]:
    """Remove the samples a reward could not score (NaN under rewards.on_error=skip) from the update.

    Group estimators keep each prompt's group: the remaining rows carry their group index, and the baseline
    is taken over the finite ones (services/ppo/group.py). Returns the rollout and `rewards/skipped` counts
    (total and per reward); a rollout with nothing left is an error, as there is nothing to learn from."""
    bad = ~torch.isfinite(rollout.scores)  # [B, N]
    counts = {"rewards/skipped": float(bad.any(dim=1).sum())}
    counts.update({f"rewards/skipped/{name}": float(bad[:, j].sum()) for j, name in enumerate(reward_names)})
    if not bad.any():
        return rollout, counts
    keep = (~bad.any(dim=1)).nonzero().flatten()
    if keep.numel() == 0:
        worst = reward_names[int(bad.sum(dim=0).argmax())]
        raise ValueError(f"every sample of the iteration was skipped (reward '{worst}' could not score any): "
                         "fix the reward or the data (rewards.on_error=skip only drops some samples)")
    rows = keep.tolist()
    group = torch.arange(rollout.scores.shape[0]) // max(rollout.group_size, 1)
    behaviour = rollout.behaviour
    if behaviour is not None:
        width = max(len(rollout.response_ids[i]) for i in rows)  # the learner pads to the longest row kept
        behaviour = BehaviourLogprobs(behaviour.logprobs[keep][:, :width], behaviour.staleness[keep])
    return replace(
        rollout,
        prompt_ids=[rollout.prompt_ids[i] for i in rows],
        response_ids=[rollout.response_ids[i] for i in rows],
        scores=rollout.scores[keep],
        references=[rollout.references[i] for i in rows],
        behaviour=behaviour,
        groups=group[keep] if rollout.group_size > 1 else None,
    ), counts


class LearnerLoop:
    """The learner's iterations: the PPO learner (policy, reference, values, optimiser) and the objective it
    trains with, kept in step with the coordinator's spec."""

    def __init__(self, config: RootConfig, learner: "PPOLearner", tokenizer: Any) -> None:
        self.config = config
        self.learner = learner
        self.tokenizer = tokenizer
        self.objective: "Objective | None" = None
        self.spec_version: int | None = None

    @staticmethod
    def num_streams(config: RootConfig) -> int:
        """Value heads the learner needs: fixed for the run (fields that change it are frozen after start)."""
        spec = ObjectiveSpec.at_launch(config.objective, config.rewards)
        return len(objective_spec.build(spec, config.rewards).stream_names)

    def train(self, iteration: int, handout: Handout, rollout: Rollout, evaluation: dict[str, float] | None) -> dict[str, Any]:
        """One update. Returns {"objective_state", "record", "spec_version"}."""
        rollout, skipped = drop_unscored(rollout, list(self.config.rewards))
        objective = objective_spec.objective_for(handout, self.config.rewards, self.objective, self.spec_version)
        self.objective, self.spec_version = objective, handout.spec.version
        unset = non_finite_entries(objective.state_dict())  # NaN = "not measured yet" (e.g. l3m's score EMA)
        if evaluation is not None:  # e.g. nm_ppo moves its thresholds on an evaluation
            objective.observe_evaluation(iteration, evaluation)
        if objective.update_kind == "l3m":
            from services.ppo.l3m import l3m_iteration

            references = self._reference_ids(rollout.references)
            stats = l3m_iteration(self.learner, rollout.prompt_ids, rollout.response_ids, references, rollout.scores, objective)
        else:
            stats = self.learner.train(
                rollout.prompt_ids, rollout.response_ids, rollout.scores, objective, rollout.behaviour, rollout.group_size,
                rollout.groups,
            )
        # Nothing non-finite leaves the learner: the coordinator would commit it and the engines would load it.
        require_finite_state(objective.state_dict(), f"objective state of iteration {iteration}", already_unset=unset)
        require_finite_parameters(self.learner.models.trained_parameters())
        record = self._record(iteration, rollout, objective, stats)
        record.update(skipped)
        return {"objective_state": objective.state_dict(), "record": record, "spec_version": handout.spec.version}

    def _record(self, iteration: int, rollout: Rollout, objective: "Objective", stats: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "iteration": iteration,
            "tokens": rollout.tokens,
            "tokens_per_second": rollout.tokens / max(rollout.rollout_seconds, 1e-9),
            "time/rollout": rollout.rollout_seconds,
            "time/reward": rollout.reward_seconds,
            "time/train": stats.pop("train_seconds"),
            "objective/version": self.spec_version,
        }
        constrained = set(objective.constrained_rewards())
        for j, name in enumerate(self.config.rewards):
            mean = float(rollout.scores[:, j].mean())
            threshold = float(objective.thresholds[j])
            record[f"reward/{name}"] = mean
            if name in constrained and threshold == threshold:  # a constraint with a threshold (not NaN)
                record[f"threshold/{name}"] = threshold
                record[f"violation/{name}"] = violation(mean, threshold, objective.directions[j])
        record["async/staleness"] = rollout.staleness
        record["memory/rss_bytes"] = psutil.Process().memory_info().rss  # the learner process, after the update
        record["memory/peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        record.update(stats)
        record.update(objective.metrics())
        return record

    def _reference_ids(self, references: list[str | None]) -> list[list[int]]:
        """Reference responses as SFT targets, ending with EOS like a finished generation."""
        out = []
        for row, text in enumerate(references):
            if not text:
                raise ValueError(f"objective l3m trains on reference responses; row {row} has none")
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(ids[: self.config.model.max_prompt_tokens] + [self.tokenizer.eos_token_id])
        return out
