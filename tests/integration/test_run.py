"""End to end on a real local Ray cluster: rollout actor, two reward actors, learner and coordinator."""

import json

import pytest
import torch

from services.launch import main

pytestmark = pytest.mark.slow

SMOKE = ["preset=smoke", "checkpoint.every=1", "control.port=0"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_trains_and_checkpoints(ray_local, tmp_path):
    mirror = tmp_path / "bucket"  # run.storage: a file:// URI stands in for s3:// or gs:// (the same pyarrow.fs code)
    assert main([*SMOKE, "trainer.iterations=3", f"run.root={tmp_path}", "run.name=r", f"run.storage=file://{mirror}"]) == 0
    run = tmp_path / "r"
    got = records(run)
    assert [r["iteration"] for r in got] == [0, 1, 2]
    first = got[0]
    # Two reward actors scored every response; the learner logged both rewards and took PPO steps.
    assert {"reward/meteor", "reward/topic"} <= set(first)
    assert not any(k.startswith(("threshold/", "violation/")) for k in first)  # ppo weights rewards: no constraints
    assert first["tokens"] > 0 and first["ppo_steps"] > 0
    # Iteration 0 starts at the reference policy (KL = 0); training moves the policy away from it.
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert got[-1]["kl"] > 0.0
    # The adaptive controller (target 0.5) lowers β while KL stays below target.
    assert got[-1]["kl_coef"] < 0.2
    # The held-out evaluation ran before update 0 (evaluation.every=5) and once after the last update.
    assert "eval/score" in first and "eval/reward/topic" in first and first["eval/examples"] == 16
    assert all("eval/score" not in r for r in got[1:])
    final = json.loads((run / "final_eval.json").read_text())
    assert final["after_iteration"] == 2 and final["eval/metric/unique-3"] >= 0
    assert (run / "checkpoints" / "latest").read_text() == "iter_000002"
    policy = run / "checkpoints" / "iter_000002" / "policy"
    assert (policy / "config.json").exists() and (policy / "tokenizer.json").exists()
    state = torch.load(run / "coordinator.pt", weights_only=False)
    assert state["last_committed"] == 2
    assert state["objective"]["kl"]["beta"] == pytest.approx(got[-1]["kl_coef"])
    # The mirror holds what the run directory holds — the checkpoints keep_last kept, pruned ones removed — but
    # never the control token.
    copy = mirror / "r"
    assert (copy / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    local = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == local == ["iter_000001", "iter_000002", "latest"]
    assert (copy / "checkpoints" / "iter_000002" / "MANIFEST.json").exists()
    assert (copy / "final" / "config.json").exists() and (copy / "report.png").exists() and (copy / "config.yaml").exists()
    assert (run / "control.token").exists() and not (copy / "control.token").exists()


def test_resume_continues_exactly_where_the_run_stopped(ray_local, tmp_path, capfd):
    """A run stopped after 2 iterations and resumed to 4 matches an uninterrupted 4-iteration run."""
    assert main([*SMOKE, "trainer.iterations=4", f"run.root={tmp_path}", "run.name=straight"]) == 0
    straight_log = (tmp_path / "straight" / "train.log").read_text()
    assert main([*SMOKE, "trainer.iterations=2", f"run.root={tmp_path}", "run.name=stopped"]) == 0
    assert main([f"resume={tmp_path / 'stopped'}", "trainer.iterations=4"]) == 0
    straight, resumed = records(tmp_path / "straight"), records(tmp_path / "stopped")
    assert [r["iteration"] for r in resumed] == [0, 1, 2, 3]
    for a, b in zip(straight, resumed):
        for key in ("reward/meteor", "reward/topic", "kl", "kl_coef", "policy_loss", "tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["iteration"], key)
    # Three runs on one Ray connection (the fixture's, made before any run): every run's actors wrote their
    # output into that run's own train.log — the resumed run's actors into the stopped run's — and none
    # reached this process's terminal. The markers: the rollout actor's stderr line naming its backend, and
    # sentence-transformers' INFO line from the reward actor that loads the topic classifier's encoder.
    rollout_line, reward_line = "[rollout 0] rollout backend:", "INFO sentence_transformers"
    assert rollout_line in straight_log and reward_line in straight_log
    assert (tmp_path / "straight" / "train.log").read_text() == straight_log  # the later runs wrote nothing there
    _, stopped_run, resumed_run = (tmp_path / "stopped" / "train.log").read_text().split("INFO crlhf: run directory:")
    assert all(line in run for line in (rollout_line, reward_line) for run in (stopped_run, resumed_run))
    terminal = capfd.readouterr()
    assert rollout_line not in terminal.out + terminal.err


def test_reward_that_cannot_score_is_refused_before_any_actor_starts(tmp_path, capsys):
    """The classifier reward needs labels the dataset lacks: the preflight says so (services/run/preflight.py)
    before a cluster starts, instead of the first iteration failing inside the reward actor."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"context": ["hi there"], "reference": "hello"}) + "\n" for _ in range(20)))
    code = main(["preset=smoke", "control.port=0", f"data.source={data}", "data.label_column=null", "data.eval_fraction=0",
                 f"run.root={tmp_path}", "run.name=bad"])
    assert code == 2
    err = capsys.readouterr().err
    assert "reward 'topic' (classifier) scores each response against the row's class label" in err
    assert "rewards.topic=null" in err
    assert not (tmp_path / "bad").exists()


def test_bad_dataset_row_is_rejected_before_any_actor_starts(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"context": ["hi"], "reference": "yo"}) + "\n" + json.dumps({"context": [], "reference": "x"}) + "\n")
    assert main(["preset=smoke", f"data.source={data}", "data.label_column=null", "data.eval_fraction=0",
                 "rewards.topic=null", f"run.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"{data} line 2, column 'context': empty context" in err  # the editor's line number


def test_lora_and_grpo_train_through_the_actors_and_export_a_merged_model(ray_local, tmp_path):
    """The default preset's learner (LoRA + GRPO, K completions per prompt) through the real actors."""
    assert main(["preset=smoke", "control.port=0", "trainer.iterations=2", "model.lora.r=4", "trainer.advantage=grpo",
                 "rollout.samples_per_prompt=2", "rollout.batch_size=4", f"run.root={tmp_path}", "run.name=lora"]) == 0
    run = tmp_path / "lora"
    got = records(run)
    assert [r["iteration"] for r in got] == [0, 1] and all(r["ppo_steps"] > 0 for r in got)
    assert got[0]["tokens"] > 0 and got[0]["kl"] == pytest.approx(0.0, abs=1e-6) and got[1]["kl"] != 0.0
    assert "value_loss" in got[0] and got[0]["value_loss"] == 0.0  # no critic
    policy = run / "checkpoints" / "iter_000001" / "policy"
    assert (policy / "adapter_model.safetensors").exists() and not (policy / "model.safetensors").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(run / "final")  # loadable anywhere, without peft
    assert sum(p.numel() for p in merged.parameters()) > 0
