import pytest

from services.evaluation.metrics import A1_BOUNDS, compute_metrics, eval_score
from services.evaluation.run_eval import evaluation_record, score_bounds

PREDS = ["I am fine , thanks !", "What is your name ?", "I like pizza ."]
REFS = ["I am fine , thank you .", "My name is Bob .", "I like pasta ."]


def test_a1_record_matches_the_metric_functions():
    record = evaluation_record(PREDS, REFS, {"meteor": 0.3}, "a1", {})
    expected = eval_score(compute_metrics(PREDS, REFS), A1_BOUNDS)
    assert record["eval/score"] == pytest.approx(expected["eval_score"])
    assert record["eval/lexical"] == pytest.approx(expected["lexical"])
    assert record["eval/reward/meteor"] == 0.3 and record["eval/examples"] == 3


def test_a_reward_can_be_the_gold_metric():
    record = evaluation_record(PREDS, REFS, {"meteor": 0.3, "topic": 0.7}, "topic", {})
    assert record["eval/score"] == 0.7 and "eval/lexical" not in record


def test_bounds_overrides_change_the_normalisation_and_unknown_metrics_are_named():
    bounds = score_bounds("a1", {"bleu": (0.0, 1.0)})
    assert dict((r.metric, (r.lo, r.hi)) for r in bounds.lexical)["bleu"] == (0.0, 1.0)
    with pytest.raises(KeyError, match="'blue' is not part of these bounds"):
        score_bounds("a1", {"blue": (0.0, 1.0)})


def test_lexical_score_needs_references():
    with pytest.raises(ValueError, match="needs reference responses"):
        evaluation_record(PREDS, [None, None, None], {"meteor": 0.1}, "a1", {})
