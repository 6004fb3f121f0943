import pytest

from services.rewards.base import RewardError, ScoringBatch
from services.rewards.registry import build_reward

REF = "the cat sat on the mat"


def _batch(responses, references):
    n = len(responses)
    return ScoringBatch(contexts=[["hi"]] * n, responses=responses, references=references, labels=[None] * n)


def test_bleu_smoothed_by_hand():
    # 'the cat is on the mat': modified precisions 5/6, 3/5, 1/4, 0/3 -> epsilon 0.1/3; brevity penalty 1.
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25
    scores = build_reward("bleu", {}).score(_batch([REF, "the cat is on the mat", "dog", ""], [REF] * 4))
    assert scores == pytest.approx([1.0, expected, 0.0, 0.0])


def test_bleu_unsmoothed_and_lower_order():
    batch = _batch(["the cat is on the mat"], [REF])
    assert build_reward("bleu", {"smoothing": 0}).score(batch) == [pytest.approx(0.0, abs=1e-60)]  # nltk: ≈0
    bigram = build_reward("bleu", {"max_order": 2, "smoothing": 0})
    assert bigram.score(batch) == pytest.approx([(5 / 6 * 3 / 5) ** 0.5])


def test_sacrebleu_exp_smoothing_by_hand():
    # sacrebleu 'exp' smoothing: the first order with no match gets precision 1 / (2 * total) = 1/6.
    expected = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    scores = build_reward("sacrebleu", {}).score(_batch([REF, "the cat is on the mat", ""], [REF] * 3))
    assert scores == pytest.approx([1.0, expected, 0.0])


def test_sacrebleu_intl_tokenizer_splits_punctuation():
    batch = _batch(["Hello, world!"], ["Hello , world !"])
    assert build_reward("sacrebleu", {}).score(batch) == pytest.approx([1.0])


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("rouge1", 5 / 6),  # the, cat, on, the, mat of 6 tokens both ways; 'sitting' stems to 'sit' != 'sat'
        ("rouge2", 3 / 5),  # 'the cat', 'on the', 'the mat' of 5 bigrams
        ("rougeL", 5 / 6),
    ],
)
def test_rouge_variants(variant, expected):
    batch = _batch(["the cats sitting on the mat"], [REF])
    assert build_reward("rouge", {"variant": variant}).score(batch) == pytest.approx([expected])


def test_rouge_default_is_stemmed_rouge2():
    batch = _batch(["the cats sat on the mats"], [REF])
    assert build_reward("rouge", {}).score(batch) == pytest.approx([1.0])
    assert build_reward("rouge", {"use_stemmer": False}).score(batch) == pytest.approx([2 / 5])


@pytest.mark.parametrize("kind", ["bleu", "sacrebleu", "rouge"])
def test_missing_reference_names_row(kind):
    with pytest.raises(RewardError, match=f"reward '{kind}' needs a reference response; sample 3 of the batch has none"):
        build_reward(kind, {}).score(_batch(["a", "b", "c"], ["a", "b", None]))
