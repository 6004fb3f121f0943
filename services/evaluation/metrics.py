"""Corpus-level evaluation metrics and the normalised ``eval_score`` (docs/ALGORITHMS.md §12).

The evaluation score is the held-out "ground truth" that NM-PPO optimises and that the proxy-point fit
models. It is built only from metrics that are *not* training rewards (METEOR and intent are rewards), so
that Goodhart's law shows up as a rise-then-fall of the score:

* lexical quality: SacreBLEU, ROUGE-2, BLEU ([000] A.2) or SacreBLEU, ROUGE-2, ROUGE-L ([001] Eq. 9);
* diversity: GEM ``NGramStats`` counts (unique-3, vocab_size-3-nopunct, max/mean_pred_length-nopunct,
  cond_entropy-3), re-implemented here because gem-metrics is not on PyPI and insists on downloading punkt.

Everything is a pure function of two lists of strings: no Ray, no torch, no network.
"""

from __future__ import annotations

import math
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np

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

PUNCTUATION: Final[frozenset[str]] = frozenset(string.punctuation)
"""GEM drops a token when it *is* one of these single characters (``"..."`` and ``"n't"`` are kept)."""


# --------------------------------------------------------------------------------------------------
# Tokenisation and the GEM n-gram statistics
# --------------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Word-tokenise like GEM ``Predictions`` (nltk ``word_tokenize``, then lower-case).

    ``preserve_line=True`` skips the punkt sentence splitter, which is not installable offline; the
    only difference is that sentence-internal full stops stay attached to their word.
    """
    from nltk.tokenize import word_tokenize

    return [token.lower() for token in word_tokenize(text, preserve_line=True)]


def _ngram_counts(sentences: Iterable[Sequence[str]], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for tokens in sentences:
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _entropy(counts: Counter[tuple[str, ...]]) -> float:
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def _cond_entropy(joint: Counter[tuple[str, ...]], context: Counter[tuple[str, ...]]) -> float:
    """GEM's next-word entropy H(w_n | w_<n) = −Σ p(x, y)·log2(p(x, y) / p(x)).

    As in GEM, p(x, y) and p(x) are normalised by their *own* totals (n-grams vs (n−1)-grams), so on a
    tiny corpus the value can dip slightly below zero. We keep that quirk for comparability.
    """
    total_joint = sum(joint.values())
    total_ctx = sum(context.values())
    if total_joint == 0 or total_ctx == 0:
        return 0.0
    return -sum(
        c / total_joint * math.log2((c / total_joint) / (context[gram[:-1]] / total_ctx))
        for gram, c in joint.items()
    )


def ngram_stats(predictions: Sequence[str], max_n: int = 3) -> dict[str, float]:
    """GEM ``NGramStats`` over the predictions, with and without punctuation (suffix ``-nopunct``).

    Keys per variant: total/mean/median/min/max/std ``_pred_length``, and for N = 1..max_n
    ``distinct-N``, ``vocab_size-N`` (distinct N-grams), ``unique-N`` (N-grams seen exactly once across
    the whole corpus, not per prediction) and ``entropy-N``; ``cond_entropy-N`` for N ≥ 2.
    These are corpus counts: they grow with corpus size, so always compare on the same full split.
    """
    if not predictions:
        raise ValueError("ngram_stats needs at least one prediction")
    lower = [tokenize(p) for p in predictions]
    nopunct = [[t for t in toks if t not in PUNCTUATION] for toks in lower]
    out: dict[str, float] = {}
    for suffix, data in (("", lower), ("-nopunct", nopunct)):
        lengths = np.array([len(toks) for toks in data], dtype=float)
        out[f"total_length{suffix}"] = float(lengths.sum())
        out[f"mean_pred_length{suffix}"] = float(lengths.mean())
        out[f"std_pred_length{suffix}"] = float(lengths.std())
        out[f"median_pred_length{suffix}"] = float(np.median(lengths))
        out[f"min_pred_length{suffix}"] = float(lengths.min())
        out[f"max_pred_length{suffix}"] = float(lengths.max())
        previous: Counter[tuple[str, ...]] | None = None
        for n in range(1, max_n + 1):
            counts = _ngram_counts(data, n)
            total = sum(counts.values())
            out[f"distinct-{n}{suffix}"] = len(counts) / total if total else 0.0
            out[f"vocab_size-{n}{suffix}"] = float(len(counts))
            out[f"unique-{n}{suffix}"] = float(sum(1 for c in counts.values() if c == 1))
            out[f"entropy-{n}{suffix}"] = _entropy(counts)
            if previous is not None:
                out[f"cond_entropy-{n}{suffix}"] = _cond_entropy(counts, previous)
            previous = counts
    return out


# --------------------------------------------------------------------------------------------------
# Lexical metrics (thin wrappers that pin the exact library call the spec names)
# --------------------------------------------------------------------------------------------------


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; they must pair up 1:1"
        )
    if not predictions:
        raise ValueError("need at least one prediction/reference pair")


def sacrebleu_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """``sacrebleu.corpus_bleu(preds, [refs], tokenize="intl").score / 100`` (RL4LMs SacreBLEU, in [0, 1])."""
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize="intl").score) / 100.0


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (nltk, no smoothing) on whitespace tokens.

    nltk returns ≈0 (a float-min product) instead of exactly 0 when some n-gram order has no match;
    its "no matches" UserWarning is silenced because that case is routine early in training.
    """
    from nltk.translate.bleu_score import corpus_bleu

    _check_pairs(predictions, references)
    hyps = [p.split() for p in predictions]
    refs = [[r.split()] for r in references]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(corpus_bleu(refs, hyps))


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-sample ROUGE-2 and ROUGE-L F-measure (``RougeScorer(use_stemmer=True)``).

    HF ``evaluate`` reports the bootstrap "mid", which is ≈ this mean; the plain mean is deterministic.
    """
    from rouge_score.rouge_scorer import RougeScorer

    _check_pairs(predictions, references)
    scorer = RougeScorer(["rouge2", "rougeL"], use_stemmer=True)
    r2 = r_l = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # rouge-score's signature is (target, prediction)
        r2 += scores["rouge2"].fmeasure
        r_l += scores["rougeL"].fmeasure
    n = len(predictions)
    return {"rouge2": r2 / n, "rougeL": r_l / n}


def compute_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Every metric either eval_score variant needs, computed once over the full corpus.

    Keys: ``sacrebleu``, ``bleu``, ``rouge2``, ``rougeL``, ``unique-3``, ``vocab_size-3-nopunct``,
    ``max_pred_length-nopunct``, ``mean_pred_length-nopunct``, ``cond_entropy-3``.
    """
    _check_pairs(predictions, references)
    stats = ngram_stats(predictions, max_n=3)
    out = {
        "sacrebleu": sacrebleu_score(predictions, references),
        "bleu": bleu(predictions, references),
        **rouge(predictions, references),
    }
    for key in (
        "unique-3",
        "vocab_size-3-nopunct",
        "max_pred_length-nopunct",
        "mean_pred_length-nopunct",
        "cond_entropy-3",
    ):
        out[key] = stats[key]
    return out


