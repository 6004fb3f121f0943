from services.config.doc import render_config
from services.config.overrides import build_config


def test_rendered_tree_lists_every_section_with_help_and_changed_defaults():
    text = render_config(build_config(["preset=smoke"]))
    assert "rollout.sampling.top_k = 20  # 0 disables top-k." in text
    assert "trainer.iterations = 5" in text and "default: 50" in text
    assert "rewards.meteor.threshold = 0.23" in text
    assert "objective.name = 'ppo'" in text
