import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainllm import config, training
from brainllm.model import Collator
from brainllm.training import Trainer, TrainingError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from brainllm.data.simulate import simulate

    path = tmp_path_factory.mktemp("data") / "sim"
    simulate(design="sentence", passages=24, voxels=144, components=16, seed=1, snr=1.0).dataset.save(path)
    return path


def make_cfg(data, backbone, out, **training_kw):
    over = {"warmup_epochs": 1, "epochs": 3, "lr": 3e-3, "batch_size": 8, "patience": 10, "cpu": True, **training_kw}
    return config.from_dict({"data": {"path": str(data)},
                             "model": {"backbone": str(backbone), "adapter": {"name": "mlp", "hidden": 32, "dropout": 0.1}},
                             "training": over, "output": str(out)})


def test_loss_falls_and_the_backbone_stays_frozen(tiny_data, tiny_llama_path, tmp_path):
    cfg = make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=4)
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    valid_before = trainer.evaluate(trainer.valid_samples)
    state = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    main = [r for r in rows if r["stage"] == "main"]
    assert len(main) == 4 and main[-1]["train_loss"] < main[0]["train_loss"]
    # measured: 4.60 -> 4.54 on the MiniLM-only simulator, 4.557 -> 4.533 on issue 24's recalibrated one (whose
    # frames carry MiniLM as one part of a mixture), hence 0.015
    assert state.best_valid < valid_before - 0.015
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "frozen backbone weights changed"
    saved = load_file(str(tmp_path / "run" / "adapter.safetensors"))
    assert saved and all(k.startswith(("adapter.", "boundary")) for k in saved)
    assert sum(v.numel() for v in saved.values()) < 20_000  # adapter-sized, not a 135M backbone
    info = json.loads((tmp_path / "run" / "brainllm.json").read_text())
    assert info["feature_dim"] == 16 and info["adapter"]["name"] == "mlp"


def test_training_never_sees_test_samples(tiny_data, tiny_llama_path, tmp_path, monkeypatch):
    seen: set[str] = set()
    original = Collator.__call__

    def spy(self, samples):
        seen.update(s.id for s in samples)
        return original(self, samples)

    monkeypatch.setattr(Collator, "__call__", spy)
    trainer = Trainer(make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=1))
    trainer.fit()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert seen and not seen & set(split["test"])
    assert seen <= set(split["train"]) | set(split["valid"])


def _kill_after(n_checkpoints, monkeypatch):
    calls = {"n": 0}
    original = Trainer._save_checkpoint

    def save_then_die(self, optimizer):
        original(self, optimizer)
        calls["n"] += 1
        if calls["n"] == n_checkpoints:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)


