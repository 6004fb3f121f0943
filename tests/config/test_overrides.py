"""Command-line overrides: dotted keys, presets, objective selection, and clear errors."""

import pytest

from services.config.overrides import ConfigError, build_config


def test_dotted_overrides_parse_as_yaml_scalars():
    cfg = build_config(["rewards.meteor.threshold=0.25", "trainer.iterations=7", "model.use_chat_template=false"])
    assert cfg.rewards["meteor"].threshold == 0.25
    assert cfg.trainer.iterations == 7
    assert cfg.model.use_chat_template is False


def test_preset_applies_before_user_overrides():
    cfg = build_config(["preset=smoke", "trainer.iterations=3"])
    assert cfg.model.name_or_path == "tiny-llama"
    assert cfg.rollout.batch_size == 8
    assert cfg.trainer.iterations == 3


def test_objective_selection_and_its_options():
    cfg = build_config(["objective=ppo", "objective.target_kl=0.1"])
    assert cfg.objective.name == "ppo"
    assert cfg.objective.target_kl == 0.1


def test_unknown_key_names_the_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'trainer.iteratons'; did you mean 'iterations'"):
        build_config(["trainer.iteratons=5"])
    with pytest.raises(ConfigError, match=r"unknown key 'rolout'; did you mean 'rollout'"):
        build_config(["rolout.batch_size=5"])
    with pytest.raises(ConfigError, match=r"rewards.meteor.treshold'; did you mean 'threshold'"):
        build_config(["rewards.meteor.treshold=0.2"])


def test_unknown_objective_and_preset_are_named():
    with pytest.raises(ConfigError, match=r"unknown objective 'ppoo'; did you mean 'ppo'"):
        build_config(["objective=ppoo"])
    with pytest.raises(ConfigError, match=r"unknown preset 'smok'; did you mean 'smoke'"):
        build_config(["preset=smok"])


def test_invalid_values_are_rejected_with_the_key():
    with pytest.raises(ConfigError, match=r"rollout.batch_size: Input should be greater than 0"):
        build_config(["rollout.batch_size=0"])
    with pytest.raises(ConfigError, match=r"trainer.gamma"):
        build_config(["trainer.gamma=abc"])
    with pytest.raises(ConfigError, match=r"min_new_tokens \(30\) exceeds max_new_tokens \(20\)"):
        build_config(["rollout.sampling.min_new_tokens=30"])
    with pytest.raises(ConfigError, match=r"rewards.meteor.threshold.*finite"):
        build_config(["rewards.meteor.threshold=.nan"])
    with pytest.raises(ConfigError, match=r"expected key=value"):
        build_config(["trainer.iterations"])


def test_rewards_can_be_added_and_removed():
    cfg = build_config(["rewards.len.kind=length", "rewards.topic=null"])
    assert list(cfg.rewards) == ["meteor", "len"]
    assert cfg.rewards["len"].weight == 1.0


def test_unknown_reward_kind_is_named():
    with pytest.raises(ConfigError, match=r"rewards.x: .*unknown reward kind 'metor'; did you mean 'meteor'"):
        build_config(["rewards.x.kind=metor"])


def test_value_path_cannot_be_used_as_section():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        build_config(["trainer.iterations.x=1"])


def test_default_preset_applies_to_fresh_runs_but_not_to_a_resumed_config():
    fresh = build_config([])
    assert fresh.preset == "default" and fresh.trainer.iterations == 14
    paper = build_config(["preset=paper"])
    assert paper.trainer.iterations == 50 and paper.trainer.learning_rate == 1e-6
    saved = build_config(["trainer.iterations=4"]).model_dump(mode="json")
    resumed = build_config(["trainer.epochs=3"], base=saved)
    assert resumed.trainer.iterations == 4 and resumed.trainer.epochs == 3


def test_constrained_objectives_use_their_own_direction_unless_told_otherwise():
    from services.objectives.registry import build_objective

    cfg = build_config(["objective=xi_ppo", "rewards.meteor.threshold=0.23"])
    assert build_objective(cfg.objective, cfg.rewards).directions == ["eq", "eq"]
    cfg = build_config(["objective=mu_ppo", "rewards.topic.direction=le"])
    assert build_objective(cfg.objective, cfg.rewards).directions == ["ge", "le"]
    with pytest.raises(ConfigError, match=r"xi_ppo supports constraint direction eq only.*'meteor'"):
        build_config(["objective=xi_ppo", "rewards.meteor.direction=ge"])


def test_objective_that_needs_thresholds_names_the_reward_without_one():
    with pytest.raises(ConfigError, match=r"needs a threshold.*missing for: topic"):
        build_config(["objective=mu_ppo", "rewards.topic.threshold=null"])


def test_precision_values_survive_the_command_line_parser():
    """YAML would read `no` as false; the spellings are chosen so every value parses as itself."""
    for value in ("auto", "fp32", "bf16"):
        assert build_config([f"trainer.mixed_precision={value}"]).trainer.mixed_precision == value
    assert build_config(["preset=smoke"]).trainer.mixed_precision == "fp32"
    assert build_config(["rollout.enforce_eager=false"]).rollout.enforce_eager is False
