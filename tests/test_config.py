import pytest

from brainllm import config
from brainllm.errors import ConfigError


def test_defaults_are_the_papers_settings():
    cfg = config.from_dict({"data": {"path": "x"}})
    t, g = cfg.training, cfg.generation
    assert (t.warmup_epochs, t.warmup_lr, t.lr, t.batch_size, t.grad_clip, t.epochs, t.patience) == \
        (10, 1e-3, 1e-4, 8, 10.0, 100, 10)
    assert (g.method, g.num_beams, g.repetition_penalty, g.min_new_tokens, g.max_new_tokens) == ("beam", 5, 2.0, 4, 32)
    assert cfg.model.adapter == {"name": "mlp"} and cfg.data.split == "by_stimulus"
    # nothing beyond the paper is on by default
    assert (t.recipe, t.init, t.aux_loss, t.warmup_target) == ("paper", "warmup", None, "prompt")


def test_the_brain_recipe_is_a_preset_under_the_users_keys():
    cfg = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "brain", "aux_loss": "margin"},
                            "model": {"adapter": {"hidden": 64}}})
    t = cfg.training
    assert (t.init, t.aux_loss, t.warmup_target) == ("ridge", "margin", "text")
    assert cfg.model.adapter == {"name": "mlp", "skip": True, "centre": True, "hidden": 64}
    # another adapter replaces the preset's adapter options (mlp's `skip` would not apply to it)
    linear = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "brain"},
                               "model": {"adapter": {"name": "linear"}}})
    assert linear.model.adapter == {"name": "linear"}
    # the resolved config reloads to itself (a run file stores it)
    assert config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="recipe must be one of"):
        config.from_dict({"training": {"recipe": "fast"}})
    with pytest.raises(ConfigError, match="init must be"):
        config.from_dict({"training": {"init": "zeros"}})


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {path: d}\ntraining: {lr: 0.01}\nmodel: {adapter: {name: mlp}}\n")
    cfg = config.load(path, ["training.lr=3e-4", "model.adapter.hidden=64", "output=runs/x", "data.max_train_samples=5"])
    assert cfg.training.lr == 3e-4 and cfg.model.adapter == {"name": "mlp", "hidden": 64}
    assert cfg.output == "runs/x" and cfg.data.max_train_samples == 5


def test_typos_and_missing_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="Unknown key"):
        config.from_dict({"training": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="Unknown section"):
        config.from_dict({"trainer": {}})
    with pytest.raises(ConfigError, match="key=value"):
        config.load(None, ["training.lr"])
    with pytest.raises(ConfigError, match="data.path"):
        config.load(None, [])
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_shipped_configs_load(tmp_path):
    from pathlib import Path

    configs = sorted(Path(__file__).parents[1].glob("configs/*.yaml"))
    assert configs
    for path in configs:
        config.load(path, ["data.path=somewhere"])


def test_reports_name_the_recipe_and_say_when_it_goes_beyond_the_paper():
    paper = config.from_dict({"data": {"path": "x"}}).training.__dict__
    brain = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "brain", "aux_loss": "margin"}}
                             ).training.__dict__
    assert config.recipe_description(paper).startswith("paper (Ye et al. 2025)")
    assert "beyond the paper" in config.recipe_description(brain) and "margin" in config.recipe_description(brain)
