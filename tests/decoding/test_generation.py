import dataclasses
import json

import numpy as np
import pytest

from brainllm import config, training
from brainllm.config import GenerationConfig
from brainllm.decoding.generation import cross_losses, generate_predictions, teacher_forced_losses
from brainllm.io import read_jsonl
from brainllm.runs import load_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama_path):
    from brainllm.data.simulate import simulate

    root = tmp_path_factory.mktemp("gen")
    simulate(design="sentence", passages=24, voxels=144, components=16, seed=1, snr=1.0).dataset.save(root / "data")
    cfg = config.from_dict({"data": {"path": str(root / "data")},
                            "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 32}},
                            "training": {"warmup_epochs": 1, "epochs": 1, "lr": 3e-3, "cpu": True},
                            "generation": {"method": "greedy", "max_new_tokens": 5, "min_new_tokens": 1,
                                           "permutations": 2, "batch_size": 8},
                            "output": str(root / "run")})
    training.train(cfg)
    return load_run(root / "run")


@pytest.mark.parametrize("condition", ["brain", "permuted", "no_brain"])
def test_every_condition_writes_predictions_with_losses(trained_run, condition):
    path = generate_predictions(trained_run, "test", condition)
    rows = read_jsonl(path)
    header = json.loads(path.with_suffix(".json").read_text())
    test_ids = trained_run.split.test
    n_rep = 2 if condition == "permuted" else 1
    assert len(rows) == len(test_ids) * n_rep and header["n_samples"] == len(test_ids)
    assert header["decoding"]["method"] == "greedy" and header["condition"] == condition
    for r in rows:
        assert r["id"] in test_ids and np.isfinite(r["loss"]) and isinstance(r["prediction"], str)
        assert "<eos>" not in r["prediction"]
        assert r["reference"] == trained_run.dataset.by_id(r["id"]).continuation
    if condition == "permuted":
        assert {r["permutation"] for r in rows} == {0, 1}
        for r in rows:
            donor = trained_run.dataset.by_id(r["frames_from"])
            assert donor.stimulus != r["stimulus"]


def test_prediction_losses_are_the_teacher_forced_losses(trained_run):
    rows = read_jsonl(generate_predictions(trained_run, "valid", "brain"))
    samples = trained_run.encoder.encode_all(trained_run.dataset, [r["id"] for r in rows])
    expected = teacher_forced_losses(trained_run, samples, "brain", batch_size=3)
    np.testing.assert_allclose([r["loss"] for r in rows], expected, rtol=1e-4)


def test_crossloss_diagonal_is_the_true_pairing(trained_run):
    data = np.load(cross_losses(trained_run, "test", max_samples=6))
    ids, loss = list(data["ids"]), data["loss"]
    assert loss.shape == (6, 6)
    samples = trained_run.encoder.encode_all(trained_run.dataset, ids)
    np.testing.assert_allclose(np.diag(loss), teacher_forced_losses(trained_run, samples, "brain", 8), rtol=1e-4)
    assert not np.allclose(loss, np.diag(loss)[:, None])  # other frames give other losses


def test_beam_and_sampling_run(trained_run):
    beam = GenerationConfig(method="beam", num_beams=3, max_new_tokens=4, min_new_tokens=1, batch_size=4)
    sample = GenerationConfig(method="sample", max_new_tokens=4, min_new_tokens=1, batch_size=4, seed=3)
    rows_beam = read_jsonl(generate_predictions(trained_run, "valid", "brain", beam))
    a = [r["prediction"] for r in read_jsonl(generate_predictions(trained_run, "valid", "brain", sample))]
    b = [r["prediction"] for r in read_jsonl(generate_predictions(trained_run, "valid", "brain", sample))]
    assert rows_beam and a == b  # seeded sampling is reproducible


def test_permuted_in_one_pass_equals_one_derangement_at_a_time(trained_run):
    """All derangements decoded and scored together (length-sorted batches across them) give what each gives
    decoded and scored on its own."""
    from brainllm.decoding.generation import decode
    from brainllm.model.collate import permute_frames

    cfg = GenerationConfig(method="beam", num_beams=3, max_new_tokens=6, min_new_tokens=2, permutations=3,
                           batch_size=5)
    rows = read_jsonl(generate_predictions(trained_run, "test", "permuted", cfg))
    base = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.test)
    for p in range(cfg.permutations):
        samples = permute_frames(base, cfg.seed + p)
        mine = [r for r in rows if r["permutation"] == p]
        assert [r["id"] for r in mine] == [s.id for s in samples]
        assert [r["frames_from"] for r in mine] == [s.frames_from for s in samples]
        np.testing.assert_allclose([r["loss"] for r in mine], teacher_forced_losses(trained_run, samples, "brain", 4),
                                   rtol=1e-5)
        assert [r["prediction"] for r in mine] == decode(trained_run, samples, "brain", cfg)


@pytest.mark.parametrize("method", ["beam", "greedy"])
def test_decode_gives_hf_generates_texts_in_the_samples_order(trained_run, method):
    """The default decoder (prefix cache, length-sorted batches) against HF generate in the samples' own order."""
    from brainllm.decoding.generation import decode

    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.test)
    cfg = GenerationConfig(method=method, num_beams=4, max_new_tokens=8, min_new_tokens=2, batch_size=8)
    hf = decode(trained_run, samples, "brain", dataclasses.replace(cfg, decoder="hf", batch_size=len(samples)))
    assert decode(trained_run, samples, "brain", cfg) == hf
    assert len(set(hf)) > 1


def test_unknown_decoder_is_a_config_error(trained_run):
    from brainllm.decoding.generation import decode
    from brainllm.errors import ConfigError

    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.test[:2])
    with pytest.raises(ConfigError, match="decoder"):
        decode(trained_run, samples, "brain", GenerationConfig(decoder="fast"))
