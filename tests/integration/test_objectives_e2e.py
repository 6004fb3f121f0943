"""Every registered objective runs two iterations end to end through Ray on the smoke preset."""

import json

import pytest
import torch

from services.launch import main
from services.objectives.registry import OBJECTIVES, build_objective
from services.config.overrides import build_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_trains_two_iterations(ray_local, tmp_path, name):
    args = ["preset=smoke", "control.port=0", f"objective={name}", "trainer.iterations=2", f"run.root={tmp_path}", "run.name=r"]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    fresh = build_objective(build_config(args).objective, build_config(args).rewards)
    # Every statistic the objective reports reaches the metrics file, for every reward.
    assert set(fresh.metrics()) <= set(records[-1]), set(fresh.metrics()) - set(records[-1])
    for reward in ("meteor", "topic"):
        assert f"reward/{reward}" in records[-1]
    # The coordinator committed the objective's learned state after the last iteration.
    state = torch.load(tmp_path / "r" / "coordinator.pt", weights_only=False)
    assert state["last_committed"] == 1
    assert state["objective"].keys() == fresh.state_dict().keys()
