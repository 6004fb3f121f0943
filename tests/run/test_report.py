"""The end-of-run summary from a run directory's files: start/end over quarters, satisfied over the last
quarter, values exactly as metrics.jsonl recorded them, and report.png drawn from the same records."""

from __future__ import annotations

import json

import pytest
import yaml
from rich.console import Console

from services.run import report


def write_run(directory, records, config):
    directory.mkdir()
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_constraint_violated_at_start_and_held_at_the_end_is_reported_so(tmp_path):
    records = [
        {"iteration": k, "reward/len": 1.0 + k, "threshold/len": 5.0, "violation/len": max(0.0, 4.0 - k),
         "multiplier/len": 0.5 + 0.01 * k, "reward/other": 0.2, "kl": 0.01 * k}
        for k in range(8)
    ]
    write_run(tmp_path / "r", records, {"objective": {"name": "mu_ppo"}, "rewards": {"len": {"direction": None}, "other": {}}})
    rows = {r.name: r for r in report.summarise(tmp_path / "r")}
    assert rows["len"].start == pytest.approx(1.5) and rows["len"].end == pytest.approx(7.5)  # quarters of 8 = 2 iterations
    assert rows["len"].threshold == 5.0 and rows["len"].direction == "ge"
    assert rows["len"].violated_at_start and rows["len"].satisfied and rows["len"].held == (2, 2)
    assert rows["len"].multiplier == pytest.approx(0.57)
    assert rows["other"].satisfied is None and rows["other"].threshold is None  # not a constraint: no verdict
    console = Console(width=100, record=True)
    summary, picture = report.write(tmp_path / "r")
    console.print(summary)
    text = console.export_text()
    assert "no → yes" in text and "7.5" in text and "0.57" in text and "2/2" in text
    assert picture.name == "report.png" and picture.stat().st_size > 10_000


def test_satisfied_is_the_last_quarter_mean_and_held_counts_its_batches(tmp_path):
    # A noisy batch below θ in the last quarter does not undo a mean above it; "held" says it happened.
    scores = [0.05, 0.06, 0.05, 0.07, 0.09, 0.12, 0.16, 0.09, 0.21, 0.16, 0.15, 0.09]
    records = [{"iteration": k, "reward/m": v, "threshold/m": 0.11, "violation/m": max(0.0, 0.11 - v)} for k, v in enumerate(scores)]
    write_run(tmp_path / "r", records, {"objective": {"name": "mu_ppo"}, "rewards": {"m": {}}})
    (row,) = report.summarise(tmp_path / "r")
    assert row.end == pytest.approx(0.4 / 3) and row.satisfied and row.violated_at_start and row.held == (2, 3)
    records[-1]["reward/m"] = 0.0  # now the last quarter's mean is below θ
    write_run(tmp_path / "s", records, {"objective": {"name": "mu_ppo"}, "rewards": {"m": {}}})
    (row,) = report.summarise(tmp_path / "s")
    assert not row.satisfied and row.held == (2, 3)


def test_eq_constraints_count_as_held_within_five_percent(tmp_path):
    records = [{"iteration": k, "reward/m": 0.2, "threshold/m": 0.205, "violation/m": 0.005} for k in range(4)]
    write_run(tmp_path / "r", records, {"objective": {"name": "xi_ppo"}, "rewards": {"m": {}}})
    (row,) = report.summarise(tmp_path / "r")
    assert row.direction == "eq" and row.satisfied


def test_a_run_without_metrics_says_so(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics yet"):
        report.summarise(tmp_path / "r")
