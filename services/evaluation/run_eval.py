"""Turning one evaluation's generations and reward scores into the `eval/...` record fields."""

from __future__ import annotations

from services.evaluation.metrics import A1_BOUNDS, FASTRL_BOUNDS, EvalScoreBounds, compute_metrics, eval_score


def score_bounds(name: str, overrides: dict[str, tuple[float, float]]) -> EvalScoreBounds:
    bounds = FASTRL_BOUNDS if name == "fast_rl" else A1_BOUNDS
    for metric, (lo, hi) in overrides.items():
        bounds = bounds.with_range(metric, lo, hi)
    return bounds


def evaluation_record(
    predictions: list[str],
    references: list[str | None],
    reward_means: dict[str, float],
    score: str,
    bounds: dict[str, tuple[float, float]],
) -> dict[str, float]:
    """eval/score (the number threshold search maximises), eval/reward/<name>, eval/metric/<metric>, and
    for the a1/fast_rl scores their eval/lexical and eval/diversity halves."""
    record = {f"eval/reward/{name}": value for name, value in reward_means.items()}
    paired = [(p, r) for p, r in zip(predictions, references) if r is not None]
    if paired:
        metrics = compute_metrics([p for p, _ in paired], [r for _, r in paired])
        record.update({f"eval/metric/{k}": v for k, v in metrics.items()})
    if score in ("a1", "fast_rl"):
        if not paired:
            raise ValueError(f"evaluation.score={score} needs reference responses in the eval split")
        parts = eval_score(metrics, score_bounds(score, bounds))
        record.update({"eval/score": parts["eval_score"], "eval/lexical": parts["lexical"], "eval/diversity": parts["diversity"]})
    else:
        record["eval/score"] = reward_means[score]
    record["eval/examples"] = float(len(predictions))
    return record
