"""The README's quick start stays true: its main command is a valid run of a constrained objective."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from services.config.overrides import build_config
from services.objectives import spec as objective_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def main_command() -> list[str]:
    """The overrides of the first `services.launch` command in the quick start (line continuations joined)."""
    text = README.read_text()
    quick_start = text[text.index("## Quick start"):]
    block = quick_start[quick_start.index("```bash") + 7 : quick_start.index("```", quick_start.index("```bash") + 7)]
    joined = re.sub(r"\\\n\s*", " ", block)
    line = next(row for row in joined.splitlines() if "services.launch" in row and not row.lstrip().startswith("#"))
    words = shlex.split(line[line.index("services.launch") :])
    return words[1:]


def test_the_main_command_is_a_valid_constrained_run_on_the_default_preset():
    overrides = main_command()
    config = build_config(overrides)
    launch = objective_spec.ObjectiveSpec.at_launch(config.objective, config.rewards)
    constrained = objective_spec.build(launch, config.rewards).constrained_rewards()
    assert set(constrained) == set(config.rewards)  # every reward is a constraint the summary gives a verdict on
    assert config.rewards["words"].direction == "le" and config.rewards["words"].threshold == 10
    # the other thresholds are measured from this model (default preset), not a paper's values
    assert {config.rewards[n].threshold for n in ("meteor", "topic")} == {"auto"}
    assert config.model.lora is not None and config.trainer.iterations == 14
