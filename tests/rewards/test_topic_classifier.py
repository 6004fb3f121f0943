import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from services.config.schema import DataConfig
from services.data.dialogues import load_examples
from services.rewards.base import RewardError, ScoringBatch
from services.rewards.build_classifier import build_topic_classifier
from services.rewards.topic_head import LinearHead, classifier_text
from services.rewards.encoder import default_encoder_path, embed, load_encoder
from services.rewards.registry import build_reward

# A few small topics keep the build to a couple of seconds; each has examples on both sides of the split.
SMALL = DataConfig(categories=["AI", "science", "movies", "history", "greetings"])


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return build_topic_classifier(tmp_path_factory.mktemp("clf") / "topic", data=SMALL)


def _batch(examples, responses=None):
    return ScoringBatch(
        contexts=[list(ex.context) for ex in examples],
        responses=responses or [ex.reference for ex in examples],
        references=[ex.reference for ex in examples],
        labels=[ex.label for ex in examples],
    )


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_head_reproduces_sklearn(n_classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = np.array(["abcd"[i] for i in (x[:, 0] > 0) + 2 * (x[:, 1] > 0) * (n_classes > 2)])
    model = LogisticRegression(C=3.0).fit(x, y)
    head = LinearHead.from_sklearn(model)
    assert head.labels == list(model.classes_)
    np.testing.assert_allclose(head.probabilities(x), model.predict_proba(x), atol=1e-10)


def test_build_writes_plain_arrays_and_metadata(small_dir):
    assert sorted(p.name for p in small_dir.iterdir()) == ["head.npz", "labels.json", "metadata.json"]
    labels = json.loads((small_dir / "labels.json").read_text())
    assert labels == ["AI", "greetings", "history", "movies", "science"]
    with np.load(small_dir / "head.npz", allow_pickle=False) as arrays:
        assert arrays["coef"].shape == (5, 384) and arrays["intercept"].shape == (5,)
    meta = json.loads((small_dir / "metadata.json").read_text())
    assert meta["n_train"] == len(load_examples(SMALL, "train"))
    assert meta["n_heldout"] == len(load_examples(SMALL, "eval")) > 10
    assert 0.6 <= meta["heldout_accuracy"] <= 1.0


def test_correct_output_reproduces_heldout_accuracy(small_dir):
    reward = build_reward("classifier", {"model_dir": str(small_dir), "output": "correct"})
    scores = reward.score(_batch(load_examples(SMALL, "eval")))
    assert set(scores) <= {0.0, 1.0}
    meta = json.loads((small_dir / "metadata.json").read_text())
    assert np.mean(scores) == pytest.approx(meta["heldout_accuracy"])


def test_prob_output_is_label_probability(small_dir):
    reward = build_reward("classifier", {"model_dir": str(small_dir)})
    examples = load_examples(SMALL, "train")[:6]
    responses = ["Artificial intelligence is fascinating."] * 6
    scores = reward.score(_batch(examples, responses))

    head = LinearHead.load(small_dir)
    texts = [f"{ex.context[-1]} {r}" for ex, r in zip(examples, responses)]
    probs = head.probabilities(embed(load_encoder(default_encoder_path()), texts))
    expected = [probs[i, head.labels.index(ex.label)] for i, ex in enumerate(examples)]
    assert scores == pytest.approx(expected)
    assert classifier_text(("a", "b"), "c") == "b c" and classifier_text((), "c") == "c"


def test_topic_text_scores_its_topic_highest(small_dir):
    reward = build_reward("classifier", {"model_dir": str(small_dir)})
    context = [["Tell me something."]] * 2
    batch = ScoringBatch(
        contexts=context, responses=["Hello! Nice to meet you, how are you doing?"] * 2,
        references=[None, None], labels=["greetings", "history"],
    )  # fmt: skip
    greeting, history = reward.score(batch)
    assert greeting > 0.5 > history


def test_missing_or_unknown_label(small_dir):
    reward = build_reward("classifier", {"model_dir": str(small_dir)})
    batch = ScoringBatch(contexts=[["hi"], ["hi"]], responses=["a", "b"], references=[None, None], labels=["AI", None])
    with pytest.raises(RewardError, match="reward 'classifier' needs a class label; sample 2 of the batch has none"):
        reward.score(batch)
    batch = ScoringBatch(contexts=[["hi"]], responses=["a"], references=[None], labels=["cooking"])
    with pytest.raises(RewardError, match="sample 1 of the batch has label 'cooking', which the classifier does not know"):
        reward.score(batch)


def test_explicit_missing_dir_is_an_error_not_a_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m services.rewards.build_classifier --out"):
        build_reward("classifier", {"model_dir": str(tmp_path / "nope")})
    assert not (tmp_path / "nope").exists()


@pytest.mark.slow
def test_default_classifier_is_built_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("CRLHF_CACHE", str(tmp_path))
    reward = build_reward("classifier", {"output": "correct"})
    meta = json.loads((tmp_path / "topic_classifier" / "metadata.json").read_text())
    assert len(reward.head.labels) == 21 and meta["n_heldout"] > 200
    assert meta["heldout_accuracy"] > 0.85
    assert np.mean(reward.score(_batch(load_examples(DataConfig(), "eval")))) == pytest.approx(meta["heldout_accuracy"])
