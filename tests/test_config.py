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
