import pytest

from services.rewards.base import ScoringBatch
from services.rewards.registry import build_reward


def _batch(responses):
    n = len(responses)
    return ScoringBatch(contexts=[["hi"]] * n, responses=responses, references=[None] * n, labels=[None] * n)


RESPONSES = ["one two three", "", "  a   b  ", "one two three four five six seven"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3.0, 0.0, 2.0, 7.0]),
        ({"normalize": 10}, [0.3, 0.0, 0.2, 0.7]),
        ({"target": 3}, [0.0, -3.0, -1.0, -4.0]),
        ({"target": 3, "normalize": 4}, [0.0, -0.75, -0.25, -1.0]),
    ],
)
def test_length_reward(params, expected):
    assert build_reward("length", params).score(_batch(RESPONSES)) == pytest.approx(expected)
