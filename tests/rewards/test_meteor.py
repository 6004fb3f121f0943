import pytest

from services.rewards.base import RewardError, ScoringBatch
from services.rewards.registry import build_reward

# The Hugging Face `evaluate` METEOR documentation example; published score 0.6944.
HF_PREDICTION = "It is a guide to action which ensures that the military always obeys the commands of the party"
HF_REFERENCE = "It is a guide to action that ensures that the military will forever heed Party commands"


def _batch(responses, references):
    n = len(responses)
    return ScoringBatch(contexts=[["hi"]] * n, responses=responses, references=references, labels=[None] * n)


@pytest.fixture(scope="module")
def meteor():
    return build_reward("meteor", {})


def test_hf_documentation_example(meteor):
    assert round(meteor.score(_batch([HF_PREDICTION], [HF_REFERENCE]))[0], 4) == 0.6944


def test_per_sample_scores(meteor):
    scores = meteor.score(_batch([HF_PREDICTION, HF_REFERENCE, "", "zebra"], [HF_REFERENCE] * 4))
    assert round(scores[0], 4) == 0.6944
    assert scores[1] == pytest.approx(1 - 0.5 * (1 / 16) ** 3)  # identical 16 tokens: one chunk, penalty γ(1/16)^β
    assert scores[2:] == [0.0, 0.0]


def test_rl4lms_compat_gives_running_mean(meteor):
    compat = build_reward("meteor", {"rl4lms_compat": True})
    batch = _batch([HF_PREDICTION, HF_REFERENCE, "", "zebra"], [HF_REFERENCE] * 4)
    own = meteor.score(batch)
    assert compat.score(batch) == pytest.approx([own[0], (own[0] + own[1]) / 2, sum(own[:3]) / 3, sum(own) / 4])


def test_missing_reference_names_row(meteor):
    with pytest.raises(RewardError, match="reward 'meteor' needs a reference response; sample 2 of the batch has none"):
        meteor.score(_batch(["a", "b"], ["a", None]))