# --------------------------------------------------------------------------------------------------
# eval_score
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRange:
    """Min–max normalisation x̃ = (x − lo)/(hi − lo) for one metric; deliberately *not* clipped to [0, 1]
    (the reference code does not clip, so a policy better than every calibration run scores > 1)."""

    metric: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError(f"{self.metric}: bounds must be finite, got ({self.lo}, {self.hi})")
        if self.hi <= self.lo:
            raise ValueError(f"{self.metric}: need hi > lo, got lo={self.lo}, hi={self.hi}")

    def normalise(self, value: float) -> float:
        return (value - self.lo) / (self.hi - self.lo)


@dataclass(frozen=True)
class EvalScoreBounds:
    """eval_score = ½·(mean of normalised lexical metrics + mean of normalised diversity metrics).

    With three metrics per group this is also the plain six-term mean of [001] Eq. (9).
    """

    lexical: tuple[MetricRange, ...]
    diversity: tuple[MetricRange, ...]
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        if not self.lexical or not self.diversity:
            raise ValueError("eval_score needs at least one lexical and one diversity metric")
        names = [r.metric for r in (*self.lexical, *self.diversity)]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate metric in bounds: {names}")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(r.metric for r in (*self.lexical, *self.diversity))

    def with_range(self, metric: str, lo: float, hi: float) -> EvalScoreBounds:
        """A copy with one metric's bounds replaced (e.g. after re-calibrating on your own runs)."""
        if metric not in self.metrics:
            raise KeyError(f"{metric!r} is not part of these bounds ({', '.join(self.metrics)})")

        def swap(group: tuple[MetricRange, ...]) -> tuple[MetricRange, ...]:
            return tuple(MetricRange(metric, lo, hi) if r.metric == metric else r for r in group)

        return replace(self, lexical=swap(self.lexical), diversity=swap(self.diversity))

    def calibrated(
        self, observations: Sequence[Mapping[str, float]], only: Iterable[str] | None = None
    ) -> EvalScoreBounds:
        """Bounds = min/max of each metric over ``observations`` — how both papers set theirs
        ([000]: every evaluation of the single-reward PPO runs; [001]: its constrained-RL runs).

        ``only`` restricts re-calibration to some metrics; the others keep their current bounds.
        """
        if not observations:
            raise ValueError("calibration needs at least one observation")
        targets = tuple(only) if only is not None else self.metrics
        out = self
        for metric in targets:
            values = [float(o[metric]) for o in observations if metric in o]
            if not values:
                raise KeyError(f"no observation contains {metric!r}")
            if max(values) == min(values):
                raise ValueError(f"{metric!r} is constant ({values[0]}) across the observations; cannot calibrate")
            out = out.with_range(metric, min(values), max(values))
        return replace(out, name=f"{self.name}-calibrated")


