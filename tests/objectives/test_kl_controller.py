"""docs/ALGORITHMS.md §1 KL controller sanity test."""

import pytest

from services.objectives.kl_controller import AdaptiveKLController


@pytest.mark.parametrize(("mean_kl", "expected"), [(1.0, 0.204), (0.45, 0.198), (0.0, 0.196)])
def test_adaptive_step_from_beta_02(mean_kl: float, expected: float) -> None:
    controller = AdaptiveKLController(beta=0.2, target=0.5, eta=0.1)
    assert controller.update(mean_kl) == pytest.approx(expected, abs=1e-9)


def test_fixed_when_no_target_and_state_round_trip() -> None:
    fixed = AdaptiveKLController(beta=0.2, target=None)
    assert fixed.update(5.0) == 0.2
    moving = AdaptiveKLController(beta=0.2, target=0.5)
    moving.update(1.0)
    copy = AdaptiveKLController()
    copy.load_state_dict(moving.state_dict())
    assert (copy.beta, copy.target) == (moving.beta, moving.target)
