"""Held-out evaluation metrics and the normalised eval_score (docs/ALGORITHMS.md §12). Pure Python/numpy."""

from services.evaluation.metrics import (
    A1_BOUNDS,
    FASTRL_BOUNDS,
    EvalScoreBounds,
    MetricRange,
    bleu,
    compute_metrics,
    eval_score,
    ngram_stats,
    normalise,
    rouge,
    sacrebleu_score,
    tokenize,
)

__all__ = [
    "A1_BOUNDS",
    "FASTRL_BOUNDS",
    "EvalScoreBounds",
    "MetricRange",
    "bleu",
    "compute_metrics",
    "eval_score",
    "ngram_stats",
    "normalise",
    "rouge",
    "sacrebleu_score",
    "tokenize",
]
