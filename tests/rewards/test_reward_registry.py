import math
import subprocess
import sys

import pytest

from services.rewards.base import RewardError, RewardFunction, ScoringBatch, check_scores
from services.rewards.length import LengthReward
from services.rewards.overlap import RougeReward
from services.rewards.registry import REWARD_KINDS, build_reward, reward_class, validate_reward_params


def test_all_kinds_registered_and_resolvable():
    assert REWARD_KINDS == ["meteor", "bleu", "sacrebleu", "rouge", "length", "similarity", "classifier", "hf_model"]
    for kind in REWARD_KINDS:
        assert reward_class(kind).kind == kind


def test_unknown_kind_names_nearest():
    with pytest.raises(ValueError, match=r"unknown reward kind 'rogue'; did you mean 'rouge'\?"):
        validate_reward_params("rogue", {})


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("rouge", {"varient": "rouge1"}, r"unknown rouge param 'varient'; did you mean 'variant'\?"),
        ("rouge", {"variant": "rouge3"}, r"param 'variant' of reward kind 'rouge'.*'rouge1', 'rouge2' or 'rougeL'"),
        ("hf_model", {}, r"reward kind 'hf_model' needs param 'path'"),
        ("length", {"target": True}, r"param 'target'.*not a boolean"),
        ("length", {"normalize": 0}, r"param 'normalize'.*greater than 0"),
        ("classifier", {"output": "probability"}, r"param 'output'.*'prob' or 'correct'"),
        ("bleu", {"smoothing": 9}, r"param 'smoothing'"),
    ],
)
def test_bad_params_are_named(kind, params, message):
    with pytest.raises(ValueError, match=message):
        validate_reward_params(kind, params)


def test_valid_params_pass():
    validate_reward_params("meteor", {"rl4lms_compat": True})
    validate_reward_params("hf_model", {"path": "/nonexistent", "output": "prob", "label_index": 2})
    validate_reward_params("classifier", {"model_dir": "/nonexistent", "output": "correct"})


def test_validation_loads_no_heavy_library():
    code = (
        "import sys; from services.rewards.registry import REWARD_KINDS, validate_reward_params\n"
        "for k in REWARD_KINDS: validate_reward_params(k, {'path': 'x'} if k == 'hf_model' else {})\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'sklearn', 'nltk')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_reward_applies_params():
    reward = build_reward("rouge", {"variant": "rouge1"})
    assert isinstance(reward, RougeReward) and reward.params.variant == "rouge1"


def test_scoring_batch_rejects_ragged_fields():
    with pytest.raises(RewardError, match="differ in length"):
        ScoringBatch(contexts=[["a"]], responses=["x", "y"], references=[None, None], labels=[None, None])


def test_non_finite_scores_raise():
    class Broken(RewardFunction):
        kind = "broken"

        def _score(self, batch):
            return [1.0, math.nan]

    batch = ScoringBatch(contexts=[["a"], ["b"]], responses=["x", "y"], references=[None, None], labels=[None, None])
    with pytest.raises(RewardError, match=r"reward 'broken' gave a non-finite score \(nan\) for sample 2 of the batch"):
        Broken().score(batch)
    with pytest.raises(RewardError, match="returned 1 scores for 2 responses"):
        check_scores("x", [1.0], 2)


def test_empty_batch_scores_empty():
    assert LengthReward().score(ScoringBatch(contexts=[], responses=[], references=[], labels=[])) == []
