"""`python -m services.launch @FILE`: overrides read from a file (e.g. the one services.thresholds.proxy_points writes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.launch import expand_argument_files, main
from services.config.overrides import ConfigError, build_config

OVERRIDES = """\
# proxy point from services.thresholds.proxy_points
objective=xi_ppo

rewards.meteor.threshold=0.2312   # trailing comment
rewards.topic.threshold=0.4834
run.name=proxy#1
"""


@pytest.fixture
def override_file(tmp_path: Path) -> Path:
    path = tmp_path / "overrides.txt"
    path.write_text(OVERRIDES)
    return path


def test_file_expands_in_place_without_comments_or_blank_lines(override_file: Path) -> None:
    argv = ["preset=smoke", f"@{override_file}", "--cfg"]
    assert expand_argument_files(argv) == [
        "preset=smoke",
        "objective=xi_ppo",
        "rewards.meteor.threshold=0.2312",
        "rewards.topic.threshold=0.4834",
        "run.name=proxy#1",  # '#' not preceded by whitespace is part of the value
        "--cfg",
    ]


def test_later_arguments_override_the_file(override_file: Path) -> None:
    config = build_config(expand_argument_files([f"@{override_file}", "rewards.topic.threshold=0.5"]))
    assert config.objective.name == "xi_ppo"
    assert config.rewards["meteor"].threshold == 0.2312
    assert config.rewards["topic"].threshold == 0.5


def test_missing_and_nested_files_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="cannot read override file .*nope.txt"):
        expand_argument_files([f"@{tmp_path / 'nope.txt'}"])
    nested = tmp_path / "nested.txt"
    nested.write_text("objective=xi_ppo\n@other.txt\n")
    with pytest.raises(ConfigError, match=r"nested.txt:2: override files do not nest"):
        expand_argument_files([f"@{nested}"])
    assert main([f"@{tmp_path / 'nope.txt'}"]) == 2
    assert "cannot read override file" in capsys.readouterr().err


def test_launch_resolves_a_file_of_overrides(override_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preset=smoke", f"@{override_file}", "--cfg"]) == 0
    shown = capsys.readouterr().out
    assert "xi_ppo" in shown and "0.2312" in shown and "0.4834" in shown


def test_a_bad_override_in_a_file_is_reported_like_one_on_the_command_line(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("rewards.meteor.treshold=0.2\n")
    assert main([f"@{path}", "--cfg"]) == 2
    assert "did you mean 'threshold'" in capsys.readouterr().err


def test_cfg_documents_the_data_conventions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preset=smoke", "data.turn_separator=newline", "--cfg"]) == 0
    lines = {line.split(" = ")[0]: line for line in capsys.readouterr().out.splitlines() if " = " in line}
    assert lines["data.turn_separator"].startswith("data.turn_separator = '\\n'  # Splits a string context into turns")
    assert "'__eou__' (DailyDialog)" in lines["data.turn_separator"] and "default: '<EOU>'" in lines["data.turn_separator"]
    assert lines["data.drop_empty"].startswith("data.drop_empty = False  # Drop rows")
    assert lines["run.root"].startswith(f"run.root = {Path.cwd() / 'runs'}") or "CRLHF_RUNS" in os.environ
