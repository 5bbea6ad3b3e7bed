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


def test_the_ridge_recipe_is_a_preset_under_the_users_keys():
    cfg = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "ridge", "aux_loss": "margin"},
                            "model": {"adapter": {"hidden": 64}}})
    t = cfg.training
    assert (t.init, t.aux_loss, t.warmup_target) == ("ridge", "margin", "text")
    assert cfg.model.adapter == {"name": "mlp", "skip": True, "centre": True, "hidden": 64}
    # another adapter replaces the preset's adapter options (mlp's `skip` would not apply to it)
    linear = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "ridge"},
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
    brain = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "ridge", "aux_loss": "margin"}}
                             ).training.__dict__
    assert config.recipe_description(paper).startswith("paper (Ye et al. 2025)")
    assert "beyond the paper" in config.recipe_description(brain) and "margin" in config.recipe_description(brain)


# --- issue 25: every allowed value checked at load time, before any data or backbone is loaded ---------------------

@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if a dataset or a backbone is opened: config errors must come first."""
    from brainllm import backbones
    from brainllm.data.dataset import BrainTextDataset

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset or backbone was loaded before the config was checked")

    monkeypatch.setattr(backbones, "load", refuse)
    monkeypatch.setattr(BrainTextDataset, "load", classmethod(refuse))


@pytest.mark.parametrize("override", [
    "model.condition=no_txt", "model.adapter.hiden=5", "model.adapter.activation=relu7",
    "model.adapter.name=transformer", "model.finetune=lroa", "generation.decoder=fast", "generation.method=beams",
    "training.warmup_target=sentence", "training.aux_loss=triplet", "training.on_nan=ignore",
    "data.split=by_passage", "generation.num_beams=0",
])
def test_each_typo_is_a_config_error_naming_the_key_and_value(override, nothing_loads, tmp_path):
    from typer.testing import CliRunner

    from brainllm.cli import app

    key, value = override.split("=")

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        config.load(None, ["data.path=x", override])
    assert value in str(err.value)
    # the command line goes through the same loader and stops before the dataset or backbone is opened
    res = CliRunner().invoke(app, ["train", "--set", "data.path=x", "--set", f"output={tmp_path}", "--set", override])
    assert isinstance(res.exception, ConfigError) and key in str(res.exception)


def test_errors_name_the_allowed_values():
    with pytest.raises(ConfigError, match=r"model\.condition must be one of \['brain', 'no_text'\], got 'no_txt'"):
        config.from_dict({"model": {"condition": "no_txt"}})
    with pytest.raises(ConfigError, match=r"generation\.decoder must be one of \['prefix', 'hf'\]"):
        config.from_dict({"generation": {"decoder": "fast"}})
    with pytest.raises(ConfigError, match=r"it takes \[.*'hidden'"):
        config.from_dict({"model": {"adapter": {"name": "mlp", "hiden": 5}}})


def test_adapter_options_are_parsed_into_their_dataclass_at_load():
    from brainllm.adapter_options import MLPConfig, RNNConfig

    cfg = config.from_dict({"model": {"adapter": {"name": "rnn", "cell": "gru", "hidden": 8}}})
    name, options = cfg.model.adapter_options
    assert (name, options) == ("rnn", RNNConfig(cell="gru", hidden=8))
    assert cfg.model.adapter == {"name": "rnn", "cell": "gru", "hidden": 8}  # the run file keeps what was given
    assert config.from_dict({}).model.adapter_options == ("mlp", MLPConfig())


def test_the_adapter_modules_and_option_schemas_agree():
    from brainllm.adapter_options import ACTIVATION_NAMES, ADAPTER_OPTIONS
    from brainllm.model.adapters import ACTIVATIONS, ADAPTERS

    assert {name: cls for name, (cls, _) in ADAPTERS.items()} == ADAPTER_OPTIONS
    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def test_the_allowed_values_agree_with_the_code_that_acts_on_them():
    from brainllm.backbones import DTYPES
    from brainllm.data.splits import SPLITTERS
    from brainllm.evaluation.rundata import CONDITIONS

    assert set(config.DTYPES) == set(DTYPES)
    assert set(config.SPLIT_METHODS) == set(SPLITTERS) | {"kfold_by_stimulus", "recorded"}
    assert CONDITIONS == config.PREDICTION_CONDITIONS
    assert set(config.GENERATION_CONDITIONS) < set(config.PREDICTION_CONDITIONS)


def test_generate_settings_go_through_the_loader(tmp_path, nothing_loads):
    from typer.testing import CliRunner

    from brainllm.cli import app
    from brainllm.io import write_json

    base = config.from_dict({"data": {"path": "x"}}).generation
    assert config.generation_config(base, ["max_new_tokens=16"], permutations=2) == \
        config.replace_section(config.from_dict({"data": {"path": "x"}}), "generation", max_new_tokens=16,
                               permutations=2).generation
    with pytest.raises(ConfigError, match=r"generation\.max_new_tokns=16"):
        config.generation_config(base, ["max_new_tokns=16"])
    # a run folder with only its run file: the typo is reported before split.json, the dataset or the backbone
    write_json(tmp_path / "brainllm.json", {"config": config.from_dict({"data": {"path": "x"}}).to_dict()})
    for argv, key in ((["--set", "max_new_tokns=16"], "max_new_tokns"), (["--set", "decoder=fast"], "decoder"),
                      (["--condition", "permutd"], "--condition")):
        res = CliRunner().invoke(app, ["generate", str(tmp_path), *argv])
        assert isinstance(res.exception, ConfigError) and key in str(res.exception), res.output
    for argv, key in ((["--criterion", "meteor"], "--criterion"), (["--tolerance", "1.5"], "--tolerance"),
                      (["--set", "posterior_weight=-1"], "posterior_weight"),
                      (["--context-sentences", "-1"], "--context-sentences")):
        res = CliRunner().invoke(app, ["tune-decoder", str(tmp_path), *argv])
        assert isinstance(res.exception, ConfigError) and key in str(res.exception), res.output


def test_tune_decoder_cli_defaults_are_the_librarys():
    """`brainllm tune-decoder` and `brainllm train` (which tunes with the module's defaults) choose alike."""
    import typer

    from brainllm.cli import app
    from brainllm.experiments import decoder_tuning as T

    params = {p.name: p.default for p in typer.main.get_command(app).commands["tune-decoder"].params}
    # None: the task's default (`tune`: DEFAULT_CRITERION, or the sentence task's SENTENCE_CRITERION)
    assert params["criterion"] is None and params["tolerance"] == T.DEFAULT_TOLERANCE
    # None: the task's default (`tune`: DEFAULT_CONTEXT_SENTENCES, or the sentence task's 0 alone)
    assert params["context_sentences"] is None
    assert params["refit_with_valid"] == T.DEFAULT_REFIT_WITH_VALID


def test_the_brain_recipe_is_the_papers_training_with_the_bayesian_decoder():
    cfg = config.from_dict({"data": {"path": "x"}, "training": {"recipe": "brain"}})
    paper = config.from_dict({"data": {"path": "x"}})
    assert cfg.generation.rerank == "encoding" and paper.generation.rerank == "none"
    assert cfg.model == paper.model and {k: v for k, v in cfg.training.__dict__.items() if k != "recipe"} == \
        {k: v for k, v in paper.training.__dict__.items() if k != "recipe"}
    assert "Bayesian decoder" in config.recipe_description(cfg.training.__dict__)
    # the user's keys still win over the preset's
    assert config.from_dict({"data": {"path": "x"}, "training": {"recipe": "brain"},
                             "generation": {"rerank": "none"}}).generation.rerank == "none"
