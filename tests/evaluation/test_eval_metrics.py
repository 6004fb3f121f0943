"""Evaluation metrics and eval_score (docs/ALGORITHMS.md §12)."""

from __future__ import annotations

import math

import pytest

from services.evaluation import (
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

A1_RAW = {
    "bleu": 0.002,
    "sacrebleu": 0.05,
    "rouge2": 0.007,
    "max_pred_length-nopunct": 40,
    "vocab_size-3-nopunct": 20000,
    "unique-3": 25000,
}

DIVERSITY_EXAMPLE = ["I am fine .", "I am fine , thanks !", "What ?"]


# ---------------------------------------------------------------------------------------------- eval_score


def test_a1_sanity_numbers() -> None:
    out = eval_score(A1_RAW)
    assert out["lexical"] == pytest.approx(0.453341, abs=1e-6)
    assert out["diversity"] == pytest.approx(0.491128, abs=1e-6)
    assert out["eval_score"] == pytest.approx(0.472234, abs=1e-6)


def test_eval_score_is_not_clipped() -> None:
    above = dict(A1_RAW, bleu=2 * 0.004676984628247904)  # twice the calibration max
    assert normalise(above)["bleu"] == pytest.approx(2.0)
    below = dict(A1_RAW, **{"max_pred_length-nopunct": 0})
    assert normalise(below)["max_pred_length-nopunct"] == pytest.approx(-9 / 174)


def test_eval_score_errors() -> None:
    with pytest.raises(KeyError, match="unique-3"):
        eval_score({k: v for k, v in A1_RAW.items() if k != "unique-3"})
    with pytest.raises(ValueError, match="not finite"):
        eval_score(dict(A1_RAW, bleu=float("nan")))
    with pytest.raises(ValueError, match="hi > lo"):
        MetricRange("bleu", 1.0, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        EvalScoreBounds(lexical=(MetricRange("bleu", 0, 1),), diversity=(MetricRange("bleu", 0, 1),))


def test_fastrl_variant_is_the_six_term_mean() -> None:
    raw = {
        "sacrebleu": 0.05,
        "rouge2": 0.007,
        "rougeL": 0.12,
        "cond_entropy-3": 1.5,
        "vocab_size-3-nopunct": 20000,
        "mean_pred_length-nopunct": 9.0,
    }
    terms = [
        (0.05 - 5.330883519077344e-06) / (0.11063353821330388 - 5.330883519077344e-06),
        0.007 / 0.014568765083436451,
        0.12,
        1.5 / math.log2(20),
        (20000 - 41) / (32227 - 41),
        9.0 / 20.0,
    ]
    out = eval_score(raw, FASTRL_BOUNDS)
    assert out["eval_score"] == pytest.approx(sum(terms) / 6, abs=1e-12)
    assert out["lexical"] == pytest.approx(sum(terms[:3]) / 3, abs=1e-12)


def test_bounds_are_configurable_and_calibratable() -> None:
    tweaked = A1_BOUNDS.with_range("bleu", 0.0, 0.004)
    assert normalise(A1_RAW, tweaked)["bleu"] == pytest.approx(0.5)
    assert A1_BOUNDS.lexical[2].hi == 0.004676984628247904  # original untouched (frozen)
    with pytest.raises(KeyError):
        A1_BOUNDS.with_range("meteor", 0, 1)

    runs = [dict(A1_RAW, bleu=0.001), dict(A1_RAW, bleu=0.003, sacrebleu=0.07)]
    runs[0]["sacrebleu"] = 0.03
    cal = A1_BOUNDS.calibrated(runs, only=("bleu", "sacrebleu"))
    assert normalise(A1_RAW, cal)["unique-3"] == normalise(A1_RAW)["unique-3"]  # untouched
    with pytest.raises(ValueError, match="constant"):
        A1_BOUNDS.calibrated(runs)  # rouge2 etc. never vary in these runs
    assert normalise(dict(A1_RAW, bleu=0.002, sacrebleu=0.06), cal)["bleu"] == pytest.approx(0.5)
    assert normalise(dict(A1_RAW, bleu=0.002, sacrebleu=0.06), cal)["sacrebleu"] == pytest.approx(0.75)


# -------------------------------------------------------------------------------------------- diversity


def test_diversity_sanity_example() -> None:
    stats = ngram_stats(DIVERSITY_EXAMPLE)
    assert stats["unique-3"] == 4  # (am fine .) (am fine ,) (fine , thanks) (, thanks !)
    assert stats["vocab_size-3-nopunct"] == 2  # (i am fine) (am fine thanks)
    assert stats["max_pred_length-nopunct"] == 4
    assert stats["mean_pred_length-nopunct"] == pytest.approx(8 / 3)
    # hand computation: 6 trigrams over 9 bigrams, GEM's p(x,y)/p(x) with separate normalisers
    expected = -(
        (2 / 6) * math.log2((2 / 6) / (2 / 9))  # (i am fine) | (i am)
        + 2 * (1 / 6) * math.log2((1 / 6) / (2 / 9))  # (am fine .), (am fine ,) | (am fine)
        + 2 * (1 / 6) * math.log2((1 / 6) / (1 / 9))  # (fine , thanks), (, thanks !)
    )
    assert stats["cond_entropy-3"] == pytest.approx(expected, abs=1e-12)


def test_tokenisation_matches_gem_conventions() -> None:
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    # only single-character punctuation tokens are dropped by "-nopunct" ("..." survives, as in GEM)
    stats = ngram_stats(["wait ... what ?"])
    assert stats["max_pred_length"] == 4
    assert stats["max_pred_length-nopunct"] == 3
    # unique-N counts across the corpus, not per prediction
    assert ngram_stats(["a b c", "a b c"])["unique-3"] == 0


# ---------------------------------------------------------------------------------------------- lexical


def test_lexical_metrics_on_a_hand_computed_case() -> None:
    preds, refs = ["a b c d e"], ["a b c d f"]
    # p1..p4 = 4/5, 3/4, 2/3, 1/2, BP = 1
    expected_bleu = (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25
    assert bleu(preds, refs) == pytest.approx(expected_bleu, abs=1e-12)
    assert sacrebleu_score(preds, refs) == pytest.approx(expected_bleu, abs=1e-6)
    r = rouge(preds, refs)
    assert r["rouge2"] == pytest.approx(0.75)  # 3 of 4 bigrams
    assert r["rougeL"] == pytest.approx(0.8)  # LCS 4 of 5


def test_lexical_metrics_match_the_libraries_called_directly() -> None:
    import sacrebleu
    from nltk.translate.bleu_score import corpus_bleu
    from rouge_score.rouge_scorer import RougeScorer

    preds = [
        "I would like to order a pizza with extra cheese please .",
        "The weather is lovely today , isn't it ?",
        "We were running late for the meeting .",
    ]
    refs = [
        "I'd like to order a large pizza with cheese .",
        "The weather today is lovely , don't you think ?",
        "They ran late for their meetings yesterday .",
    ]
    got = compute_metrics(preds, refs)

    assert got["sacrebleu"] == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs], tokenize="intl").score / 100, abs=1e-12
    )
    assert got["bleu"] == pytest.approx(
        corpus_bleu([[r.split()] for r in refs], [p.split() for p in preds]), abs=1e-12
    )
    scorer = RougeScorer(["rouge2", "rougeL"], use_stemmer=True)
    per = [scorer.score(r, p) for p, r in zip(preds, refs)]
    assert got["rouge2"] == pytest.approx(sum(s["rouge2"].fmeasure for s in per) / 3, abs=1e-12)
    assert got["rougeL"] == pytest.approx(sum(s["rougeL"].fmeasure for s in per) / 3, abs=1e-12)
    # the stemmer matters: "running"/"ran" differ but "meeting"/"meetings" share a stem
    assert 0 < got["rouge2"] < got["rougeL"] < 1

    assert set(got) == {
        "sacrebleu", "bleu", "rouge2", "rougeL", "unique-3", "vocab_size-3-nopunct",
        "max_pred_length-nopunct", "mean_pred_length-nopunct", "cond_entropy-3",
    }  # fmt: skip
    # compute_metrics feeds both eval_score variants directly
    assert math.isfinite(eval_score(got)["eval_score"])
    assert math.isfinite(eval_score(got, FASTRL_BOUNDS)["eval_score"])


def test_perfect_predictions_score_one_and_bleu_without_matches_is_zero() -> None:
    refs = ["the cat sat on the mat", "hello there general kenobi"]
    got = compute_metrics(refs, refs)
    assert got["sacrebleu"] == pytest.approx(1.0)
    assert got["bleu"] == pytest.approx(1.0)
    assert got["rouge2"] == pytest.approx(1.0) and got["rougeL"] == pytest.approx(1.0)
    assert bleu(["x y z w"], ["a b c d"]) == pytest.approx(0.0, abs=1e-300)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        compute_metrics([], [])
    with pytest.raises(TypeError):
        compute_metrics("abc", "abc")  # type: ignore[arg-type]
