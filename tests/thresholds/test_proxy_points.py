"""`python -m services.thresholds.proxy_points`: run directories → surface fit → θ*, contour PNG and a launchable override file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.launch import expand_argument_files
from services.config.overrides import build_config
from services.thresholds.proxy_points import main, points_from_runs, read_points_csv

TRUE_THETA = np.array([0.23, 0.48])  # (meteor, topic) maximiser of the synthetic eval surface


def surface(x: np.ndarray) -> np.ndarray:
    """Peak 0.8 at TRUE_THETA with a cross term (correlated rewards), as in tests/thresholds/test_proxy_fit.py."""
    d = (x - TRUE_THETA) / np.array([0.05, 0.1])
    return 0.8 - d[:, 0] ** 2 - d[:, 1] ** 2 - 0.8 * d[:, 0] * d[:, 1]


def write_run(run_dir: Path, points: np.ndarray, scores: np.ndarray, every: int = 2, final: bool = False) -> None:
    """A run directory as services.launch leaves it: a record per iteration, eval/ keys every `every`-th one."""
    run_dir.mkdir(parents=True)
    lines = []
    for i, (p, s) in enumerate(zip(points, scores)):
        for k in range(every):
            record = {"iteration": i * every + k, "reward/meteor": 0.1, "reward/topic": 0.5, "kl": 0.01, "multiplier/x": 0.0}
            if k == 0:  # evaluated before this update
                record |= {"eval/score": float(s), "eval/reward/meteor": float(p[0]), "eval/reward/topic": float(p[1]),
                           "eval/metric/bleu": 0.002, "eval/lexical": 0.3, "time/eval": 2.0}  # fmt: skip
            lines.append(json.dumps(record))
    if final:  # the last point is the final evaluation, not a metrics.jsonl record
        lines.pop()
        lines.pop()
        p, s = points[-1], scores[-1]
        (run_dir / "final_eval.json").write_text(json.dumps(
            {"after_iteration": len(points) * every, "eval/score": float(s), "eval/reward/meteor": float(p[0]),
             "eval/reward/topic": float(p[1])}))  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Two "single-reward runs" whose evaluations jointly cover the reward box around the peak."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(0.18, 0.28, 150), rng.uniform(0.40, 0.56, 150)])
    y = surface(x) + rng.normal(0.0, 0.05, 150)
    order = np.argsort(x[:, 0])  # the meteor run explores high meteor, the topic run the rest
    dirs = [tmp_path / "runs" / "proxy-topic", tmp_path / "runs" / "proxy-meteor"]
    write_run(dirs[0], x[order[:75]], y[order[:75]])
    write_run(dirs[1], x[order[75:]], y[order[75:]], final=True)
    return dirs


def test_cli_end_to_end_finds_the_maximiser_and_writes_a_launchable_file(runs: list[Path], tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out, plot = tmp_path / "proxy.txt", tmp_path / "plots" / "proxy.png"
    argv = ["--runs", *map(str, runs), "--plot", str(plot), "--out", str(out), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    theta = np.array([summary["theta_star"]["meteor"], summary["theta_star"]["topic"]])
    # same tolerance as tests/thresholds/test_proxy_fit.py for degree 2: ≤ 2 % of the sampled box per axis
    assert np.all(np.abs(theta - TRUE_THETA) <= (0.002, 0.004)), theta
    assert summary["points"] == 150 and summary["predicted_eval"] == pytest.approx(0.8, abs=0.03)
    assert summary["sources"] == {str(runs[0]): 75, str(runs[1]): 75}  # final_eval.json counted

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    lines = out.read_text().splitlines()
    assert lines[0].startswith("#") and "objective=xi_ppo" in lines
    config = build_config(expand_argument_files([f"@{out}"]))
    assert config.objective.name == "xi_ppo"
    assert config.rewards["meteor"].threshold == pytest.approx(theta[0], abs=1e-6)
    assert config.rewards["topic"].threshold == pytest.approx(theta[1], abs=1e-6)


def test_text_output_names_theta_and_the_launch_command(runs: list[Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mu.txt"
    assert main(["--runs", *map(str, runs), "--out", str(out), "--objective", "mu_ppo"]) == 0
    text = capsys.readouterr().out
    assert "θ*: meteor=0.2" in text and f"python -m services.launch @{out}" in text and "R²" in text
    assert build_config(expand_argument_files([f"@{out}"])).objective.name == "mu_ppo"


def test_points_csv_round_trip_and_pooling(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "points.csv"
    assert main(["--runs", *map(str, runs), "--save-points", str(saved), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    points = read_points_csv(saved)
    assert points.names == ("meteor", "topic") and len(points) == 150
    assert points.counts() == {str(runs[0]): 75, str(runs[1]): 75}  # the source column survives
    assert main(["--points", str(saved), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["theta_star"] == pytest.approx(first["theta_star"])
    # --runs and --points pool: every point twice moves nothing
    assert main(["--runs", *map(str, runs), "--points", str(saved), "--json"]) == 0
    pooled = json.loads(capsys.readouterr().out)
    assert pooled["points"] == 300 and pooled["theta_star"] == pytest.approx(first["theta_star"], abs=1e-3)


def test_records_without_evaluation_and_non_finite_values_are_skipped(tmp_path: Path) -> None:
    run = tmp_path / "r"
    x = np.array([[0.2, 0.5], [0.21, 0.45], [0.22, 0.47]])
    write_run(run, x, np.array([0.5, float("nan"), 0.7]), every=3)
    points = points_from_runs([run])
    assert len(points) == 2 and points.skipped == 1
    np.testing.assert_allclose(points.values, x[[0, 2]])


def test_a_run_without_the_other_reward_says_how_to_run_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rewards.topic=null drops topic from scoring, so the meteor run's points have no topic coordinate."""
    good, bad = tmp_path / "topic", tmp_path / "meteor"
    write_run(good, np.array([[0.2, 0.5]] * 3), np.zeros(3))
    bad.mkdir()
    (bad / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "eval/score": 0.4, "eval/reward/meteor": 0.2}) + "\n")
    assert main(["--runs", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "reward 'topic' is never evaluated" in err and "rewards.topic.weight=0" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), "no metrics.jsonl"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"iteration": 0, "kl": 0.1}\n')), "evaluation.every"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("{torn\n")), "metrics.jsonl:1: not a JSON record"),
    ],
)
def test_unusable_run_directories_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str) -> None:
    run = tmp_path / "run"
    make(run)
    assert main(["--runs", str(run)]) == 2
    assert message in capsys.readouterr().err


def test_too_few_points_and_missing_sources_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "few"
    write_run(run, np.array([[0.2, 0.5], [0.21, 0.45], [0.22, 0.47]]), np.array([0.1, 0.2, 0.3]))
    assert main(["--runs", str(run)]) == 2
    assert "coefficients; got only 3 points" in capsys.readouterr().err
    assert main([]) == 2
    assert "--runs" in capsys.readouterr().err
    bad_csv = tmp_path / "p.csv"
    bad_csv.write_text("meteor,topic\n0.2,0.5\n")
    assert main(["--points", str(bad_csv)]) == 2
    assert "no score column" in capsys.readouterr().err