A1_BOUNDS: Final = EvalScoreBounds(
    name="a1",
    lexical=(
        MetricRange("sacrebleu", 5.330883519077344e-06, 0.11063353821330388),
        MetricRange("rouge2", 0.0, 0.014568765083436451),
        MetricRange("bleu", 0.0, 0.004676984628247904),
    ),
    diversity=(
        MetricRange("unique-3", 314.0, 36880.0),
        MetricRange("vocab_size-3-nopunct", 41.0, 32227.0),
        MetricRange("max_pred_length-nopunct", 9.0, 183.0),
    ),
)
"""[000] A.1, with the constants hard-coded in ConstrainedRL4LMs ``CRLHFEvaluationMetric`` (§12)."""

FASTRL_BOUNDS: Final = EvalScoreBounds(
    name="fastrl",
    lexical=(
        MetricRange("sacrebleu", 5.330883519077344e-06, 0.11063353821330388),
        MetricRange("rouge2", 0.0, 0.014568765083436451),
        MetricRange("rougeL", 0.0, 1.0),
    ),
    diversity=(
        MetricRange("cond_entropy-3", 0.0, math.log2(20)),
        MetricRange("vocab_size-3-nopunct", 41.0, 32227.0),
        MetricRange("mean_pred_length-nopunct", 0.0, 20.0),
    ),
)
"""[001] Eq. (9): mean of six normalised metrics. **[001] publishes no min/max values** (it only says
they are the extremes observed in its constrained-RL runs), so these defaults are our choice:

* sacrebleu, rouge2, vocab_size-3-nopunct: the [000] constants — same task, model and code base, and
  [001] says its ranges come from constrained-RL (i.e. [000]-style) runs;
* rougeL ∈ [0, 1]: the F-measure's natural range (no published constant exists);
* cond_entropy-3 ∈ [0, log2 20]: with top-k = 20 sampling (§0) the next token has at most 20 choices,
  so the generator's conditional entropy cannot exceed log2 20 bits;
* mean_pred_length-nopunct ∈ [0, 20]: responses are capped at 20 new tokens (§0).

The structural ranges are wider than any real run's, which shrinks those terms' weight; for comparisons
across methods, re-calibrate with :meth:`EvalScoreBounds.calibrated` on your own runs.
"""


def normalise(metrics: Mapping[str, float], bounds: EvalScoreBounds = A1_BOUNDS) -> dict[str, float]:
    """Each metric of ``bounds`` min–max normalised (unclipped). Raises on missing or non-finite values."""
    missing = [m for m in bounds.metrics if m not in metrics]
    if missing:
        raise KeyError(f"eval_score[{bounds.name}] needs metrics {missing}; got {sorted(metrics)}")
    out: dict[str, float] = {}
    for r in (*bounds.lexical, *bounds.diversity):
        value = float(metrics[r.metric])
        if not math.isfinite(value):
            raise ValueError(f"metric {r.metric!r} is not finite: {value}")
        out[r.metric] = r.normalise(value)
    return out


def eval_score(metrics: Mapping[str, float], bounds: EvalScoreBounds = A1_BOUNDS) -> dict[str, float]:
    """[000] Eq. (A.1) (default) or [001] Eq. (9) (``bounds=FASTRL_BOUNDS``).

    Returns ``{"lexical", "diversity", "eval_score"}``: the two group means of the normalised metrics and
    their average. Extra keys in ``metrics`` are ignored.
    """
    norm = normalise(metrics, bounds)
    lexical = sum(norm[r.metric] for r in bounds.lexical) / len(bounds.lexical)
    diversity = sum(norm[r.metric] for r in bounds.diversity) / len(bounds.diversity)
    return {"lexical": lexical, "diversity": diversity, "eval_score": 0.5 * (lexical + diversity)}
