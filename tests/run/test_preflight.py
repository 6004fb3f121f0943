"""Checks before any actor starts: each reward's needs against the data and the disk, and the cluster's
resources; every message names the reward or the resource and a fix that works."""

import inspect
import json

import pytest

from services.config.overrides import build_config
from services.data.dialogues import DialogueExample
from services.rewards.registry import REWARD_KINDS, reward_class
from services.run.preflight import (MODEL_PARAMS, NEEDS_LABEL, NEEDS_REFERENCE, PreflightError, check_cluster,
                                    check_policy_model, check_rewards, needs)


def test_a_smoke_run_on_a_two_cpu_head_is_refused_with_the_fix():
    wanted = needs(build_config(["preset=smoke"]), reward_actors=2)
    message = check_cluster(wanted, {"CPU": 2.0})
    assert message == (
        "this cluster has 2 CPUs, the run needs 2.5 (rollout (1 actor) 1, reward (2 actors) 0.5, learner 1): "
        "start Ray with --num-cpus=3 (logical CPUs only gate scheduling; the phases take turns), "
        "or lower rollout.num_cpus (e.g. rollout.num_cpus=0.5)"
    )
    assert check_cluster(wanted, {"CPU": 3.0}) is None


def test_missing_gpus_are_named():
    wanted = needs(build_config(["preset=smoke", "learner.num_gpus=1"]), reward_actors=2)
    assert "has 0 GPUs, the run needs 1 (learner 1)" in check_cluster(wanted, {"CPU": 8.0})


# --- each reward's needs against the data, before any cluster -------------------------------------------

UNLABELLED = [DialogueExample(("hi",), "hello", None), DialogueExample(("yo",), "hey", None)]


def test_the_needs_tables_match_what_each_reward_reads():
    for kind in REWARD_KINDS:
        source = inspect.getsource(reward_class(kind))
        assert ("require_labels" in source) == (kind in NEEDS_LABEL), kind
        assert ("require_references" in source) == (kind in NEEDS_REFERENCE), kind
        for key in MODEL_PARAMS.get(kind, ()):
            assert key in reward_class(kind).Params.model_fields, (kind, key)


def test_a_classifier_reward_without_labels_is_refused_with_both_fixes(tmp_path):
    config = build_config([f"data.source={tmp_path / 'mine.jsonl'}", "data.label_column=null"])
    with pytest.raises(PreflightError) as err:
        check_rewards(config, UNLABELLED)
    assert str(err.value) == (
        f"reward 'topic' (classifier) scores each response against the row's class label, and {tmp_path / 'mine.jsonl'}'s "
        "data.label_column=null gives none: set rewards.topic=null to train without it, or set data.label_column=COLUMN "
        "(the column of class labels)"
    )
    check_rewards(build_config(["rewards.topic=null"]), UNLABELLED)  # the first fix works


def test_a_reference_reward_without_references_is_refused():
    config = build_config(["data.reference_column=null", "rewards.topic=null"])
    with pytest.raises(PreflightError, match=r"reward 'meteor' \(meteor\) compares each response with the row's reference.*"
                       r"data.reference_column=null gives none: set rewards.meteor=null"):
        check_rewards(config, [DialogueExample(("hi",), None, "t")])


def test_labels_the_built_classifier_does_not_know_are_refused(tmp_path):
    built = tmp_path / "clf"
    built.mkdir()
    (built / "labels.json").write_text(json.dumps(["food", "greetings"]))
    config = build_config([f"rewards.topic.params.model_dir={built}"])
    with pytest.raises(PreflightError, match=r"labels the classifier in .*clf does not know \(sports; it knows food, greetings\)"):
        check_rewards(config, [DialogueExample(("hi",), "x", "food"), DialogueExample(("hi",), "x", "sports")])
    check_rewards(config, [DialogueExample(("hi",), "x", "food")])


def test_a_reward_model_directory_that_is_not_there_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    config = build_config([f"rewards.topic.params.model_dir={missing}"])
    with pytest.raises(PreflightError, match=rf"rewards.topic.params.model_dir={missing} is not a directory on this machine"):
        check_rewards(config, [DialogueExample(("hi",), "x", "t")])
    rm = build_config(["rewards.topic=null", "rewards.rm.kind=hf_model", f"rewards.rm.params.path={missing}"])
    with pytest.raises(PreflightError, match=r"reward 'rm' \(hf_model\): rewards.rm.params.path="):
        check_rewards(rm, UNLABELLED)
    check_rewards(build_config(["rewards.topic=null", "rewards.rm.kind=hf_model", "rewards.rm.params.path=org/model"]), UNLABELLED)


def test_a_policy_model_path_that_is_not_there_is_named(tmp_path):
    missing = tmp_path / "my-lm"
    with pytest.raises(PreflightError, match=rf"model.name_or_path={missing} is not a directory on this machine"):
        check_policy_model(build_config([f"model.name_or_path={missing}"]))
    missing.mkdir()
    check_policy_model(build_config([f"model.name_or_path={missing}"]))
    check_policy_model(build_config(["model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct"]))  # a hub id: not checked here