def test_resume_after_a_kill_gives_the_same_weights(tiny_data, tiny_llama_path, tmp_path, monkeypatch):
    full = make_cfg(tiny_data, tiny_llama_path, tmp_path / "full", warmup_epochs=2, epochs=3)
    training.train(full)
    for kill_at in (1, 4):  # during warm-up, and in the main stage
        out = tmp_path / f"killed{kill_at}"
        cfg = make_cfg(tiny_data, tiny_llama_path, out, warmup_epochs=2, epochs=3)
        with monkeypatch.context() as m:
            _kill_after(kill_at, m)
            with pytest.raises(KeyboardInterrupt):
                training.train(cfg)
        (out / ".checkpoint.leftover.tmp").mkdir()  # a staging folder from a kill during a write is ignored
        with pytest.raises(TrainingError, match="--resume"):
            training.train(cfg)
        training.train(cfg, resume=True)
        a, b = load_file(str(tmp_path / "full" / "adapter.safetensors")), load_file(str(out / "adapter.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        rows = (out / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == len((tmp_path / "full" / "metrics.jsonl").read_text().splitlines())


def test_a_finished_run_resumed_with_more_epochs_matches_the_longer_run(tiny_data, tiny_llama_path, tmp_path):
    training.train(make_cfg(tiny_data, tiny_llama_path, tmp_path / "three", epochs=3))
    short = make_cfg(tiny_data, tiny_llama_path, tmp_path / "extended", epochs=2)
    training.train(short)
    training.train(short, resume=True)  # nothing left to do: stays at 2 epochs
    assert len((tmp_path / "extended" / "metrics.jsonl").read_text().splitlines()) == 1 + 2
    state = training.train(make_cfg(tiny_data, tiny_llama_path, tmp_path / "extended", epochs=3), resume=True)
    assert state.stage == "done" and state.epoch == 3
    for name in ("checkpoint/trainable.safetensors", "adapter.safetensors"):
        a, b = (load_file(str(tmp_path / run / name)) for run in ("three", "extended"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [json.loads(r)["epoch"] for r in (tmp_path / "extended" / "metrics.jsonl").read_text().splitlines()] == \
        [json.loads(r)["epoch"] for r in (tmp_path / "three" / "metrics.jsonl").read_text().splitlines()]
    saved = json.loads((tmp_path / "extended" / "brainllm.json").read_text())
    assert saved["config"]["training"]["epochs"] == 3


def test_non_finite_loss_stops_with_the_batch_named_or_is_skipped(tiny_data, tiny_llama_path, tmp_path, monkeypatch):
    original = Collator.__call__

    def poison(self, samples):
        batch = original(self, samples)
        batch.frames[:] = float("nan")
        return batch

    monkeypatch.setattr(Collator, "__call__", poison)
    with pytest.raises(TrainingError, match=r"warmup epoch 1, batch 0 \(samples"):
        training.train(make_cfg(tiny_data, tiny_llama_path, tmp_path / "stop"))
    state = training.train(make_cfg(tiny_data, tiny_llama_path, tmp_path / "skip", on_nan="skip", epochs=1))
    assert state.skipped_batches > 0


@pytest.mark.slow
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one(tiny_data, tiny_llama_path, tmp_path):
    """Data-parallel training over 2 CPU processes (gloo), launched with `accelerate launch` as the README says,
    reproduces the single-process run with the same global batch (8 samples: 4 per process): weights and losses.
    Dropout is off: its masks depend on how the batch is cut."""
    args = [f"--set=data.path={tiny_data}", f"--set=model.backbone={tiny_llama_path}", "--set=model.adapter.dropout=0.0",
            "--set=model.adapter.hidden=32", "--set=training.warmup_epochs=1", "--set=training.epochs=2",
            "--set=training.lr=3e-3", "--set=training.cpu=true", "--set=training.batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    single = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "brainllm", "train", *args, f"--set=output={single}"],
                   check=True, env=env, capture_output=True)
    double = tmp_path / "two"
    # `accelerate launch --cpu` starts ONE process (its simple launcher); `--multi_gpu` starts torch.distributed's,
    # and `training.cpu` makes Accelerate pick gloo on the CPU
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
                           "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
                           f"--main_process_port={free_port()}", "-m", "brainllm", "train", *args,
                           f"--set=output={double}"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Data parallel over 2 processes (DistributedType.MULTI_CPU)" in proc.stderr
    a, b = load_file(str(single / "adapter.safetensors")), load_file(str(double / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for k in a:  # atol 3e-5: with issue 24's simulated frames one weight in 1024 differs by 1.9e-5 (summation order)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)
    rows_a = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (double / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]  # the same number of (global) steps
    np.testing.assert_allclose([r["train_loss"] for r in rows_a], [r["train_loss"] for r in rows_b], rtol=1e-4)


@pytest.mark.parametrize("main_process", [True, False])
def test_cli_train_reports_once_not_once_per_rank(tiny_data, tiny_llama_path, tmp_path, monkeypatch, main_process):
    """Under torchrun every rank runs the command; only the main process may print the summary line."""
    import accelerate
    from typer.testing import CliRunner

    from brainllm.cli import app

    class Rank:
        is_main_process = main_process

    monkeypatch.setattr(accelerate, "PartialState", Rank)
    monkeypatch.setattr(training, "train", lambda cfg, resume=False: training.TrainState(best_valid=1.5, best_epoch=2))
    res = CliRunner().invoke(app, ["train", "--set", f"data.path={tiny_data}", "--set", f"output={tmp_path / 'r'}"])
    assert res.exit_code == 0, res.output
    assert ("best validation loss 1.5000 (main epoch 2)" in res.output) == main_process


def test_an_injecting_run_trains_its_adapter_from_the_training_texts_centre(tiny_data, tiny_llama_path, tmp_path,
                                                                            monkeypatch):
    """`model.inject_layer` (beyond the paper): the centre is the mean layer-L state of the training samples'
    warm-up texts (no validation or test text), the loss falls, and the run reloads as the same injecting model."""
    from brainllm.runs import load_run

    cfg = make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=4, warmup_target="continuation")
    cfg.model.inject_layer = 1
    trainer = Trainer(cfg)
    batch = trainer.collate(trainer.train_samples).to("cpu")
    centre = trainer.model.text_states(batch.warmup_ids, batch.warmup_mask).mean(0)
    torch.testing.assert_close(trainer.model.state_centre, centre, rtol=1e-4, atol=1e-5)
    valid_before = trainer.evaluate(trainer.valid_samples)
    state = trainer.fit()
    assert state.best_valid < valid_before - 0.03
    run = load_run(tmp_path / "run")
    assert run.model.inject_layer == 1
    torch.testing.assert_close(run.model.state_centre, centre, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the selected checkpoint, reloaded, scores what model selection saw
        reloaded = float(run.model(trainer.collate(trainer.valid_samples))["loss"])
    assert reloaded == pytest.approx(state.best_valid, rel=1e-4)
    cfg.training.epochs = 5  # resumed, the run takes its centre from the checkpoint instead of recomputing it
    monkeypatch.setattr(Trainer, "_mean_text_state", lambda *a: pytest.fail("centre recomputed on resume"))
    resumed = Trainer(cfg, resume=True)
    torch.testing.assert_close(resumed.model.state_centre, centre, rtol=1e-4, atol=1e-5)


def test_the_ridge_recipe_starts_from_ridge_and_its_margin_loss_falls(tiny_data, tiny_llama_path, tmp_path):
    """`training.recipe: ridge` (beyond the paper): no warm-up epochs, the adapter starts from the ridge map fitted
    on the training samples, and the auxiliary margin loss (reported per epoch) falls."""
    cfg = make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=5, recipe="ridge", aux_loss="margin",
                   aux_margin=1.0)
    trainer = Trainer(cfg)
    assert trainer.state.ridge_init["rows"] == sum(len(s.frame_rows) for s in trainer.train_samples)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"main"}
    aux = [r["train_aux"] for r in rows]
    assert aux[-1] < aux[0]


def test_the_paper_recipe_has_no_auxiliary_loss(tiny_data, tiny_llama_path, tmp_path):
    trainer = Trainer(make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=1))
    assert trainer.aux is None and trainer.state.ridge_init is None
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and not any("train_aux" in r for r in rows)


def test_the_ridge_recipe_finds_no_effect_in_pure_noise(tiny_llama_path, tmp_path):
    """SNR 0: the frames carry nothing, so the trained model's own frames must not beat permuted ones on the
    held-out samples (stimulus-level sign-flip test over 12 stimuli, so p < 0.01 is reachable)."""
    from brainllm.data.simulate import simulate
    from brainllm.evaluation.stats import sign_flip_test
    from brainllm.decoding.generation import teacher_forced_losses
    from brainllm.model.collate import permute_frames
    from brainllm.runs import load_run

    data = tmp_path / "noise"
    simulate(design="sentence", passages=40, voxels=144, components=16, seed=1, snr=0.0).dataset.save(data)
    Trainer(make_cfg(data, tiny_llama_path, tmp_path / "run", epochs=4, recipe="ridge")).fit()
    run = load_run(tmp_path / "run")
    samples = run.encoder.encode_all(run.dataset, [*run.split.valid, *run.split.test])
    assert len({s.stimulus for s in samples}) >= 8
    own = teacher_forced_losses(run, samples, "brain", 16)
    permuted = np.mean([teacher_forced_losses(run, permute_frames(samples, seed), "brain", 16) for seed in range(3)], 0)
    assert sign_flip_test(own - permuted, [s.stimulus for s in samples]) > 0.01


def test_token_readout_slots_are_fitted_on_training_samples_and_saved_with_the_run(tiny_data, tiny_llama_path,
                                                                                  tmp_path, monkeypatch):
    from brainllm.runs import load_run

    cfg = make_cfg(tiny_data, tiny_llama_path, tmp_path / "run", epochs=1)
    cfg.model.adapter = {"name": "mlp", "hidden": 32, "dropout": 0.1, "readout_tokens": 2, "readout_vocab": 128}
    trainer = Trainer(cfg)
    fitted = trainer.state.token_readout
    assert fitted["rows"] == sum(len(s.frame_rows) for s in trainer.train_samples) and fitted["candidates"] > 2
    train_tokens = {t for s in trainer.train_samples for t in s.prompt_ids + s.continuation_ids}
    picked = trainer.model.adapter.readout.token_ids
    assert set(picked[picked >= 0].tolist()) <= train_tokens  # candidates come from the training texts only
    fitted_buffers = {k: v.clone() for k, v in trainer.model.adapter.readout.named_buffers()}
    trainer.fit()
    run = load_run(tmp_path / "run")
    assert run.model.adapter.tokens_per_frame == 3
    for name, value in run.model.adapter.readout.named_buffers():  # saved, and never moved by the optimiser
        torch.testing.assert_close(value, fitted_buffers[name], rtol=0, atol=0)
    cfg.training.epochs = 2  # a resumed run continues from its checkpoint's readout, it does not refit it
    monkeypatch.setattr(training, "fit_token_readout", lambda *a, **k: pytest.fail("refitted on resume"))
    resumed = Trainer(cfg, resume=True)
    assert resumed.state.token_readout == fitted
    for name, value in resumed.model.adapter.readout.named_buffers():
        torch.testing.assert_close(value, fitted_buffers[name], rtol=0, atol=0)
