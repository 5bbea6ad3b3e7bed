"""The Bayesian decoder's float type: bfloat16 weights only inside the pass (the float32 originals come back
untouched, also after an error), `auto` decided by the measured speedup, and a bfloat16 sampler whose draws'
log-probabilities stay close to float32 teacher-forced losses."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from brainllm.config import GenerationConfig
from brainllm.decoding.candidates import propose, sampling_dtype
from brainllm.decoding.sentences import teacher_forced_losses
from brainllm.errors import ConfigError
from brainllm.model import precision
from tests.decoding.test_generation import trained_run  # noqa: F401  (the fixture: a tiny trained run)


def test_cast_parameters_swaps_and_restores_the_very_same_tensors():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    layer.register_buffer("frequencies", torch.rand(4))
    originals = {name: p.data_ptr() for name, p in layer.named_parameters()}
    values = {name: p.data.clone() for name, p in layer.named_parameters()}
    x = torch.rand(3, 8)
    with precision.cast_parameters(layer, torch.bfloat16):
        assert all(p.dtype == torch.bfloat16 for p in layer.parameters())
        assert layer.frequencies.dtype == torch.float32  # buffers stay
        out = layer(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    for name, p in layer.named_parameters():
        assert p.data_ptr() == originals[name] and torch.equal(p.data, values[name])  # not a round trip through bf16
    with pytest.raises(RuntimeError):
        with precision.cast_parameters(layer, torch.bfloat16):
            raise RuntimeError("killed mid-pass")
    assert all(p.dtype == torch.float32 for p in layer.parameters())


def test_auto_takes_bfloat16_only_where_measured_faster(monkeypatch):
    assert precision.inference_dtype("float32", "cpu") == torch.float32
    assert precision.inference_dtype("bfloat16", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "bf16_speedup", lambda device_type="cpu": 3.0)
    assert precision.inference_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "bf16_speedup", lambda device_type="cpu": 0.4)
    assert precision.inference_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError):
        precision.inference_dtype("half", "cpu")
    with pytest.raises(ConfigError):
        GenerationConfig(precision="half")


def test_the_speedup_is_measured():
    speedup = precision.bf16_speedup("cpu")
    assert np.isfinite(speedup) and speedup > 0


def test_a_bfloat16_sampler_keeps_the_log_probabilities_close(trained_run):  # noqa: F811
    samples = trained_run.encoder.encode_all(trained_run.dataset, trained_run.split.valid[:8])
    cfg = replace(trained_run.config.generation, rerank="encoding", n_candidates=5, candidate_top_p=0.95,
                  max_new_tokens=6, min_new_tokens=1, precision="bfloat16")
    assert sampling_dtype(trained_run, cfg) == torch.bfloat16
    assert sampling_dtype(trained_run, replace(cfg, sampler="hf")) == torch.float32
    cands = propose(trained_run, samples, "brain", cfg)
    assert all(p.dtype == torch.float32 for p in trained_run.model.parameters())  # restored after the pass
    flat = [(i, ids) for i, cand in enumerate(cands.ids) for ids in cand]
    pairs = [replace(samples[i], continuation_ids=tuple(ids)) for i, ids in flat]
    per_token = teacher_forced_losses(trained_run, pairs, "brain", 16)  # float32
    n_tokens = np.array([len(ids) + 1 for _, ids in flat])
    got = -np.concatenate(cands.lm) / n_tokens
    assert np.abs(got - per_token).mean() < 0.05 and not np.allclose(got, per_token, atol=1e-6)
